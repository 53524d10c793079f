from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from memagent.errors import InputError
from memagent.llm.base import ChatMessages, LLMError
from memagent.llm.scripted import ScriptedLLM
from memagent.retrieve.temporal import (
    TimeRange,
    TimeReading,
    front_in_range,
    llm_time_reading,
    parse_time,
    read_time,
)

UTC = timezone.utc
WED = datetime(2023, 5, 17, 15, 30, tzinfo=UTC)  # a Wednesday; its week runs Mon 15 - Sun 21 May
SAT = datetime(2023, 5, 20, 9, 0, tzinfo=UTC)
SUN = datetime(2023, 5, 21, 20, 0, tzinfo=UTC)
MAR31 = datetime(2023, 3, 31, 12, 0, tzinfo=UTC)
OCT = datetime(2023, 10, 1, 12, 0, tzinfo=UTC)
JAN = datetime(2023, 1, 15, 12, 0, tzinfo=UTC)
D = date

# (question, asked at, expected [start, end) as dates, or a status)
CASES = [
    # day words
    ("What did I eat today?", WED, (D(2023, 5, 17), D(2023, 5, 18))),
    ("What did I cook yesterday?", WED, (D(2023, 5, 16), D(2023, 5, 17))),
    ("Where did I go the day before yesterday?", WED, (D(2023, 5, 15), D(2023, 5, 16))),
    ("What is on my calendar tomorrow?", WED, (D(2023, 5, 18), D(2023, 5, 19))),
    ("What did I watch last night?", WED, (D(2023, 5, 16), D(2023, 5, 17))),
    # N days ago; "a few" is 2 to 4 days back (13-15 May)
    ("What did I buy two days ago?", WED, (D(2023, 5, 15), D(2023, 5, 16))),
    ("What did I buy 3 days ago?", WED, (D(2023, 5, 14), D(2023, 5, 15))),
    ("Who did I call a day ago?", WED, (D(2023, 5, 16), D(2023, 5, 17))),
    ("What did I order a couple of days ago?", WED, (D(2023, 5, 15), D(2023, 5, 16))),
    ("What did I bake a few days ago?", WED, (D(2023, 5, 13), D(2023, 5, 16))),
    ("What did I plant twelve days ago?", WED, (D(2023, 5, 5), D(2023, 5, 6))),
    # weeks (Monday first) and weekends
    ("What did I do last week?", WED, (D(2023, 5, 8), D(2023, 5, 15))),
    ("What meetings did I have this week?", WED, (D(2023, 5, 15), D(2023, 5, 22))),
    ("What did I read two weeks ago?", WED, (D(2023, 5, 1), D(2023, 5, 8))),  # 3 May is in that week
    ("What did I paint a week ago?", WED, (D(2023, 5, 8), D(2023, 5, 15))),
    ("Where did I hike last weekend?", WED, (D(2023, 5, 13), D(2023, 5, 15))),
    ("What are my plans this weekend?", WED, (D(2023, 5, 20), D(2023, 5, 22))),
    ("Who did I see over the weekend?", WED, (D(2023, 5, 13), D(2023, 5, 15))),
    ("Who did I see over the weekend?", SUN, (D(2023, 5, 20), D(2023, 5, 22))),  # the one under way
    ("Which movie did I watch the past weekend?", WED, (D(2023, 5, 13), D(2023, 5, 15))),
    ("What did I buy the week before last?", WED, (D(2023, 5, 1), D(2023, 5, 8))),
    ("Where did I hike the weekend before last?", WED, (D(2023, 5, 6), D(2023, 5, 8))),
    # months and years: the calendar unit holding the day N units back
    ("What did I spend last month?", WED, (D(2023, 4, 1), D(2023, 5, 1))),
    ("What did I spend this month?", WED, (D(2023, 5, 1), D(2023, 6, 1))),
    ("What course did I start three months ago?", WED, (D(2023, 2, 1), D(2023, 3, 1))),
    ("Which doctor did I see a month ago?", WED, (D(2023, 4, 1), D(2023, 5, 1))),
    ("Which doctor did I see a month ago?", MAR31, (D(2023, 2, 1), D(2023, 3, 1))),  # 31 Mar - 1 month = 28 Feb
    ("Where did I travel last year?", WED, (D(2022, 1, 1), D(2023, 1, 1))),
    ("How much have I saved this year?", WED, (D(2023, 1, 1), D(2024, 1, 1))),
    ("What car did I buy 2 years ago?", WED, (D(2021, 1, 1), D(2022, 1, 1))),
    # weekdays
    ("What did I cook on Saturday?", WED, (D(2023, 5, 13), D(2023, 5, 14))),
    ("What did I cook last Saturday?", WED, (D(2023, 5, 13), D(2023, 5, 14))),
    ("What did I cook last Saturday?", SAT, (D(2023, 5, 13), D(2023, 5, 14))),  # today is Saturday: 7 days back
    ("What did I cook on Saturday?", SAT, (D(2023, 5, 20), D(2023, 5, 21))),  # ... but "on" may be today
    ("Who did I meet last Wednesday?", WED, (D(2023, 5, 10), D(2023, 5, 11))),
    ("What did I do this Monday?", WED, (D(2023, 5, 15), D(2023, 5, 16))),
    # named months: the latest on or before the question; "last May" is before this month
    ("What did I plant in May?", WED, (D(2023, 5, 1), D(2023, 6, 1))),
    ("Where did I go in June?", WED, (D(2022, 6, 1), D(2022, 7, 1))),
    ("What did I buy in March?", WED, (D(2023, 3, 1), D(2023, 4, 1))),
    ("What did I plant in May 2022?", WED, (D(2022, 5, 1), D(2022, 6, 1))),
    ("Which gigs did I attend May 2021?", WED, (D(2021, 5, 1), D(2021, 6, 1))),
    ("What did I plant last May?", WED, (D(2022, 5, 1), D(2022, 6, 1))),
    ("What did I buy last March?", WED, (D(2023, 3, 1), D(2023, 4, 1))),
    ("Who visited in early April?", WED, (D(2023, 4, 1), D(2023, 4, 11))),
    ("Who visited mid-April?", WED, (D(2023, 4, 11), D(2023, 4, 21))),
    ("Who visited in late February?", WED, (D(2023, 2, 21), D(2023, 3, 1))),
    ("What did I learn in March of last year?", WED, (D(2022, 3, 1), D(2022, 4, 1))),
    ("What did I learn in December of 2021?", WED, (D(2021, 12, 1), D(2022, 1, 1))),
    ("What did I do in Feb 2022?", WED, (D(2022, 2, 1), D(2022, 3, 1))),  # an abbreviation needs its year
    # explicit dates; a day without a year is the latest one on or before the question
    ("What did I do on May 5?", WED, (D(2023, 5, 5), D(2023, 5, 6))),
    ("What did I do May 5th?", WED, (D(2023, 5, 5), D(2023, 5, 6))),
    ("What did I do on 5 May 2022?", WED, (D(2022, 5, 5), D(2022, 5, 6))),
    ("What happened on 2023-05-05?", WED, (D(2023, 5, 5), D(2023, 5, 6))),
    ("What happened on 5/6/2023?", WED, (D(2023, 5, 6), D(2023, 5, 7))),  # US: month first
    ("What did I see on 12/25/22?", WED, (D(2022, 12, 25), D(2022, 12, 26))),
    ("Where was I on June 3?", WED, (D(2022, 6, 3), D(2022, 6, 4))),
    ("What did I do on March 3rd, 2022?", WED, (D(2022, 3, 3), D(2022, 3, 4))),
    ("What did I pay on the 5th?", WED, (D(2023, 5, 5), D(2023, 5, 6))),
    ("What did I pay on the 20th?", WED, (D(2023, 4, 20), D(2023, 4, 21))),
    # years and seasons (northern, meteorological)
    ("Which books did I read in 2022?", WED, (D(2022, 1, 1), D(2023, 1, 1))),
    ("Where did I go in the summer of 2022?", WED, (D(2022, 6, 1), D(2022, 9, 1))),
    ("Where did I go last summer?", WED, (D(2022, 6, 1), D(2022, 9, 1))),
    ("Where did I go last summer?", OCT, (D(2023, 6, 1), D(2023, 9, 1))),
    ("Where did I ski in the winter of 2022?", WED, (D(2022, 12, 1), D(2023, 3, 1))),
    ("Where have I skied this winter?", JAN, (D(2022, 12, 1), D(2023, 3, 1))),
    # bounded on one side: "since" runs to the end of the question day, "before" reaches 10 years back
    ("How much have I run since last month?", WED, (D(2023, 4, 1), D(2023, 5, 18))),
    ("What have I read since March?", WED, (D(2023, 3, 1), D(2023, 5, 18))),
    ("Which cities have I lived in since 2021?", WED, (D(2021, 1, 1), D(2023, 5, 18))),
    ("What did I buy after May 10?", WED, (D(2023, 5, 11), D(2023, 5, 18))),
    # 8 May 2013 to 8 May 2023 is 3652 days (2016 and 2020 leap), so 3653 days back is 7 May 2013
    ("What did I buy before last week?", WED, (D(2013, 5, 7), D(2023, 5, 8))),
    ("What did I eat until yesterday?", WED, (D(2013, 5, 15), D(2023, 5, 17))),
    ("Since last Saturday, how much have I run?", WED, (D(2023, 5, 13), D(2023, 5, 18))),  # opening, but a date
    ("I will look after the kids since Monday.", WED, (D(2023, 5, 15), D(2023, 5, 18))),
    ("Who did I look after last week?", WED, (D(2023, 5, 8), D(2023, 5, 15))),  # "look after" bounds nothing
    # rolling windows: the N units before the question day, plus that day
    ("What did I eat in the past 3 days?", WED, (D(2023, 5, 14), D(2023, 5, 18))),
    ("What did I eat in the last two weeks?", WED, (D(2023, 5, 3), D(2023, 5, 18))),
    ("How far did I run over the past two weeks?", WED, (D(2023, 5, 3), D(2023, 5, 18))),
    ("How far did I run in the past week?", WED, (D(2023, 5, 10), D(2023, 5, 18))),
    ("What did I eat the past few days?", WED, (D(2023, 5, 13), D(2023, 5, 18))),
    ("What have I been reading recently?", WED, (D(2023, 4, 17), D(2023, 5, 18))),
    ("How many days were there between May 1 and May 10?", WED, (D(2023, 5, 1), D(2023, 5, 11))),
    # an event where a date should be: only an LLM can tell
    ("What did I buy before my trip to Hawaii?", WED, "cannot-tell"),
    ("How many books have I read since I started my job?", WED, "cannot-tell"),
    ("What did I cook after I moved?", WED, "cannot-tell"),
    ("How many days ago did I go to the dentist?", WED, "cannot-tell"),
    ("How many days passed between my dentist appointment and my haircut?", WED, "cannot-tell"),
    ("How long ago did I adopt my cat?", WED, "cannot-tell"),
    ("How many weeks ago did I start yoga?", WED, "cannot-tell"),
    ("What did I buy before last Christmas?", WED, "cannot-tell"),
    # no time named, and false positives
    ("What is my dog's name?", WED, "none"),
    ("May I ask what my favorite color is?", WED, "none"),
    ("Can you march me through my workout plan?", WED, "none"),
    ("Give me my Sunday roast recipe.", WED, "none"),
    ("What do I usually eat on Saturdays?", WED, "none"),
    ("Since I'm vegan, what should I cook for dinner?", WED, "none"),
    ("Who will look after my dog?", WED, "none"),
    ("Did I fall off my bike?", WED, "none"),
    ("Which summer dress did I buy?", WED, "none"),
    ("Was this the 5th time I ran a marathon?", WED, "none"),
    ("Is that a photo of Jan?", WED, "none"),
    ("How many days did I spend in Japan?", WED, "none"),
    ("How long have I been living in Denver?", WED, "none"),
    ("What's the difference between a latte and a flat white?", WED, "none"),
    ("What did I do on February 30?", WED, "none"),
    ("What did I do 999 years ago?", WED, "none"),
]


def utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def days(reading: TimeReading) -> tuple[date, date]:
    """The reading's range as [first day, day after), checked to be whole UTC days."""
    assert reading.status == "range" and reading.range is not None, reading
    start, end = reading.range.start, reading.range.end
    assert start == utc(start.date()) and end == utc(end.date())
    return start.date(), end.date()


@pytest.mark.parametrize(("question", "asked", "expected"), CASES, ids=[f"{q} @{a:%a %d %b}" for q, a, _ in CASES])
def test_parse_time(question: str, asked: datetime, expected: tuple[date, date] | str) -> None:
    reading = parse_time(question, asked)
    if isinstance(expected, str):
        assert (reading.status, reading.range) == (expected, None)
        assert (reading.expression is None) == (expected == "none")
    else:
        assert days(reading) == expected


def test_expression_is_the_question_text() -> None:
    reading = parse_time("What did I cook last  Saturday's evening?", WED)
    assert reading.range is not None
    assert reading.expression == reading.range.expression == "last Saturday"
    assert parse_time("What did I buy before my trip to Hawaii?", WED).expression == "before my trip to Hawaii"


def test_event_expression_stops_at_punctuation() -> None:
    reading = parse_time("A year before my wedding, where did I live?", WED)
    assert (reading.status, reading.expression) == ("cannot-tell", "before my wedding")


