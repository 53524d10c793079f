"""Reciprocal rank fusion (Cormack, Clarke & Büttcher 2009): score = sum of 1 / (k + rank).

Ranks, not raw scores, are fused, because cosine distances and BM25 scores live on different
scales. k damps the weight of the very top ranks; 60 is the paper's value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def reciprocal_rank_fusion(rankings: Mapping[str, Sequence[str]], k: int = 60) -> list[tuple[str, float, dict[str, int]]]:
    """Fuse named rankings of ids into (id, score, {ranking name: 1-based rank}), best first.

    Ties keep the order in which ids were first seen, so fusion is deterministic.
    """
    scores: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    for name, ranking in rankings.items():
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
            ranks.setdefault(item, {})[name] = rank
    order = sorted(scores, key=lambda item: -scores[item])
    return [(item, scores[item], ranks[item]) for item in order]
