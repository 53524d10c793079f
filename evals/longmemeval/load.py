"""Read LongMemEval's official files unchanged (S, M, oracle; cleaned or not) and check their schema."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from memagent import InputError
from memagent.schema import parse_timestamp


class Turn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str
    has_answer: bool = False


class Item(BaseModel):
    """One question with its own haystack of timestamped sessions."""

    model_config = ConfigDict(extra="allow")

    question_id: str
    question_type: str
    question: str
    answer: str
    question_date: str
    haystack_dates: list[str]
    haystack_session_ids: list[str]
    haystack_sessions: list[list[Turn]]
    answer_session_ids: list[str]

    @field_validator("answer", mode="before")
    @classmethod
    def _answer_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) else value  # a few answers are numbers

    @property
    def is_abstention(self) -> bool:
        return "_abs" in self.question_id


def split_name(path: Path) -> str:
    """The benchmark split a file holds, from its official name."""
    name = path.name.lower()
    for marker, split in (("oracle", "oracle"), ("_s", "S"), ("_m", "M")):
        if marker in name:
            return split + (" (cleaned)" if "cleaned" in name else "")
    return f"custom ({path.name})"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a data file, read in 1 MiB blocks: named in every summary beside the figures."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_items(path: str | Path) -> list[Item]:
    """Every item of an official file, checked; errors name the item and the field."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, list):
        raise InputError(str(path), f"expected a JSON list of questions, got {type(raw).__name__}")
    return [check_item(entry, n) for n, entry in enumerate(raw)]


def check_item(entry: Any, n: int) -> Item:
    where = f"item[{n}]" + (f" ({entry.get('question_id')})" if isinstance(entry, dict) else "")
    try:
        item = Item.model_validate(entry)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InputError(f"{where}.{field}", first["msg"]) from exc
    lengths = {len(item.haystack_dates), len(item.haystack_session_ids), len(item.haystack_sessions)}
    if len(lengths) != 1:
        raise InputError(
            where,
            f"haystack_dates ({len(item.haystack_dates)}), haystack_session_ids ({len(item.haystack_session_ids)}) "
            f"and haystack_sessions ({len(item.haystack_sessions)}) must have the same length",
        )
    parse_timestamp(item.question_date, field=f"{where}.question_date")
    for i, date in enumerate(item.haystack_dates):
        parse_timestamp(date, field=f"{where}.haystack_dates[{i}]")
    return item
