"""Time-aware query expansion (LongMemEval, Wu et al. 2024, §5).

A question such as "what did I cook last Saturday?" names a time. The paper reads that time as a
date range, widens it by 2 days on each side (people misremember days, and a session is often
stored a little after the event), and moves the values whose timestamp falls inside to the front
of the retrieved list. Nothing is dropped: a wrong reading only reorders, it can never hide the
answer.

The reading is deterministic first (one table of patterns below), with an LLM as the fallback for
what rules cannot date ("before my trip to Hawaii"). Choices made where English is vague:

- weeks run Monday to Sunday; ranges are whole UTC days, end exclusive;
- "N days/weeks/months/years ago" is the calendar unit holding the day N units back;
  "a few" is 2 to 4, "a couple of" is 2;
- "last week/month/year" is the previous calendar unit, "the past week/N days" a rolling window
  ending with the question day;
- "last weekend" is the previous week's Saturday and Sunday, "over the weekend" the latest that
  has begun; "the week/weekend/month/year before last" is two units back;
  "last Saturday" is strictly before today, "on Saturday" may be today;
- a day or month without a year is the latest one on or before the question date; "last May" is
  the latest May before the current month; early/mid/late are days 1-10, 11-20, 21-end;
- seasons are northern meteorological (summer = June-August; winter of 2022 = Dec 2022-Feb 2023);
- "recently"/"lately" is the past 30 days;
- "before X" reaches back 10 years, "since/after X" runs to the end of the question day;
  an event in place of X ("since I started my job") cannot be told without the LLM;
- "how many days ago did I..." names an event, so cannot be told either; "how long have I been
  ..." names no time at all ("none");
- "since" opening a question before an event is causal ("Since I'm vegan, ...") and ignored;
- dates outside 1900-2100 are not read ("999 years ago").
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal, TypeVar

from memagent.errors import InputError
from memagent.llm.base import LLM

T = TypeVar("T")
Span = tuple[date, date]  # [start, end) in whole days
_OPEN_PAST = 3653  # days, about 10 years: how far back "before X" reaches
_YEARS = range(1900, 2101)  # no one's memories lie outside, and it keeps arithmetic off year 1 and 9999


@dataclass(frozen=True)
class TimeRange:
    start: datetime  # inclusive, timezone-aware UTC
    end: datetime  # exclusive, timezone-aware UTC
    expression: str  # the text of the question it came from ("last Saturday")

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise InputError("time_range", "start and end must be timezone-aware")
        if self.end <= self.start:
            raise InputError("time_range", f"end {self.end} must be after start {self.start}")

    def widened(self, days: float = 2.0) -> TimeRange:
        """The paper widens the range by 2 days on each side."""
        pad = timedelta(days=days)
        return replace(self, start=self.start - pad, end=self.end + pad)

    def contains(self, moment: datetime) -> bool:
        return self.start <= _utc(moment) < self.end


@dataclass(frozen=True)
class TimeReading:
    """What a question says about time."""

    range: TimeRange | None  # the referred range, when it can be told
    expression: str | None  # the temporal expression found, even when no range can be told
    status: Literal["range", "none", "cannot-tell"]


# ---- day arithmetic -------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _months_later(d: date, n: int) -> date:
    """``d`` moved by ``n`` months, its day clamped to the month's length (Mar 31 - 1 = Feb 28)."""
    year, month = divmod(d.year * 12 + d.month - 1 + n, 12)
    return date(year, month + 1, min(d.day, calendar.monthrange(year, month + 1)[1]))


def _back(d: date, unit: str, n: int) -> date:
    if unit in ("day", "week"):
        return d - timedelta(days=n * (7 if unit == "week" else 1))
    return _months_later(d, -n * (12 if unit == "year" else 1))


def _unit(unit: str, d: date) -> Span:
    """The calendar day, week (Monday first), month or year holding ``d``."""
    if unit in ("day", "week"):
        first = d - timedelta(days=d.weekday() if unit == "week" else 0)
        return first, first + timedelta(days=7 if unit == "week" else 1)
    first = d.replace(day=1) if unit == "month" else date(d.year, 1, 1)
    return first, _months_later(first, 1 if unit == "month" else 12)


def _weekend_of(d: date) -> Span:
    saturday = _unit("week", d)[0] + timedelta(days=5)
    return saturday, saturday + timedelta(days=2)


def _month(year: int, month: int, part: str | None) -> Span:
    start, end = _unit("month", date(year, month, 1))
    if part:  # thirds: early 1-10, mid 11-20, late 21-end
        first, after = {"early": (1, 11), "mid": (11, 21), "late": (21, None)}[part]
        start, end = start.replace(day=first), start.replace(day=after) if after else end
    return start, end


