"""Score retrievers on a LongMemEval-schema file: per-question JSONL, then a summary (report.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from memagent import Embedder

from .budget import TokenCounter, budget_scores, char_counter
from .load import Item
from .metrics import gold, score_ranking
from .retrieval import RETRIEVERS, HaystackIndex


@dataclass
class RetrievalRun:
    """What a run scored, and what it left out and why."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped_abstention: int = 0
    skipped_no_user_evidence: int = 0
    seconds: float = 0.0
    texts_embedded: int = 0  # embedding-cache misses: the work a warm run saves
    texts_cached: int = 0
    # retriever -> (seconds spent indexing, records indexed, values the key expander processed)
    index_cost: dict[str, tuple[float, int, int]] = field(default_factory=dict)
    budget_tokenizer: str = ""  # what counted the tokens of evidence_recall@B (budget.py)


def has_user_evidence(item: Item) -> bool:
    """The official corpus marks evidence only on user turns of sessions whose id holds 'answer'."""
    return any(
        "answer" in sid and any(t.role == "user" and t.has_answer for t in session)
        for sid, session in zip(item.haystack_session_ids, item.haystack_sessions)
    )


def run_retrieval(
    items: Sequence[Item],
    retrievers: Sequence[str],
    *,
    cache: Path,
    embedder: Embedder,
    out: Path | None = None,
    counter: TokenCounter | None = None,
) -> RetrievalRun:
    """Rank every item's haystack with every retriever; ``out`` receives one JSON line per pair.

    ``counter`` counts the reader tokens of evidence_recall@B (default: chars/4)."""
    unknown = [r for r in retrievers if r not in RETRIEVERS]
    if unknown:
        raise ValueError(f"retriever: unknown {unknown}; choose from {sorted(RETRIEVERS)}")
    indexes = [HaystackIndex(name, RETRIEVERS[name], cache, embedder) for name in retrievers]
    counter = counter or char_counter()
    run, started = RetrievalRun(budget_tokenizer=counter.name), time.perf_counter()
    sink = out.open("w", encoding="utf-8") if out else None
    try:
        for item in tqdm(items, desc="questions", unit="q"):
            if item.is_abstention:  # no evidence to find: the official code skips them too
                run.skipped_abstention += 1
                continue
            if not has_user_evidence(item):  # evidence only in assistant turns: nothing in the corpus
                run.skipped_no_user_evidence += 1
                continue
            for index in indexes:
                corpus, ranking, units = index.rank_units(item)
                wanted = gold(corpus.ids)
                row = {
                    "question_id": item.question_id,
                    "question_type": item.question_type,
                    "retriever": index.name,
                    "level": corpus.level,
                    "metrics": score_ranking(ranking, corpus.ids, corpus.level),
                    "ranked_ids": [corpus.ids[i] for i in ranking[:50]],
                    # over the full ranking, not cut at 50: what fits a reader's token budget
                    "budget": budget_scores(units, (i for i, c in enumerate(corpus.ids) if c in wanted), counter),
                }
                run.rows.append(row)
                if sink:
                    sink.write(json.dumps(row) + "\n")
    finally:
        if sink:
            sink.close()
    run.seconds = time.perf_counter() - started
    for index in indexes:
        expander = index.memory.expander
        run.index_cost[index.name] = (index.index_seconds, index.records_indexed, getattr(expander, "computed", 0))
        run.texts_embedded += getattr(index.memory.embedder, "misses", 0)
        run.texts_cached += getattr(index.memory.embedder, "hits", 0)
    return run
