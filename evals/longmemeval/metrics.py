"""Retrieval metrics exactly as LongMemEval's official code defines them (src/retrieval/eval_utils.py).

Rankings are lists of indices into ``corpus_ids`` (a full permutation, best first). Two details
matter for reproducing the official numbers:
- the DCG discount is 1 at rank 1 and log2(rank) from rank 2 on, so ranks 1 and 2 weigh the same;
- turn-level rankings are scored at session level by stripping the turn suffix from ids and
  widening k until k distinct sessions are covered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

KS = (1, 3, 5, 10, 30, 50)


def dcg(relevances: Sequence[float], k: int) -> float:
    top = list(relevances[:k])
    if not top:
        return 0.0
    return top[0] + sum(rel / math.log2(rank) for rank, rel in enumerate(top[1:], start=2))


def ndcg(rankings: Sequence[int], correct: set[str], corpus_ids: Sequence[str], k: int) -> float:
    relevances = [1.0 if doc in correct else 0.0 for doc in corpus_ids]
    ideal = dcg(sorted(relevances, reverse=True), k)
    if ideal == 0:
        return 0.0
    return dcg([relevances[i] for i in rankings[:k]], k) / ideal


def evaluate(rankings: Sequence[int], correct: set[str], corpus_ids: Sequence[str], k: int) -> dict[str, float]:
    recalled = {corpus_ids[i] for i in rankings[:k]}
    return {
        f"recall_any@{k}": float(any(doc in recalled for doc in correct)),
        f"recall_all@{k}": float(all(doc in recalled for doc in correct)),
        f"ndcg_any@{k}": ndcg(rankings, correct, corpus_ids, k),
    }


def strip_turn(corpus_id: str) -> str:
    """'answer_ab12_3_7' (turn 7 of session answer_ab12_3) -> 'answer_ab12_3'."""
    return "_".join(corpus_id.split("_")[:-1])


def evaluate_turns_as_sessions(
    rankings: Sequence[int], correct: set[str], corpus_ids: Sequence[str], k: int
) -> dict[str, float]:
    sessions = [strip_turn(c) for c in corpus_ids]
    effective_k = k
    while effective_k <= len(sessions) and len({sessions[i] for i in rankings[:effective_k]}) < k:
        effective_k += 1
    scores = evaluate(rankings, {strip_turn(c) for c in correct}, sessions, effective_k)
    return {name.replace(f"@{effective_k}", f"@{k}"): value for name, value in scores.items()}


def gold(corpus_ids: Sequence[str]) -> set[str]:
    """The official gold rule: an id containing 'answer' is evidence."""
    return {c for c in corpus_ids if "answer" in c}


def score_ranking(rankings: Sequence[int], corpus_ids: Sequence[str], level: str) -> dict[str, dict[str, float]]:
    """All metrics for one ranking: ``level`` is the corpus unit, 'session' or 'turn'."""
    correct = gold(corpus_ids)
    scores: dict[str, dict[str, float]] = {"session": {}, "turn": {}}
    for k in KS:
        scores[level].update(evaluate(rankings, correct, corpus_ids, k))
        if level == "turn":
            scores["session"].update(evaluate_turns_as_sessions(rankings, correct, corpus_ids, k))
    return {name: values for name, values in scores.items() if values}
