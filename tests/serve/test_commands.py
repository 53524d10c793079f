"""``memagent serve`` and ``memagent mcp`` refuse a configuration they cannot serve, naming what is wrong,
before any model or store is loaded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from memagent import _extras
from memagent.cli import main


def test_mcp_over_stdio_needs_a_user(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.delenv("MEMAGENT_MCP_USER", raising=False)
    assert main(["--path", str(tmp_path / "store"), "mcp"]) == 2
    assert "mcp over stdio acts for one user: name it with --user" in capsys.readouterr().err


def test_mcp_without_its_extra_says_which_to_install(monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    real = _extras.find_spec
    monkeypatch.setattr(_extras, "find_spec", lambda name: None if name == "mcp" else real(name))
    monkeypatch.delitem(sys.modules, "memagent.serve.mcp", raising=False)  # import it afresh, without the extra
    assert main(["mcp", "--user", "ana"]) == 2
    assert "pip install 'memagent[mcp]'" in capsys.readouterr().err


def test_store_exchanges_needs_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--store-exchanges"]) == 2
    assert "--store-exchanges needs --memory" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "mcp"])
def test_a_bad_keys_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text('{"sk-ana-1": "ana"}')
    args = [command, "--keys-file", str(keys), *(["--transport", "http"] if command == "mcp" else [])]
    assert main(["--path", str(tmp_path / "store"), *args]) == 2
    assert f"keys file '{keys}'[sk-a...]: must be \"*\" (every user) or a non-empty list" in capsys.readouterr().err
