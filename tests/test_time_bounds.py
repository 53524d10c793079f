"""Timestamps are bounded to [1900, 2200) on the way in, and never unreadable on the way out."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from memagent._time import MAX_TIME, MIN_TIME, from_epoch, parse_timestamp
from memagent.errors import InputError

UTC = timezone.utc


def _id(value: object) -> str:
    try:
        return repr(value)[:40]
    except ValueError:  # repr refuses ints past 4300 digits
        return "int-over-4300-digits"


@pytest.mark.parametrize(
    "bad",
    [
        "9999-12-31T23:59:59.999999",  # stored fine once, then from_epoch raised "year 10000 is out of range"
        "0001-01-01T00:00:00+05:00",  # to UTC is before year 1: a raw OverflowError before
        "9999-12-31T23:59:59-05:00",  # to UTC is past year 9999
        "1899-12-31T23:59:59",
        "1899/12/31 (Sun) 23:59",
        10**20,
        2**63,
        -(2**63),
        10**400,  # beyond any float
        10**5000,  # beyond what repr prints
        float("nan"),
        float("inf"),
        float("-inf"),
        datetime(9999, 12, 31, 23, 59),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
    ],
    ids=_id,
)
def test_out_of_range_timestamps_raise_input_error_naming_the_field(bad: object) -> None:
    with pytest.raises(InputError, match=r"^created_at: .*1900-01-01.*2200-01-01") as caught:
        parse_timestamp(bad, field="created_at")
    assert caught.value.field == "created_at"


def test_lower_bound_is_inclusive() -> None:
    assert parse_timestamp("1900-01-01T00:00:00Z") == MIN_TIME == datetime(1900, 1, 1, tzinfo=UTC)
    assert parse_timestamp(MIN_TIME.timestamp()) == MIN_TIME
    assert parse_timestamp("1900-01-01T05:00:00+05:00") == MIN_TIME
    with pytest.raises(InputError, match="^timestamp: "):
        parse_timestamp("1900-01-01T04:59:59+05:00")  # 1899-12-31T23:59:59Z
    with pytest.raises(InputError, match="^timestamp: "):
        parse_timestamp(MIN_TIME.timestamp() - 1)


def test_upper_bound_is_exclusive() -> None:
    last = datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert parse_timestamp("2199-12-31T23:59:59.999999") == last
    assert parse_timestamp(int(MAX_TIME.timestamp()) - 1) == last.replace(microsecond=0)
    with pytest.raises(InputError, match="^timestamp: "):
        parse_timestamp("2200-01-01T00:00:00Z")
    with pytest.raises(InputError, match="^timestamp: "):
        parse_timestamp(MAX_TIME.timestamp())
    with pytest.raises(InputError, match="^timestamp: "):
        parse_timestamp("2199-12-31T23:00:00-05:00")  # 2200-01-01T04:00Z


def test_bool_stays_rejected() -> None:
    with pytest.raises(InputError, match="^timestamp: .*got bool"):
        parse_timestamp(True)


@pytest.mark.parametrize("stored", [1e20, -1e20, math.nan, math.inf, -math.inf, 10**400, -(10**400), 2**63], ids=_id)
def test_from_epoch_clamps_bad_stored_values(stored: float) -> None:
    moment = from_epoch(stored)
    assert MIN_TIME <= moment < MAX_TIME
    assert moment.tzinfo is not None


def test_from_epoch_nan_is_the_lower_bound_and_good_values_round_trip() -> None:
    assert from_epoch(math.nan) == MIN_TIME
    assert from_epoch(1e20) == MAX_TIME - timedelta(microseconds=1)
    when = datetime(2023, 5, 20, 2, 21, 0, 123456, tzinfo=UTC)
    assert from_epoch(when.timestamp()) == when