@pytest.mark.parametrize(
    "question", ["", "?!", "before 0001-01-01", "after 9999-12-31", "since 13/45/2023", "in the past 999 years"]
)
def test_odd_questions_never_raise(question: str) -> None:
    assert parse_time(question, WED).status in ("none", "cannot-tell")


def test_question_date_naive_is_utc_and_aware_is_converted() -> None:
    naive = parse_time("What did I eat today?", datetime(2023, 5, 17, 23, 30))
    assert days(naive) == (D(2023, 5, 17), D(2023, 5, 18))
    late_in_new_york = datetime(2023, 5, 17, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # 04:30 UTC on the 18th
    assert days(parse_time("What did I eat today?", late_in_new_york)) == (D(2023, 5, 18), D(2023, 5, 19))


# ---- TimeRange and front_in_range -----------------------------------------------------------

SATURDAY = TimeRange(utc(D(2023, 5, 13)), utc(D(2023, 5, 14)), "last Saturday")


def test_widened_adds_days_each_side_and_keeps_expression() -> None:
    wide = SATURDAY.widened()
    assert (wide.start, wide.end, wide.expression) == (utc(D(2023, 5, 11)), utc(D(2023, 5, 16)), "last Saturday")
    assert SATURDAY.widened(0.5).start == datetime(2023, 5, 12, 12, tzinfo=UTC)


def test_contains_is_start_inclusive_end_exclusive() -> None:
    assert SATURDAY.contains(utc(D(2023, 5, 13)))
    assert SATURDAY.contains(datetime(2023, 5, 13, 23, 59))  # naive is UTC
    assert not SATURDAY.contains(utc(D(2023, 5, 14)))
    assert not SATURDAY.contains(datetime(2023, 5, 13, 21, tzinfo=timezone(timedelta(hours=-5))))  # 02:00 UTC, 14th
    assert not SATURDAY.contains(datetime(2023, 5, 12, 23, tzinfo=UTC))


def test_time_range_rejects_naive_or_empty() -> None:
    with pytest.raises(InputError, match="timezone-aware"):
        TimeRange(datetime(2023, 5, 13), datetime(2023, 5, 14), "x")
    with pytest.raises(InputError, match="must be after start"):
        TimeRange(utc(D(2023, 5, 14)), utc(D(2023, 5, 13)), "x")


def test_front_in_range_keeps_order_and_drops_nothing() -> None:
    items = ["a", "b", "c", "d", "e"]
    moments = [utc(D(2023, 5, 1)), datetime(2023, 5, 13, 8, tzinfo=UTC), None, utc(D(2023, 5, 2)), utc(D(2023, 5, 13))]
    assert front_in_range(items, moments, SATURDAY) == ["b", "e", "a", "c", "d"]
    assert front_in_range(items, [None] * 5, SATURDAY) == items  # None never matches
    assert front_in_range([], [], SATURDAY) == []


def test_front_in_range_wants_one_moment_per_item() -> None:
    with pytest.raises(InputError, match="one moment per item"):
        front_in_range(["a", "b"], [None], SATURDAY)


# ---- LLM fallback ---------------------------------------------------------------------------

HAWAII = "What did I buy before my trip to Hawaii?"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"start": "2023-04-03", "end": "2023-04-09"}', (D(2023, 4, 3), D(2023, 4, 10))),  # end inclusive -> exclusive
        ('Sure! ```json\n{"start": "2023-04-03", "end": "2023-04-03"}\n```', (D(2023, 4, 3), D(2023, 4, 4))),
        ('{"start": "2023-04-03", "end": null}', (D(2023, 4, 3), D(2023, 5, 18))),  # open end: the question day
    ],
)
def test_llm_reading_gives_a_range(reply: str, expected: tuple[date, date]) -> None:
    assert days(llm_time_reading(ScriptedLLM(reply), HAWAII, WED)) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "I think it was in the spring.",  # no JSON
        '{"start": "2023-04-03", "end": ',  # broken JSON
        '{"start": "2023-04-09", "end": "2023-04-03"}',  # end before start
        '{"start": "2023-02-30", "end": "2023-03-02"}',  # no such day
        '{"start": 20230403, "end": "2023-04-09"}',  # not a date string
        '{"start": null, "end": null}',  # the model cannot tell either
        '{"start": null, "end": "0001-01-01"}',  # no one's memory, and 10 years before it is no date
    ],
)
def test_llm_reading_bad_reply_is_cannot_tell(reply: str) -> None:
    reading = llm_time_reading(ScriptedLLM(reply), HAWAII, WED)
    assert (reading.status, reading.range) == ("cannot-tell", None)


