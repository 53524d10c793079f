"""Timestamps in, epoch seconds out: the three spellings users hand us, all as UTC."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from memagent.errors import InputError

# LongMemEval writes dates as "2023/05/20 (Sat) 02:21"; the weekday is redundant, so ignore it.
_LONGMEMEVAL = re.compile(r"^\s*(\d{4})/(\d{1,2})/(\d{1,2})\s*(?:\(\w+\))?\s*(\d{1,2}):(\d{2})\s*$")


def parse_timestamp(value: object, *, field: str = "timestamp") -> datetime:
    """A timezone-aware datetime from a datetime, epoch seconds, ISO 8601, or LongMemEval's format.

    Naive values are taken as UTC, so the same text always maps to the same instant.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            parsed = datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise InputError(field, f"{value!r} is not a usable epoch time") from None
    elif isinstance(value, str):
        parsed = _parse_text(value, field)
    else:
        raise InputError(field, f"expected a datetime, epoch seconds or a date string, got {type(value).__name__}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _parse_text(text: str, field: str) -> datetime:
    match = _LONGMEMEVAL.match(text)
    if match:
        year, month, day, hour, minute = (int(g) for g in match.groups())
        try:
            return datetime(year, month, day, hour, minute)
        except ValueError as exc:
            raise InputError(field, f"{text!r} is not a real date ({exc})") from exc
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            field,
            f"cannot parse {text!r}: use ISO 8601 ('2023-05-20T02:21:00'), "
            "LongMemEval's '2023/05/20 (Sat) 02:21', a datetime or epoch seconds",
        ) from None


def to_epoch(value: datetime) -> float:
    return value.timestamp()


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def utc_now() -> datetime:
    return datetime.now(tz=timezone.utc)
