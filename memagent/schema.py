"""The data memagent takes and gives back: messages in, records and hits out."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from memagent._time import parse_timestamp as parse_timestamp  # public here: the spellings accepted
from memagent.errors import InputError

_BARE_DATE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}\s*$")
Role = Literal["user", "assistant", "system"]
MetadataValue = str | int | float | bool


class Message(BaseModel):
    """One chat message. ``system`` messages are accepted and not remembered."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str


class MemoryRecord(BaseModel):
    """One stored memory: a round (user turn + reply) or a whole session.

    ``value`` is what the reader sees; ``key`` is what retrieval matches against
    (LongMemEval §5: key = value, optionally expanded with facts).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    user_id: str
    session_id: str
    agent_id: str | None = Field(default=None, description="the agent the memory was told to, when scoped by agent")
    run_id: str | None = Field(default=None, description="the run (one conversation or task), when scoped by run")
    round_index: int = Field(ge=0, description="position of the round in its session; 0 for a session record")
    value: str
    key: str
    timestamp: datetime = Field(description="when the conversation happened (UTC)")
    recorded_at: datetime = Field(description="when memagent stored this version (UTC)")
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)


class Hit(BaseModel):
    """A record found by search, with its fused score and the ranks that produced it."""

    model_config = ConfigDict(frozen=True)

    record: MemoryRecord
    score: float
    why: dict[str, int] = Field(
        description="1-based rank in each ranking that found the record: dense, lexical, session, and "
        "NAME@session (its session's rank by best round in ranking NAME); time=1 when the time range moved it"
    )


class Answer(BaseModel):
    """What ``Memory.answer`` says, and how sure it is."""

    model_config = ConfigDict(frozen=True)

    text: str
    refused: bool = Field(description="the reader said the memories do not hold the answer")
    confidence: float = Field(ge=0.0, le=1.0, description="geometric-mean probability of the answer's tokens")
    citations: list[str] = Field(default_factory=list, description="ids of the records the reader's notes used")
    notes: str = Field(default="", description="the reader's notes on the memories (Chain-of-Note)")


class HistoryEntry(BaseModel):
    """What a record was before an update or delete."""

    model_config = ConfigDict(frozen=True)

    record_id: str
    event: Literal["update", "delete"]
    previous: MemoryRecord
    changed_at: datetime


class SearchFilters(BaseModel):
    """Narrow a search. Every field is optional; all given fields must hold."""

    model_config = ConfigDict(extra="forbid")

    session_ids: list[str] | None = Field(default=None, min_length=1)
    start: datetime | None = Field(default=None, description="earliest conversation time, inclusive")
    end: datetime | None = Field(
        default=None, description="latest conversation time, inclusive; a bare date means the end of that day"
    )
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _as_utc(cls, value: object, info: ValidationInfo) -> datetime | None:
        """Every spelling parse_timestamp accepts; naive means UTC, as everywhere in memagent."""
        if value is None:
            return None
        moment = parse_timestamp(value, field=f"filters.{info.field_name}")
        if info.field_name == "end" and isinstance(value, str) and _BARE_DATE.match(value):
            moment += timedelta(days=1, microseconds=-1)
        return moment


def validate_messages(messages: object, *, max_chars: int) -> list[Message]:
    """Check a call's messages one field at a time, so the error names the exact culprit."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InputError("messages", f"expected a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")
    if not messages:
        raise InputError("messages", "is empty: give at least one message")
    checked = []
    for i, raw in enumerate(messages):
        where = f"messages[{i}]"
        if isinstance(raw, Message):
            raw = raw.model_dump()
        if not isinstance(raw, Mapping):
            raise InputError(where, f"expected a dict with 'role' and 'content', got {type(raw).__name__}")
        for name in ("role", "content"):
            if name not in raw:
                raise InputError(f"{where}.{name}", "is missing")
        role, content = raw["role"], raw["content"]
        if role not in ("user", "assistant", "system"):
            raise InputError(f"{where}.role", f"unknown role {role!r}: use 'user', 'assistant' or 'system'")
        if not isinstance(content, str):
            raise InputError(f"{where}.content", f"must be a string, got {type(content).__name__}")
        if len(content) > max_chars:
            raise InputError(
                f"{where}.content", f"has {len(content)} characters, over the limit of {max_chars} (max_message_chars)"
            )
        checked.append(Message(role=role, content=content))
    return checked


class Scope(BaseModel):
    """Whose memories a call reads or writes: always one user, optionally narrowed to one agent and/or
    one run (mem0's three scopes). A record stored with an agent or run is found by a search of the
    user alone, and by a search narrowed to that agent or run; never by another user's."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    agent_id: str | None = None
    run_id: str | None = None

    def holds(self, record: MemoryRecord) -> bool:
        """Whether ``record`` is inside this scope (the same test the store's filter makes)."""
        return (record.user_id == self.user_id
                and self.agent_id in (None, record.agent_id) and self.run_id in (None, record.run_id))


MAX_ID_CHARS = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_id(value: object, field: str) -> str:
    """An id (user, agent, run, session, record): a non-empty string of at most 256 printable characters.

    Control characters are refused because ids are joined and hashed; a NUL inside one id could
    otherwise pass for the boundary between two.
    """
    if not isinstance(value, str) or not value.strip():
        raise InputError(field, f"must be a non-empty string, got {_short(value)}")
    if len(value) > MAX_ID_CHARS:
        raise InputError(field, f"has {len(value)} characters, over the limit of {MAX_ID_CHARS}")
    if _CONTROL.search(value):
        raise InputError(field, f"must not contain control characters, got {_short(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(field, f"is not valid Unicode (a lone surrogate?): {_short(value)}") from None
    return value


def validate_user_id(user_id: object, field: str = "user_id") -> str:
    return validate_id(user_id, field)


def validate_scope(user_id: object, agent_id: object = None, run_id: object = None) -> Scope:
    return Scope(
        user_id=validate_id(user_id, "user_id"),
        agent_id=None if agent_id is None else validate_id(agent_id, "agent_id"),
        run_id=None if run_id is None else validate_id(run_id, "run_id"),
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def coerce_filters(filters: SearchFilters | Mapping[str, object] | None) -> SearchFilters:
    if filters is None:
        return SearchFilters()
    if isinstance(filters, SearchFilters):
        return filters
    try:
        return SearchFilters.model_validate(dict(filters))
    except ValidationError as exc:
        first = exc.errors()[0]
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, InputError):  # our own message already names the field
            raise cause from None
        field = ".".join(["filters", *(str(part) for part in first["loc"])])
        raise InputError(field, f"{first['msg']} (got {first['input']!r})") from exc