def test_llm_prompt_names_the_question_day_and_the_question() -> None:
    llm = ScriptedLLM('{"start": null, "end": null}')
    llm_time_reading(llm, HAWAII, WED)
    last = llm.calls[0][-1]
    assert last["role"] == "user" and "2023-05-17 (Wednesday)" in last["content"] and HAWAII in last["content"]


def test_llm_failure_propagates() -> None:
    def fail(messages: ChatMessages) -> str:
        raise LLMError("server down")

    with pytest.raises(LLMError, match="server down"):
        read_time(HAWAII, WED, ScriptedLLM(fail))


def test_read_time_does_not_call_llm_when_rules_decide() -> None:
    llm = ScriptedLLM('{"start": "2020-01-01", "end": "2020-01-02"}')
    assert read_time("What did I cook last Saturday?", WED, llm) == parse_time("What did I cook last Saturday?", WED)
    assert read_time("What is my dog's name?", WED, llm).status == "none"
    assert llm.calls == []


def test_read_time_takes_llm_range_for_cannot_tell() -> None:
    reading = read_time(HAWAII, WED, ScriptedLLM('{"start": "2023-04-03", "end": "2023-04-09"}'))
    assert days(reading) == (D(2023, 4, 3), D(2023, 4, 10))
    assert reading.range is not None
    assert reading.expression == reading.range.expression == "before my trip to Hawaii"


def test_read_time_keeps_cannot_tell_when_llm_fails_to_date() -> None:
    assert read_time(HAWAII, WED, ScriptedLLM("no idea")) == parse_time(HAWAII, WED)
    assert read_time(HAWAII, WED).status == "cannot-tell"  # no LLM given
