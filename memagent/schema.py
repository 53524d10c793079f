"""The data memagent takes and gives back: messages in, records and hits out."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta
from typing import Any, Literal, cast

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
    """A record found by search, with its fused score and the ranks that produced it. With
    ``retrieval.rerank`` the order is the reranker's (``why["rerank"]``), so scores need not descend."""

    model_config = ConfigDict(frozen=True)

    record: MemoryRecord
    score: float
    why: dict[str, int] = Field(
        description="1-based rank in each ranking that found the record: dense, lexical, session, and "
        "NAME@session (its session's rank by best round in ranking NAME); time=1 when the time range moved it; "
        "rerank: its rank by the cross-encoder's score, when retrieval.rerank read it"
    )


class Answer(BaseModel):
    """What ``Memory.answer`` says, and how sure it is."""

    model_config = ConfigDict(frozen=True)

    text: str
    refused: bool = Field(description="the reader said the memories do not hold the answer")
    confidence: float = Field(
        ge=0.0, le=1.0,
        description="R-Tuning's mean of the two parts below when the sure-probe ran, else the answer's likelihood",
    )
    prediction_confidence: float | None = Field(
        default=None, ge=0.0, le=1.0, description="geometric-mean probability of the answer's tokens"
    )
    sure_confidence: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="p(sure) / (p(sure) + p(unsure)) when the reader was asked whether it is sure (None: not asked)",
    )
    citations: list[str] = Field(default_factory=list, description="ids of the records the reader's notes used")
    notes: str = Field(default="", description="the reader's notes on the memories (Chain-of-Note)")


class HistoryEntry(BaseModel):
    """What a record was before an update, a delete, or compaction forgot it (``forget``)."""

    model_config = ConfigDict(frozen=True)

    record_id: str
    event: Literal["update", "delete", "forget"]
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

    @field_validator("session_ids", mode="before")
    @classmethod
    def _valid_ids(cls, value: object) -> list[str] | None:
        """Each one a valid id: a session id no record can have is a mistake, and Chroma refuses some."""
        if value is None:
            return None
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, AbstractSet)):
            raise InputError("filters.session_ids", f"must be a list of session ids, got {type(value).__name__}")
        if not value:
            raise InputError("filters.session_ids", "is empty: give at least one session id, or leave the filter out")
        return [validate_id(item, f"filters.session_ids[{i}]") for i, item in enumerate(value)]

    @field_validator("metadata", mode="before")
    @classmethod
    def _storable_values(cls, value: object) -> dict[str, MetadataValue]:
        """The rules of stored metadata: a value no record can hold is refused, not searched for."""
        return validate_metadata(value, field="filters.metadata")

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
        if not isinstance(role, str) or role not in ("user", "assistant", "system"):
            raise InputError(f"{where}.role", f"unknown role {_short(role)}: use 'user', 'assistant' or 'system'")
        if not isinstance(content, str):
            raise InputError(f"{where}.content", f"must be a string, got {type(content).__name__}")
        if len(content) > max_chars:
            raise InputError(
                f"{where}.content", f"has {len(content)} characters, over the limit of {max_chars} (max_message_chars)"
            )
        validate_text(content, f"{where}.content")
        checked.append(Message(role=cast(Role, role), content=content))
    _check_blank(checked)
    return checked


def _check_blank(messages: Sequence[Message]) -> None:
    """Refuse a round that would be stored with nothing said (decided for issue 12).

    A blank user message is refused, not skipped: skipping would hang its reply on the round
    before, and the caller would never learn the turn was lost. A blank assistant reply is kept
    as given (a reply that said nothing, e.g. a tool call), since its round holds the user's words;
    but replies before the first user message form a round of their own, so they may not all be blank.
    System messages are not remembered, so theirs may be blank.
    """
    first_user = next((i for i, m in enumerate(messages) if m.role == "user"), len(messages))
    leading = [i for i in range(first_user) if messages[i].role == "assistant"]  # a round of their own
    if leading and not any(messages[i].content.strip() for i in leading):
        raise InputError(
            f"messages[{leading[0]}].content",
            "is empty (or whitespace only) and comes before any user message: it would be stored as an empty memory",
        )
    for i, message in enumerate(messages):
        if message.role == "user" and not message.content.strip():
            raise InputError(
                f"messages[{i}].content",
                "is empty (or whitespace only): a user message must say something; leave the message out instead",
            )