# ---- the pattern table ----------------------------------------------------------------------

_WORDS = "one two three four five six seven eight nine ten eleven twelve".split()
# Longer phrases first: the regex alternation takes the first that fits ("a couple of" before "a").
_COUNTS = {"a couple of": (2, 2), "couple of": (2, 2), "a few": (2, 4), "few": (2, 4), "an": (1, 1), "a": (1, 1)}
_COUNTS.update({word: (n, n) for n, word in enumerate(_WORDS, start=1)})
_NUM = r"(\d{1,3}|" + "|".join(_COUNTS) + ")"
_UNIT = r"(day|week|month|year)s?"
# Spelled out: calendar.month_name follows the locale.
_FULL_MONTHS = "january february march april may june july august september october november december".split()
_MONTH = "(" + "|".join(_FULL_MONTHS + "jan feb mar apr jun jul aug sept sep oct nov dec".split()) + ")"
_WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
_SEASONS = {"spring": 3, "summer": 6, "fall": 9, "autumn": 9, "winter": 12}  # first month
_QUALIFIER = "in|of|during|since|before|after|until|from|by|through"


def _count(text: str) -> tuple[int, int]:
    """The (fewest, most) a count means: "3" is (3, 3), "a few" is (2, 4)."""
    return (int(text), int(text)) if text.isdigit() else _COUNTS[" ".join(text.split())]


def _month_number(name: str) -> int:
    return int(name) if name.isdigit() else [full[:3] for full in _FULL_MONTHS].index(name[:3]) + 1


def _day_word(m: re.Match[str], today: date) -> Span:
    offsets = {"yesterday": -1, "last night": -1, "tomorrow": 1, "the day before yesterday": -2}
    return _unit("day", today + timedelta(days=offsets.get(" ".join(m[0].split()), 0)))


def _ago(m: re.Match[str], today: date) -> Span:
    (fewest, most), unit = _count(m[1]), m[2]
    return _unit(unit, _back(today, unit, most))[0], _unit(unit, _back(today, unit, fewest))[1]


def _past(m: re.Match[str], today: date) -> Span:
    """A rolling window: the N units before the question day, plus that day."""
    return _back(today, m[2], _count(m[1])[1]), today + timedelta(days=1)


def _relative_unit(m: re.Match[str], today: date) -> Span:
    if m[1] == "past":  # "the past week" rolls; "last week" is the calendar week
        return _back(today, m[2], 1), today + timedelta(days=1)
    ahead = {"last": -1, "previous": -1, "this": 0, "current": 0, "next": 1}[m[1]]
    return _unit(m[2], _back(today, m[2], -ahead))


def _before_last(m: re.Match[str], today: date) -> Span:
    if m[1] == "weekend":
        return _weekend_of(today - timedelta(weeks=2))
    return _unit(m[1], _back(today, m[1], 2))


def _weekend(m: re.Match[str], today: date) -> Span:
    previous = m[1] in ("last", "past", "previous") or (m[1] != "this" and today.weekday() < 5)
    return _weekend_of(today - timedelta(weeks=previous))


def _weekday(m: re.Match[str], today: date) -> Span:
    wanted = _WEEKDAYS.index(m[2])
    if m[1] == "this":
        return _unit("day", _unit("week", today)[0] + timedelta(days=wanted))
    back = (today.weekday() - wanted) % 7
    return _unit("day", today - timedelta(days=back or (7 if m[1] in ("last", "past", "previous") else 0)))


def _date(m: re.Match[str], today: date) -> Span:
    """A day by number or name; without a year, the latest one on or before today."""
    month, day = _month_number(m["month"]), int(m["day"])
    if not m["year"]:
        year = today.year - ((month, day) > (today.month, today.day))
    else:
        year = int(m["year"]) + (2000 if len(m["year"]) == 2 else 0)
    return _unit("day", date(year, month, day))  # "February 30" raises and is skipped


def _nth(m: re.Match[str], today: date) -> Span:
    """"On the 5th": this month's if it has come, else last month's."""
    day, first = int(m[1]), today.replace(day=1)
    return _unit("day", (first if day <= today.day else _months_later(first, -1)).replace(day=day))


