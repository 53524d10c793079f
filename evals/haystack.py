"""Scalable haystacks: one question's evidence sessions placed among filler sessions.

LongMemEval builds its S and M histories the same way ("freely scalable"): the sessions that hold
the answer are kept and distractor sessions are added around them until the history reaches a
token budget. This module does that for any item in the official LongMemEval schema, so the
history length can be swept (say 10k, 100k, 1M tokens) with the evidence unchanged:

    python -m memagent_evals.haystack --data items.json --pool items.json --tokens 100000 --seed 0 \
        --out haystack_100k.json

Evidence sessions keep their ids, turns and dates (temporal questions are computed from those
dates); they land at seeded random positions among the fillers, and the filler sessions get dates
between their neighbours, so dates increase with position.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import re
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

Session = list[dict]
_Key = tuple[tuple[str, str], ...]  # a session's content, see _content_key

_TOKEN = re.compile(r"\w+|[^\w\s]")
_LME_DATE = re.compile(r"(\d{4})/(\d{2})/(\d{2}) \(\w{3}\) (\d{2}):(\d{2})")
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # fixed: %a follows the locale
_EPOCH = datetime(2000, 1, 1)
_MINUTE = timedelta(minutes=1)
DEFAULT_SPAN = timedelta(weeks=4)  # default history length before the question
QUESTION_GAP = timedelta(hours=1)  # the last filler is at least this long before the question
LEAD_IN = timedelta(days=1)  # room kept for fillers before the first evidence session


def count_tokens(text: str) -> int:
    """Approximate token count: each run of word characters and each punctuation mark is one.

    Not a model tokenizer (none is needed, and the count never changes with a library version);
    sub-word tokenizers give somewhat more tokens on the same English text.
    """
    return len(_TOKEN.findall(text))


def session_tokens(session: Session) -> int:
    """Approximate tokens of a session: count_tokens over every turn's content."""
    return sum(count_tokens(turn.get("content", "")) for turn in session)


def format_lme_date(moment: datetime) -> str:
    """A minute-resolution time in LongMemEval's format, e.g. '2023/05/08 (Mon) 13:56'."""
    return f"{moment:%Y/%m/%d} ({_WEEKDAYS[moment.weekday()]}) {moment:%H:%M}"


def parse_lme_date(text: str) -> datetime:
    """The time written in LongMemEval's format; the weekday in parentheses is not checked."""
    match = _LME_DATE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a LongMemEval date: {text!r}")
    return datetime(*(int(part) for part in match.groups()))


def _content_key(session: Session) -> _Key:
    """What makes two sessions the same for dedup: roles and texts, not flags such as has_answer."""
    return tuple((turn.get("role", ""), turn.get("content", "")) for turn in session)


def filler_pool(items: list[dict]) -> list[Session]:
    """Non-evidence sessions of the items (ids without 'answer'), each distinct content once."""
    seen: set[_Key] = set()
    pool: list[Session] = []
    for item in items:
        for session_id, session in zip(item["haystack_session_ids"], item["haystack_sessions"]):
            key = _content_key(session)
            if "answer" in session_id or not session or key in seen:
                continue
            seen.add(key)
            pool.append(session)
    return pool


def _evidence(item: dict) -> list[tuple[datetime, str, Session]]:
    """The item's evidence sessions as (date, id, turns), oldest first, dates strictly increasing."""
    wanted = set(item["answer_session_ids"])
    found = sorted(
        (parse_lme_date(date), index, session_id, session)
        for index, (date, session_id, session) in enumerate(
            zip(item["haystack_dates"], item["haystack_session_ids"], item["haystack_sessions"]))
        if session_id in wanted)
    evidence: list[tuple[datetime, str, Session]] = []
    for moment, _, session_id, session in found:
        # Two evidence sessions in the same minute would tie; one minute apart keeps the order strict.
        if evidence and moment <= evidence[-1][0]:
            moment = evidence[-1][0] + _MINUTE
        evidence.append((moment, session_id, session))
    return evidence


def _draw_fillers(pool: list[Session], rng: random.Random, need: int, exclude: set[_Key]) -> list[Session]:
    """Pool sessions in seeded random order until they add up to at least `need` tokens."""
    drawn: list[Session] = []
    got = 0
    for index in rng.sample(range(len(pool)), len(pool)):
        if got >= need:
            break
        session = pool[index]
        size = session_tokens(session)
        # A pool copy of this item's own evidence would put the answer in twice, once unlabelled.
        if size == 0 or _content_key(session) in exclude:
            continue
        drawn.append(session)
        got += size
    if got < need:
        raise ValueError(f"the filler pool ({len(pool)} sessions) gives {got} tokens, {need} are needed")
    return drawn


def _minute(moment: datetime) -> int:
    return (moment - _EPOCH) // _MINUTE


def _gaps(evidence_minutes: list[int], first: int, last: int) -> list[tuple[int, int]]:
    """Open minute intervals for fillers: before, between and after the evidence sessions."""
    edges = [first - 1, *evidence_minutes, last + 1]
    # Clamped to the window: evidence older than `start` leaves empty gaps, not early fillers.
    clamped = [(max(low, first - 1), min(high, last + 1)) for low, high in zip(edges, edges[1:])]
    return [(low, max(low, high)) for low, high in clamped]


