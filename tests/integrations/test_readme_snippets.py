"""The README's LangChain and LangGraph snippets run as printed (copy-paste into a fresh folder)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("langgraph", reason="the langchain extra is not installed")

README = Path(__file__).resolve().parents[2] / "README.md"


def snippets() -> list[str]:
    section = README.read_text().split("\n## LangChain and LangGraph\n")[1].split("\n## ")[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_has_a_snippet_per_integration() -> None:
    found = snippets()
    assert len(found) == 2
    assert "memagent.integrations.langchain" in found[0] and "memagent.integrations.langgraph" in found[1]


def test_each_snippet_runs_in_a_fresh_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # the snippets write ./memagent_data
    langchain, langgraph = snippets()
    exec(compile(langchain, "README: LangChain", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert "{'dense': 1" in printed[0] and printed[0].endswith("user: I adopted a greyhound called Pixel")
    (found,) = json.loads(printed[-1])  # the tool's answer to the model: ana's one memory
    assert "Pixel" in found["text"] and found["id"]
    exec(compile(langgraph, "README: LangGraph", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "{'text': 'Ana is vegetarian', 'since': 2019}"
    assert printed[1].startswith("['diet'") and printed[2] == "diet" and printed[3] == "[('ana', 'memories')]"