def _named_month(m: re.Match[str], today: date) -> Span | None:
    q, rel = m["q"] or "", m["rel"] or ""
    if not (q or m["part"] or m["year"] or rel):
        return None  # a bare "May" or "march" is too often a verb
    if m["month"] not in _FULL_MONTHS and not m["year"]:
        return None  # "a photo of Jan" is as likely a person
    month = _month_number(m["month"])
    if m["year"]:
        year = int(m["year"])
    elif rel or q == "this":
        year = today.year - (rel == "last")
    else:  # the latest such month; "last May" must be before the current month
        year = today.year - (month > today.month or (month == today.month and q == "last"))
    return _month(year, month, m["part"])


def _season(m: re.Match[str], today: date) -> Span | None:
    q = m["q"] or ""
    if not (q or m["year"]):
        return None  # "summer dress", "did I fall"
    years = [int(m["year"])] if m["year"] else [today.year - back for back in range(3)]
    starts = [date(year, _SEASONS[m["season"]], 1) for year in years]
    spans = [(start, _months_later(start, 3)) for start in starts]
    if m["year"]:
        return spans[0]
    if q == "this":
        return next((s for s in spans if s[0] <= today < s[1]), spans[0])
    if q in ("last", "past"):
        return next(s for s in spans if s[1] <= today)
    return next(s for s in spans if s[0] <= today)


def _year(m: re.Match[str], today: date) -> Span:
    return _unit("year", date(int(m[1]), 1, 1))


def _recent(m: re.Match[str], today: date) -> Span:
    return today - timedelta(days=30), today + timedelta(days=1)


Handler = Callable[[re.Match[str], date], "Span | None"]
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?\b"
_YEAR = r"(?P<year>\d{4})\b"

# Order is priority: the first pattern that matches with a date wins, so the specific come first.
# A space stands for any run of spaces; the text is lower case, punctuation turned to spaces.
_PATTERNS: list[tuple[str, Handler]] = [
    (r"\b(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})\b", _date),
    (r"\b(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{4}|\d{2})\b", _date),  # US order: month/day/year
    (rf"\b(?P<month>{_MONTH}) {_DAY}(?: (?:of )?{_YEAR})?", _date),
    (rf"\b{_DAY} (?:of )?(?P<month>{_MONTH})\b(?: {_YEAR})?", _date),
    (r"\bon the (\d{1,2})(?:st|nd|rd|th)\b(?! (?:time|floor|place|row|grade|page|try|attempt)\b)", _nth),
    (r"\b(the day before yesterday|yesterday|today|tonight|tomorrow|last night|this (?:morning|afternoon|evening))\b",
     _day_word),
    (rf"\b{_NUM} {_UNIT} ago\b", _ago),
    (rf"\b(?:past|last|previous) {_NUM} {_UNIT}\b", _past),
    (r"\bthe (week|weekend|month|year) before last\b", _before_last),
    (r"\b(last|past|previous|this|over the|on the|during the) weekend\b", _weekend),
    (rf"\b(last|past|previous|this|on|since|by) ({'|'.join(_WEEKDAYS)})\b", _weekday),
    (rf"\b(?:(?P<q>{_QUALIFIER}|last|this|past) (?:the )?)?(?P<season>spring|summer|fall|autumn|winter)\b"
     rf"(?: (?:of )?{_YEAR})?", _season),
    (rf"\b(?:(?P<q>{_QUALIFIER}|last|this) )?(?:(?P<part>early|mid|late)[ -]*)?(?P<month>{_MONTH})\b"
     rf"(?: (?:of )?(?:{_YEAR}|(?P<rel>last|this) year\b))?", _named_month),
    (r"\b(last|previous|past|this|current|next) (week|month|year)\b", _relative_unit),
    (rf"\b(?:{_QUALIFIER}) (?:the year )?(\d{{4}})\b", _year),
    (r"\b(recently|lately)\b", _recent),
]
_TABLE = [(re.compile(p.replace(" ", r"\s+")), h) for p, h in _PATTERNS]
# Does any pattern start here? One match instead of sixteen at each of the many places _bounded
# tries; names dropped, as one regex cannot repeat a group name.
_UNNAMED = [re.sub(r"\(\?P<\w+>", "(?:", pattern.pattern) for pattern, _ in _TABLE]
_ANY = re.compile("|".join(f"(?:{pattern})" for pattern in _UNNAMED))

