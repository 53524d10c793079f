import json
from pathlib import Path

import pytest

from memagent.cli import main


def test_cli_add_search_export_delete_user(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("MEMAGENT_EMBEDDER__CACHE_PATH", str(tmp_path / "cache.sqlite"))
    sessions = tmp_path / "sessions.jsonl"
    sessions.write_text(
        "\n".join(
            json.dumps(s)
            for s in [
                {"user_id": "ana", "session_id": "s1", "timestamp": "2023/05/20 (Sat) 02:21",
                 "messages": [{"role": "user", "content": "My greyhound is called Pixel"}]},
                {"user_id": "bob", "session_id": "s1", "messages": [{"role": "user", "content": "I collect stamps"}]},
            ]
        )
    )
    store = ["--path", str(tmp_path / "store")]
    assert main([*store, "add", str(sessions)]) == 0
    assert "stored 2 new records" in capsys.readouterr().out

    assert main([*store, "search", "greyhound", "--user", "ana", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["record"]["user_id"] for h in hits] == ["ana"]

    out = tmp_path / "ana.jsonl"
    assert main([*store, "export", "--user", "ana", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["value"] == "user: My greyhound is called Pixel"

    assert main([*store, "delete-user", "bob"]) == 0
    assert "deleted 1 records of 'bob'" in capsys.readouterr().out
    assert main([*store, "search", "stamps", "--user", "bob", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_cli_reports_bad_input_with_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("MEMAGENT_EMBEDDER__CACHE_PATH", str(tmp_path / "cache.sqlite"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"user_id": "ana", "messages": [{"role": "robot", "content": "hi"}]}]))
    assert main(["--path", str(tmp_path / "store"), "add", str(bad)]) == 2
    assert "messages[0].role: unknown role 'robot'" in capsys.readouterr().err
