from datetime import datetime, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from memagent import InputError, MemoryConfig
from memagent._time import parse_timestamp


@pytest.mark.parametrize(
    "text",
    ["2023/05/20 (Sat) 02:21", "2023/05/20 02:21", "2023-05-20T02:21:00", "2023-05-20T02:21:00Z",
     "2023-05-20 04:21+02:00"],
)
def test_timestamp_spellings_agree(text: str) -> None:
    assert parse_timestamp(text) == datetime(2023, 5, 20, 2, 21, tzinfo=timezone.utc)


def test_epoch_and_naive_datetime_are_utc() -> None:
    assert parse_timestamp(0) == datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert parse_timestamp(datetime(2024, 1, 1)).tzinfo == timezone.utc


@pytest.mark.parametrize("bad", ["yesterday-ish", "2023/02/30 (Thu) 10:00", [2023]])
def test_bad_timestamp_names_the_field(bad: object) -> None:
    with pytest.raises(InputError, match=r"^timestamp: "):
        parse_timestamp(bad)


def test_env_sets_fields_and_arguments_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEMAGENT_GRANULARITY", "session")
    monkeypatch.setenv("MEMAGENT_STORE__PATH", str(tmp_path))
    monkeypatch.setenv("MEMAGENT_K", "7")
    assert MemoryConfig().granularity == "session"
    assert MemoryConfig().store.path == tmp_path
    assert MemoryConfig(k=3).k == 3  # argument over environment
    assert MemoryConfig().k == 7  # environment over default


def test_unknown_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="granularity"):
        MemoryConfig(granularity="paragraph")
    with pytest.raises(ValidationError, match="colour"):
        MemoryConfig(colour="blue")