# "since X", "before X": bounded by X on one side. "The day before yesterday" is no bound.
# The tail is a lookahead so that "look after the kids since May" still finds "since May".
_BOUND = re.compile(r"(?<!day )\b(since|before|after|until|till|prior\s+to)(?=\s+(\w+(?:\s+\w+){0,3}))")
# "between X and Y" is read in two steps, not by one "between\s+(.+?)\s+and\s+(.+)": that lazy span
# retried "\s+and" at every character up to the end of the text, quadratic in a long question.
_BETWEEN = re.compile(r"\bbetween\s+")
# The "and" after X. The lookbehind lets "\s+" start only at the head of a run of spaces, so each
# run is walked once, not once per space; "(?=\S)" wants Y to start right after the spaces.
_AND = re.compile(r"(?<!\s)\s+and\s+(?=\S)")
_HOW_LONG = re.compile(  # "how many days ago", "how long has it been since"
    r"\bhow\s+(?:many\s+(?:day|week|month|year)s|long)\b(?:\s+\w+){0,4}?\s+"
    r"(?:ago|passed|elapsed|between|since|before|after)\b"
)


def _safe(handler: Handler, m: re.Match[str], today: date) -> Span | None:
    try:
        span = handler(m, today)
    except (ValueError, OverflowError):  # "February 30", month 13, 9999-12-31: not a usable date
        return None
    return span if span and span[0].year in _YEARS and span[1].year in _YEARS else None


def _match_at(text: str, pos: int, today: date) -> tuple[Span, int] | None:
    """A date expression starting exactly at ``pos``: its span and where it ends."""
    if not _ANY.match(text, pos):
        return None
    for pattern, handler in _TABLE:
        if (m := pattern.match(text, pos)) and (span := _safe(handler, m, today)):
            return span, m.end()
    return None


def _reading(question: str, span: Span, start: int, end: int) -> TimeReading:
    expression = " ".join(question[start:end].split())
    first, after = (datetime.combine(d, time(), tzinfo=timezone.utc) for d in span)
    return TimeReading(TimeRange(first, after, expression), expression, "range")


def _word_before(text: str, pos: int) -> str:
    """The word that spaces separate from ``pos`` ("" if none), found by walking back from ``pos``.

    Walking back, rather than searching ``text[:pos]``, keeps a question with many bound words linear.
    """
    end = pos
    while end > 0 and text[end - 1].isspace():
        end -= 1
    start = end
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):  # what "\w" matches
        start -= 1
    return text[start:end] if end < pos else ""


def _between(question: str, text: str, today: date) -> TimeReading | None:
    """"between X and Y", both dates: from X's first day to Y's last. Only the first "between" counts."""
    if not (m := _BETWEEN.search(text)) or not (first := _match_at(text, m.end(), today)):
        return None
    # X is at least one character, so the "and" is searched from one past its start
    if not (sep := _AND.search(text, m.end() + 1)) or not (second := _match_at(text, sep.end(), today)):
        return None
    span = min(first[0][0], second[0][0]), max(first[0][1], second[0][1])
    return _reading(question, span, m.start(), second[1])


def _bounded(question: str, text: str, today: date) -> TimeReading | None:
    """A reading from "since/before/after/until X"; cannot-tell when X is an event."""
    event = None
    opening = len(text) - len(text.lstrip())  # where the first word starts
    for m in _BOUND.finditer(text):
        word, previous = " ".join(m[1].split()), _word_before(text, m.start())
        if word == "after" and previous.startswith("look"):
            continue  # "look after my dog"
        found = _match_at(text, m.start(2), today) or _match_at(text, m.start(), today)
        if not found:
            causal = word == "since" and m.start() == opening  # "Since I'm vegan, ..."
            before_last = m[2].startswith("last") and previous in ("week", "weekend", "month", "year")
            if not (causal or before_last or event):  # "the week before last" is in the table
                phrase = re.split(r"[^\w\s'’]", question[m.start() : m.end(2)])[0]  # up to a comma
                event = " ".join(phrase.split())
            continue
        (start, end), stop = found
        tomorrow = today + timedelta(days=1)
        if word == "since":
            span = start, max(tomorrow, end)
        elif word == "after":
            span = end, max(tomorrow, end + timedelta(days=1))
        else:  # before, until, prior to: open towards the past
            span = min(today, start) - timedelta(days=_OPEN_PAST), end if word in ("until", "till") else start
        return _reading(question, span, m.start(), stop)
    return TimeReading(None, event, "cannot-tell") if event else None


def parse_time(question: str, question_date: datetime) -> TimeReading:
    """Read the time a question refers to, relative to when it is asked; rules only, no model."""
    today = _utc(question_date).date()
    # Lower case, punctuation and apostrophes as spaces, one character for one, so spans map back.
    text = "".join(c.lower()[0] if c.isalnum() or c in "/-" else " " for c in question)
    if reading := _between(question, text, today) or _bounded(question, text, today):
        return reading
    for pattern, handler in _TABLE:
        for m in pattern.finditer(text):
            if span := _safe(handler, m, today):
                return _reading(question, span, m.start(), m.end())
    if how := _HOW_LONG.search(text):  # "how many days ago did I ...": the event's date is the unknown
        return TimeReading(None, " ".join(question[how.start() : how.end()].split()), "cannot-tell")
    return TimeReading(None, None, "none")


