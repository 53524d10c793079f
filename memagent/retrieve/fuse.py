"""Reciprocal rank fusion (Cormack, Clarke & Büttcher 2009): score = sum of 1 / (k + rank).

Ranks, not raw scores, are fused, because cosine distances and BM25 scores live on different
scales. k damps the weight of the very top ranks; 60 is the paper's value.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[str] | Mapping[str, int]],
    k: int = 60,
    weights: Mapping[str, float] | None = None,
    *,
    top: int | None = None,
    first: Callable[[str], bool] | None = None,
) -> list[tuple[str, float, dict[str, int]]]:
    """Fuse named rankings of ids into (id, score, {ranking name: 1-based rank}), best first.

    A ranking is a list of ids, best first, or a mapping id -> rank where ids may tie (every round
    of one session shares the session's rank). ``weights`` scales a ranking's votes (1 when not
    named). Ties keep the order in which ids were first seen, so fusion is deterministic.
    ``first`` puts the ids it accepts ahead of the rest, each group in fused order (time-aware
    expansion); ``top`` keeps the best ``top`` only, and then only those are sorted and described
    (a fused list holds thousands of ids at 100k records, the caller reads a few).
    """
    ranks = {name: r if isinstance(r, Mapping) else {item: n for n, item in enumerate(r, 1)}
             for name, r in rankings.items()}
    scores: dict[str, float] = {}
    for name, ranked in ranks.items():
        weight = 1.0 if weights is None else weights.get(name, 1.0)
        for item, rank in ranked.items():
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    groups = [list(scores)] if first is None else [[i for i in scores if first(i)], [i for i in scores if not first(i)]]
    order: list[str] = []
    for group in groups:
        wanted = None if top is None else top - len(order)
        # both keep equal scores in first-seen order (sorted is stable; nlargest is sorted()[:n])
        order += (sorted(group, key=scores.__getitem__, reverse=True) if wanted is None
                  else heapq.nlargest(wanted, group, key=scores.__getitem__))
    return [(item, scores[item], {name: r[item] for name, r in ranks.items() if item in r}) for item in order]
