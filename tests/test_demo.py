"""The README's first command runs examples/demo.py: it must keep working as the API changes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def test_the_demo_stores_searches_and_keeps_users_apart(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(DEMO)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Every hit above belongs to maya" in done.stdout
    dog = done.stdout.split("Q: What is my dog's name?")[1].splitlines()[1]
    assert "Biscuit" in dog  # maya's labrador ranks first for her dog question
    hits = [line for line in done.stdout.splitlines() if line.startswith("   20")]  # "   2024-01-14  score ..."
    assert hits and not any("Pepper" in line for line in hits)  # sam's beagle never reaches maya's searches