# ---- LLM fallback ---------------------------------------------------------------------------

_SYSTEM = (
    "You find the dates a question refers to. Reply with JSON only: "
    '{"start": "YYYY-MM-DD" or null, "end": "YYYY-MM-DD" or null}, both days inclusive. '
    "Use null for both when the question does not let you tell the dates."
)
_EXAMPLES = [  # (today, question, reply)
    ("2023-05-20 (Saturday)", "Where did I go hiking the weekend before last?",
     '{"start": "2023-05-06", "end": "2023-05-07"}'),
    ("2023-05-20 (Saturday)", "What did I buy before my trip to Hawaii?", '{"start": null, "end": null}'),
    ("2023-03-02 (Thursday)", "Which friends did I see around Christmas?",
     '{"start": "2022-12-22", "end": "2022-12-28"}'),
    ("2023-08-10 (Thursday)", "What have I read since the start of July?",
     '{"start": "2023-07-01", "end": "2023-08-10"}'),
]


def _ask(today: str, question: str) -> str:
    return f"Today is {today}.\nQuestion: {question}"


def _json_dates(reply: str) -> tuple[date | None, date | None]:
    """Start and end from the first JSON object in ``reply``; (None, None) when it is not usable."""
    # The first "{" to the next "}" (what "\{.*?\}" found, without its quadratic retries on many "{").
    # Models like to wrap JSON in prose or fences.
    opening = reply.find("{")
    closing = reply.find("}", opening) if opening >= 0 else -1
    try:
        data = json.loads(reply[opening : closing + 1]) if closing >= 0 else {}
        return _day(data.get("start")), _day(data.get("end"))
    except (ValueError, AttributeError):  # bad JSON, not an object, not a date
        return None, None


def _day(value: object) -> date | None:
    # Only the asked-for spelling: Python 3.11 would also take 20230403 or "2023-W14-1".
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        raise ValueError(f"not a YYYY-MM-DD date: {value!r}")
    day = date.fromisoformat(value.strip())
    if day.year not in _YEARS:
        raise ValueError(f"{value!r} is outside {_YEARS}")
    return day


def llm_time_reading(llm: LLM, question: str, question_date: datetime) -> TimeReading:
    """Ask ``llm`` for the dates; a reply that is not a usable range is "cannot-tell", never an error.

    Errors of the model itself (``LLMError``) propagate.
    """
    today = _utc(question_date).date()
    messages = [{"role": "system", "content": _SYSTEM}]
    for day, asked, reply in _EXAMPLES:
        messages += [{"role": "user", "content": _ask(day, asked)}, {"role": "assistant", "content": reply}]
    messages.append({"role": "user", "content": _ask(f"{today} ({today:%A})", question)})
    start, end = _json_dates(llm.generate(messages, max_new_tokens=60).text)
    cannot = TimeReading(None, None, "cannot-tell")
    if start is None and end is None:
        return cannot
    end = (end or today) + timedelta(days=1)  # inclusive in the prompt, exclusive in a TimeRange
    start = start or min(today, end) - timedelta(days=_OPEN_PAST)
    if end <= start:
        return cannot
    return _reading(question.strip(), (start, end), 0, len(question.strip()))


def read_time(question: str, question_date: datetime, llm: LLM | None = None) -> TimeReading:
    """Rules first; the LLM only when they find a time they cannot date, and only a range it gives wins."""
    reading = parse_time(question, question_date)
    if reading.status != "cannot-tell" or llm is None:
        return reading
    guess = llm_time_reading(llm, question, question_date)
    if guess.range is None:
        return reading
    expression = reading.expression or guess.range.expression
    return TimeReading(replace(guess.range, expression=expression), expression, "range")


def front_in_range(items: Sequence[T], moments: Sequence[datetime | None], window: TimeRange) -> list[T]:
    """In-range items first, then the rest, each group in its given order; nothing is dropped."""
    if len(items) != len(moments):
        raise InputError("moments", f"expected one moment per item ({len(items)}), got {len(moments)}")
    inside = [moment is not None and window.contains(moment) for moment in moments]
    return [x for x, hit in zip(items, inside) if hit] + [x for x, hit in zip(items, inside) if not hit]
