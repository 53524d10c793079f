"""Timestamps in, epoch seconds out: the three spellings users hand us, all as UTC."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from memagent.errors import InputError

# Every stored instant lies in [MIN_TIME, MAX_TIME). No one's memories lie outside, and staying far
# from datetime's years 1 and 9999 means a timezone shift, a widened search window or reading the
# epoch back can never overflow (a year-9999 timestamp once made a user's records unreadable).
MIN_TIME = datetime(1900, 1, 1, tzinfo=timezone.utc)  # inclusive
MAX_TIME = datetime(2200, 1, 1, tzinfo=timezone.utc)  # exclusive
_MIN_EPOCH = MIN_TIME.timestamp()
_MAX_EPOCH = MAX_TIME.timestamp()
_LAST_TIME = MAX_TIME - timedelta(microseconds=1)  # the latest instant inside the range
_RANGE = "1900-01-01T00:00:00Z (inclusive) to 2200-01-01T00:00:00Z (exclusive)"

# LongMemEval writes dates as "2023/05/20 (Sat) 02:21"; the weekday is redundant, so ignore it.
_LONGMEMEVAL = re.compile(r"^\s*(\d{4})/(\d{1,2})/(\d{1,2})\s*(?:\(\w+\))?\s*(\d{1,2}):(\d{2})\s*$")


def parse_timestamp(value: object, *, field: str = "timestamp") -> datetime:
    """A timezone-aware datetime from a datetime, epoch seconds, ISO 8601, or LongMemEval's format.

    Naive values are taken as UTC, so the same text always maps to the same instant. Instants
    outside [MIN_TIME, MAX_TIME) raise InputError: once stored, they could not be read back.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        parsed = _from_number(value, field)
    elif isinstance(value, str):
        parsed = _parse_text(value, field)
    else:
        raise InputError(field, f"expected a datetime, epoch seconds or a date string, got {type(value).__name__}")
    return _in_range(parsed, value, field)


def _out_of_range(value: object) -> str:
    try:
        shown = repr(value)
    except ValueError:  # Python refuses to print ints past 4300 digits
        shown = "a number of over 4300 digits"
    shown = shown if len(shown) <= 60 else shown[:57] + "..."  # 10**400 has 401 digits
    return f"{shown} is outside the supported range, {_RANGE}"


def _from_number(value: float, field: str) -> datetime:
    """Epoch seconds, checked before conversion: NaN, inf and huge ints have no datetime."""
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float
        raise InputError(field, _out_of_range(value)) from None
    if not _MIN_EPOCH <= seconds < _MAX_EPOCH:  # NaN fails every comparison, so it lands here too
        raise InputError(field, _out_of_range(value))
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _in_range(parsed: datetime, value: object, field: str) -> datetime:
    """``parsed`` in UTC, if inside [MIN_TIME, MAX_TIME); naive means UTC."""
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        moment = parsed.astimezone(timezone.utc)
    except (OverflowError, ValueError):  # "0001-01-01T00:00+05:00" has no UTC datetime
        raise InputError(field, _out_of_range(value)) from None
    if not MIN_TIME <= moment < MAX_TIME:  # also catches rounding up to MAX_TIME in fromtimestamp
        raise InputError(field, _out_of_range(value))
    return moment


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
    """The UTC instant of stored epoch seconds. Never raises: this is the read path.

    Stores written before parse_timestamp checked the range may hold NaN or a year-10000 value;
    those are clamped into [MIN_TIME, MAX_TIME) (NaN to MIN_TIME) so the records stay readable.
    """
    if not seconds >= _MIN_EPOCH:  # written this way so that NaN is caught too
        return MIN_TIME
    if seconds >= _MAX_EPOCH:
        return _LAST_TIME
    return min(datetime.fromtimestamp(seconds, tz=timezone.utc), _LAST_TIME)  # rounding may reach MAX_TIME


def utc_now() -> datetime:
    return datetime.now(tz=timezone.utc)
