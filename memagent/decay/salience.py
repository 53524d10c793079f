"""Salience of stored memories: SirLLM's token surprisal and decay carried from the cache to the store.

In a live chat SirLLM keeps the tokens a model finds surprising and lets old ones fade. For stored
records the unit is a record instead of a token: a record's salience is the surprisal of its text
under a small LM (SmolLM2-135M by default: one forward pass per record, cached by content), summed
over its tokens (its information; ``measure="mean"``: per token), multiplied by ``decay`` once for
every session the user has had since the record's. The mean favours short exclamations ("Wow!!"),
whose few tokens are all unexpected; on LoCoMo it kept fewer evidence rounds than chance. Compaction
forgets the least salient records under a budget.

What carries over: surprisal marks content the model could not predict (names, numbers, plans)
over small talk, and decay favours the recent. What does not: the cache's tokens are only ever
read by the same model in order, while records are found by retrieval and read out of order, so
there is no start-token (attention sink) to keep, and forgetting is for good (history keeps the
forgotten versions), not a per-turn eviction.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

from memagent.index.keys import Expander
from memagent.llm.base import LLM
from memagent.schema import MemoryRecord

Order = Literal["salience", "recency", "random"]


Measure = Literal["total", "mean"]


def surprisal(pieces: Sequence[tuple[str, float]], measure: Measure = "total") -> float:
    """A text's surprisal in nats: the sum of −log p over its tokens (its information), or their mean;
    the first token (predicted by nothing) left out; 0 for one token."""
    scores = [-logprob for _piece, logprob in pieces[1:]]
    if measure == "mean":
        return sum(scores) / len(scores) if scores else 0.0
    return sum(scores)


class SalienceScorer(Expander):
    """A text's surprisal (``measure``), written as text so that ``CachedExpander`` caches it by content."""

    def __init__(self, llm: LLM, max_chars: int = 2000, measure: Measure = "total") -> None:
        if measure not in ("total", "mean"):
            raise ValueError(f"measure: {measure!r} is not 'total' or 'mean'")
        self.llm, self.max_chars, self.measure = llm, max_chars, measure
        self.name = f"salience-{measure}:{llm.name}"

    def expand(self, values: Sequence[str]) -> list[str]:
        return [f"{surprisal(self.llm.text_logprobs(v[: self.max_chars]), self.measure):.6f}" for v in values]


def session_ages(records: Sequence[MemoryRecord]) -> dict[str, int]:
    """How many of the user's sessions came after each session (0: the latest), by their last timestamp."""
    last: dict[str, float] = {}
    for record in records:
        last[record.session_id] = max(last.get(record.session_id, float("-inf")), record.timestamp.timestamp())
    newest_first = sorted(last, key=lambda s: (-last[s], s))
    return {session: age for age, session in enumerate(newest_first)}


def decayed(records: Sequence[MemoryRecord], saliences: Sequence[float], decay: float) -> list[float]:
    """Each record's salience times ``decay`` to the power of its session's age."""
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay: must be in (0, 1], not {decay}")
    ages = session_ages(records)
    return [s * decay ** ages[r.session_id] for r, s in zip(records, saliences, strict=True)]


def keep_count(total: int, keep: int | float) -> int:
    """``keep`` as a number of records: a count, or a fraction (0 < keep < 1) of ``total``."""
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or keep < 0:
        raise ValueError(f"keep: a count of records or a fraction in (0, 1), not {keep!r}")
    if isinstance(keep, float) and keep < 1:
        return round(total * keep)
    return min(total, int(keep))


def to_forget(records: Sequence[MemoryRecord], keep: int, by: Order, scores: Sequence[float] | None = None,
              seed: int = 0) -> list[MemoryRecord]:
    """The records to forget so that ``keep`` remain: the least salient (``scores``), the oldest, or at random."""
    if by == "salience":
        if scores is None:
            raise ValueError("by='salience' needs the records' scores")
        order = sorted(range(len(records)), key=lambda n: (-scores[n], -records[n].timestamp.timestamp(), n))
    elif by == "recency":
        order = sorted(range(len(records)), key=lambda n: (-records[n].timestamp.timestamp(),
                                                           -records[n].round_index, n))
    elif by == "random":
        order = list(range(len(records)))
        random.Random(seed).shuffle(order)
    else:
        raise ValueError(f"by: {by!r} is not 'salience', 'recency' or 'random'")
    return [records[n] for n in sorted(order[keep:])]
