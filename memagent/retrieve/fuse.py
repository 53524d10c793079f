"""Reciprocal rank fusion (Cormack, Clarke & Büttcher 2009): score = sum of 1 / (k + rank).

Ranks, not raw scores, are fused, because cosine distances and BM25 scores live on different
scales. k damps the weight of the very top ranks; 60 is the paper's value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[str] | Mapping[str, int]],
    k: int = 60,
    weights: Mapping[str, float] | None = None,
) -> list[tuple[str, float, dict[str, int]]]:
    """Fuse named rankings of ids into (id, score, {ranking name: 1-based rank}), best first.

    A ranking is a list of ids, best first, or a mapping id -> rank where ids may tie (every round
    of one session shares the session's rank). ``weights`` scales a ranking's votes (1 when not
    named). Ties keep the order in which ids were first seen, so fusion is deterministic.
    """
    scores: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    for name, ranking in rankings.items():
        weight = 1.0 if weights is None else weights.get(name, 1.0)
        ranked = ranking.items() if isinstance(ranking, Mapping) else ((item, n) for n, item in enumerate(ranking, 1))
        for item, rank in ranked:
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
            ranks.setdefault(item, {})[name] = rank
    order = sorted(scores, key=lambda item: -scores[item])
    return [(item, scores[item], ranks[item]) for item in order]