def _counts_per_gap(rng: random.Random, fillers: int, gaps: list[tuple[int, int]]) -> list[int]:
    """How many fillers go in each gap: evidence at uniform random positions, then fitted to room."""
    slots = sorted(rng.sample(range(fillers + len(gaps) - 1), len(gaps) - 1))
    edges = [-1, *slots, fillers + len(gaps) - 1]
    counts = [high - low - 1 for low, high in zip(edges, edges[1:])]
    room = [max(0, high - low - 1) for low, high in gaps]
    surplus = sum(max(0, count - space) for count, space in zip(counts, room))
    if surplus > sum(max(0, space - count) for count, space in zip(counts, room)):
        raise ValueError(f"{fillers} filler sessions do not fit in the time window at one per minute")
    counts = [min(count, space) for count, space in zip(counts, room)]
    # Gaps too short for their share (evidence minutes apart) pass the rest to gaps with room.
    for _ in range(surplus):
        open_gaps = [i for i, (count, space) in enumerate(zip(counts, room)) if count < space]
        counts[rng.choice(open_gaps)] += 1
    return counts


def _window(item: dict, evidence: list[tuple[datetime, str, Session]], start: str | None) -> tuple[int, int]:
    """First and last minute a filler may take."""
    last = parse_lme_date(item["question_date"]) - QUESTION_GAP
    if start is not None:
        first = parse_lme_date(start)
    else:
        first = last - DEFAULT_SPAN
        if evidence:
            first = min(first, evidence[0][0] - LEAD_IN)
    if first >= last:
        raise ValueError(f"start {start!r} is not before the question date {item['question_date']!r}")
    return _minute(first), _minute(last)


def build_haystack(item: dict, pool: list[Session], *, target_tokens: int, seed: int = 0,
                   start: str | None = None) -> dict:
    """A new item: this item's evidence sessions among pool sessions, about target_tokens in all.

    Fillers are added until the history holds at least target_tokens (count_tokens), so it ends
    below target_tokens plus the largest pool session. Filler dates fall between `start`
    (LongMemEval format; default four weeks before the question, or a day before the first
    evidence session if that is earlier) and an hour before the question date. The same inputs
    and seed give the same item; ValueError when the pool or the time window is too small.
    """
    rng = random.Random(seed)
    evidence = _evidence(item)
    have = sum(session_tokens(session) for _, _, session in evidence)
    exclude = {_content_key(session) for _, _, session in evidence}
    fillers = _draw_fillers(pool, rng, target_tokens - have, exclude)
    first, last = _window(item, evidence, start)
    gaps = _gaps([_minute(moment) for moment, _, _ in evidence], first, last)
    counts = _counts_per_gap(rng, len(fillers), gaps)
    minutes = [minute for (low, high), count in zip(gaps, counts)
               for minute in sorted(rng.sample(range(low + 1, high), count))]
    timeline = [(minute, "", session) for minute, session in zip(minutes, fillers)]
    timeline += [(_minute(moment), session_id, session) for moment, session_id, session in evidence]
    return _as_item(item, sorted(timeline, key=lambda entry: entry[0]))


def _as_item(item: dict, timeline: list[tuple[int, str, Session]]) -> dict:
    """The official schema, fields in the official order; fillers numbered by position."""
    fillers = iter(range(len(timeline)))
    return {
        "question_id": item["question_id"],
        "question_type": item["question_type"],
        "question": item["question"],
        "answer": item["answer"],
        "question_date": item["question_date"],
        "haystack_dates": [format_lme_date(_EPOCH + minute * _MINUTE) for minute, _, _ in timeline],
        "haystack_session_ids": [sid or f"filler_{next(fillers):05d}" for _, sid, _ in timeline],
        "haystack_sessions": [copy.deepcopy(session) for _, _, session in timeline],
        "answer_session_ids": list(item["answer_session_ids"]),
    }


def _load_items(path: Path) -> list[dict]:
    items = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a list of LongMemEval items")
    return items


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memagent_evals.haystack", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="LongMemEval-schema items whose evidence is kept")
    parser.add_argument("--pool", type=Path, action="append", required=True,
                        help="LongMemEval-schema items whose non-evidence sessions are fillers (repeatable)")
    parser.add_argument("--tokens", type=int, required=True, help="history length per item, in count_tokens units")
    parser.add_argument("--seed", type=int, default=0, help="item i uses seed + i")
    parser.add_argument("--start", help="earliest filler date, LongMemEval format (default: see build_haystack)")
    parser.add_argument("--out", type=Path, required=True, help="output JSON (official schema, indent=4)")
    args = parser.parse_args(argv)
    pool = filler_pool([item for path in args.pool for item in _load_items(path)])
    items = [build_haystack(item, pool, target_tokens=args.tokens, seed=args.seed + index, start=args.start)
             for index, item in enumerate(_load_items(args.data))]
    with args.out.open("w", encoding="utf-8") as handle:
        json.dump(items, handle, indent=4)
    sessions = sum(len(item["haystack_sessions"]) for item in items)
    print(f"{len(items)} items, {sessions} sessions, pool of {len(pool)} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
