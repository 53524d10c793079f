"""Reading a date range from a question takes linear time, however hostile the question.

The old "between (.+?) and (.+)" and the prefix searches behind "since/after X" were quadratic:
a 64 KB question took seconds. Each input below aims at one pattern of memagent.retrieve.temporal.
A linear parse of 64 KB takes tens of milliseconds, so 0.5 s leaves a wide margin on a busy machine.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timezone

import pytest

from memagent.llm.scripted import ScriptedLLM
from memagent.retrieve.temporal import llm_time_reading, parse_time

WED = datetime(2023, 5, 17, 15, 30, tzinfo=timezone.utc)
SIZE = 64_000
LIMIT_S = 0.5


def _fill(unit: str) -> str:
    return (unit * (SIZE // len(unit) + 1))[:SIZE]


def _mix(seed: int) -> str:
    """Random words the patterns look for, so many patterns half-match everywhere."""
    words = (
        "between and since before after until till prior to look week weekend month year last past how many "
        "days long ago in of the may march 5 5th 2023 12/25/22 2023-05-05 early mid late summer on this a few "
        "couple saturday - /"
    ).split()
    rng = random.Random(seed)
    return " ".join(rng.choice(words) for _ in range(SIZE // 3))[:SIZE]


ADVERSARIAL = {
    "between-repeated": _fill("between "),
    "between-date-then-spaces": "between may 1" + " " * (SIZE - 13),  # old: 10 s
    "between-and-repeated": _fill("between 1 and "),
    "between-spaces-and": "between " + " " * (SIZE - 14) + " and x",
    "after-repeated": _fill("after "),  # old: a search of the whole prefix per "after"
    "look-after-repeated": _fill("look after "),
    "since-repeated": _fill("since "),
    "before-last-repeated": _fill("week before last "),
    "prior-to-repeated": _fill("prior  to "),
    "how-long-repeated": _fill("how long "),
    "how-long-then-spaces": "how many days" + " " * (SIZE - 13),
    "in-repeated": _fill("in "),
    "early-dashes": "early" + "-" * (SIZE - 5),
    "digits": "1" * SIZE,
    "letters": "a" * SIZE,
    "spaces": " " * SIZE,
    "punctuation": _fill("?!,. "),
    "mix-1": _mix(1),
    "mix-2": _mix(2),
}


@pytest.mark.parametrize("question", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_parse_time_is_fast_on_64k_adversarial_questions(question: str) -> None:
    assert len(question) == SIZE
    started = time.perf_counter()
    reading = parse_time(question, WED)
    elapsed = time.perf_counter() - started
    assert reading.status in ("range", "none", "cannot-tell")
    assert elapsed < LIMIT_S, f"{elapsed:.2f} s"


def test_llm_reply_with_many_braces_is_fast() -> None:
    started = time.perf_counter()
    reading = llm_time_reading(ScriptedLLM("{" * SIZE), "What did I buy before my trip?", WED)
    elapsed = time.perf_counter() - started
    assert reading.status == "cannot-tell"
    assert elapsed < LIMIT_S, f"{elapsed:.2f} s"


def test_between_still_reads_after_a_long_gap() -> None:
    """The rewrite bounds time, not meaning: the first date, any words, then "and" and the second."""
    question = "How many days were there between May 1" + " or so" * 2000 + " and May 10?"
    reading = parse_time(question, WED)
    assert reading.range is not None
    assert (reading.range.start.day, reading.range.end.day) == (1, 11)