def validate_text(value: object, field: str) -> str:
    """Text to store or search: a string of valid Unicode.

    A lone surrogate (``"\\ud800"``, what a broken decoder or a JSON ``\\ud800`` escape leaves) has
    no UTF-8 form, so Chroma, the embedder's cache and JSONL export cannot hold it: refused. A NUL is
    valid Unicode and round-trips through Chroma (embedded and server) and JSONL: kept as given.
    """
    if not isinstance(value, str):
        raise InputError(field, f"must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            field, f"is not valid Unicode: a lone surrogate {value[exc.start]!r} at position {exc.start}"
        ) from None
    return value


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
    return validate_text(value, field)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # Chroma stores ints as int64, and turns larger ones into floats
MAX_METADATA_KEY_CHARS = 256


def validate_metadata(metadata: object, field: str = "metadata") -> dict[str, MetadataValue]:
    """User metadata (of ``add``, ``update``, an imported record, or a filter), checked so it round-trips.

    Each value comes back from the store as given, or is refused here (issue 12):
    - keys: non-empty strings of at most 256 characters, without control characters or lone
      surrogates (a key is part of a Chroma field name; a NUL could join two);
    - str: valid Unicode (a NUL is fine: Chroma keeps it; a lone surrogate is not);
    - int: inside int64 (Chroma turns a larger one into a float, losing digits);
    - float: finite (Chroma silently drops NaN and infinities, and refuses them in a filter);
      Chroma 1.5.9 reads about one float in six back one unit in the last place off
      (0.9971415884291277 as 0.9971415884291276); floats of few digits (0.1, 98.6) come back exact;
    - bool.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InputError(field, f"must be a dict, got {type(metadata).__name__}")
    for name, value in metadata.items():
        _check_metadata_key(name, field)
        _check_metadata_value(value, f"{field}.{name}")
    return dict(metadata)


def _check_metadata_key(name: object, field: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise InputError(field, f"keys must be non-empty strings, got {_short(name)}")
    if len(name) > MAX_METADATA_KEY_CHARS:
        raise InputError(field, f"key {_short(name)} has {len(name)} characters, over the limit of "
                                f"{MAX_METADATA_KEY_CHARS}")
    if _CONTROL.search(name):
        raise InputError(field, f"key {_short(name)} must not contain control characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(field, f"key {_short(name)} is not valid Unicode (a lone surrogate)") from None


def _check_metadata_value(value: object, field: str) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InputError(field, f"{_short(value)} is outside int64 ({INT64_MIN} to {INT64_MAX}); store it as a str")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(field, f"must be a finite number, got {value!r}")
    elif isinstance(value, str):
        validate_text(value, field)
    else:
        raise InputError(field, f"must be a str, int, float or bool, got {type(value).__name__}")


def validate_user_id(user_id: object, field: str = "user_id") -> str:
    return validate_id(user_id, field)


def validate_scope(user_id: object, agent_id: object = None, run_id: object = None) -> Scope:
    return Scope(
        user_id=validate_id(user_id, "user_id"),
        agent_id=None if agent_id is None else validate_id(agent_id, "agent_id"),
        run_id=None if run_id is None else validate_id(run_id, "run_id"),
    )


def _short(value: object) -> str:
    """``repr(value)``, cut to 80 characters; never raises (Python refuses to print ints past 4300 digits)."""
    try:
        text = repr(value)
    except Exception:  # a repr that fails must not turn an InputError into another error
        text = f"<{type(value).__name__} that cannot be shown>"
    return text if len(text) <= 80 else text[:77] + "..."


def coerce_filters(filters: SearchFilters | Mapping[str, object] | None) -> SearchFilters:
    if filters is None:
        return SearchFilters()
    if isinstance(filters, SearchFilters):  # checked again: a SearchFilters can be changed after it is made
        fields: dict[str, Any] = dict(filters)
    elif isinstance(filters, Mapping):
        fields = dict(filters)
    else:
        raise InputError("filters", f"must be a dict or a SearchFilters, got {type(filters).__name__}")
    try:
        return SearchFilters.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, InputError):  # our own message already names the field
            raise cause from None
        field = ".".join(["filters", *(str(part) for part in first["loc"])])
        raise InputError(field, f"{first['msg']} (got {_short(first['input'])})") from None
