"""The read path: rankings (dense, BM25, session votes) → reciprocal rank fusion → time re-rank.

Which rankings run is ``RetrievalConfig.retrievers``:
- ``dense``: the query's embedding against the keys' (Chroma, filtered by scope in the database),
  without the names most of the user's records mention (``common_names``: a transcript's speakers);
- ``lexical``: BM25 over the user's keys;
- ``session``: session context for rounds (LongMemEval §5): BM25 over whole sessions, and each
  round ranking also votes for sessions by its best round; every round takes its session's votes,
  its own ranks weighted by ``round_weight`` (context a single round lacks).
With ``salience_weight`` above 0, the records ranked are also ranked by their salience (SirLLM's
token surprisal, decayed by session age: ``memagent.decay.salience``) and that ranking is fused too,
at that weight: a prior for what was worth remembering. Then, with ``time_aware``, records dated in
the range the question names move to the front. With ``rerank`` set, a cross-encoder reads the
question with each of the fused top ``rerank_depth`` and reorders them (``retrieve/rerank.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Literal

import numpy as np

from memagent._time import to_epoch, utc_now
from memagent.config import RetrievalConfig
from memagent.embedding import Embedder
from memagent.llm.base import LLM
from memagent.retrieve.dense import dense_ranking, without_common_names
from memagent.retrieve.fuse import reciprocal_rank_fusion
from memagent.retrieve.lexical import BM25Index, LexicalIndexes, session_ranks, sessions_of_ranking
from memagent.retrieve.rerank import PairScorer, rerank, short_rounds
from memagent.retrieve.temporal import TimeRange, read_time
from memagent.schema import Hit, MemoryRecord, Scope, SearchFilters
from memagent.store.chroma import ChromaStore, where_clause


class HybridRetriever:
    """Finds a scope's best records for a query. ``time_llm`` gives the model that reads a time range
    the rules cannot (called only with ``time_llm`` on in the config)."""

    def __init__(
        self,
        store: ChromaStore,
        embedder: Embedder,
        lexical: LexicalIndexes,
        config: RetrievalConfig,
        *,
        granularity: Literal["round", "session"] = "round",
        time_llm: Callable[[], LLM] | None = None,
        salience: Callable[[Sequence[MemoryRecord]], list[float]] | None = None,
        reranker: Callable[[], PairScorer] | None = None,
    ) -> None:
        self.store, self.embedder, self.lexical, self.config = store, embedder, lexical, config
        self.granularity, self.time_llm, self.salience, self.reranker = granularity, time_llm, salience, reranker

    def search(self, query: str, scope: Scope, filters: SearchFilters, k: int, asked: datetime | None) -> list[Hit]:
        """The ``k`` best hits; ``filters`` already end at ``asked`` (the question date) when one is given."""
        # the user's BM25 index, fetched once: each fetch reads the store's version token
        index = self.lexical.for_user(scope.user_id) if {"lexical", "session"} & set(self.config.retrievers) else None
        rankings, weights = self.rankings(query, scope, filters, max(self.config.candidates, k), index)
        if self.config.salience_weight > 0 and self.salience is not None and rankings:
            rankings["salience"] = self._by_salience(rankings, scope)
            weights = {**weights, "salience": self.config.salience_weight}  # unnamed rankings weigh 1
        window = self.time_window(query, asked or utc_now()) if self.config.time_aware else None
        # records dated inside the range the question names go first; none are dropped
        first = None if window is None else self._inside(rankings, scope, window, {} if index is None else index.times)
        reranking = self.config.rerank != "none" and self.reranker is not None
        top = max(k, self.config.rerank_depth) if reranking else k
        fused = reciprocal_rank_fusion(rankings, self.config.rrf_k, weights, top=top, first=first)
        # only the records returned are fetched; every ranking already kept to the scope, and fetching
        # by id alone is 6x faster in Chroma than with a where clause: the scope is checked again here
        records = {r.id: r for r in self.store.get(scope.user_id, [i for i, _, _ in fused]) if scope.holds(r)}
        if reranking:
            fused = self._rerank(query, [f for f in fused if f[0] in records], records)[:k]
        # 'time' in why marks a hit that the question's time range moved forward
        return [Hit(record=records[i], score=score, why={**why, "time": 1} if first and first(i) else why)
                for i, score, why in fused if i in records]

    def rankings(
        self, query: str, scope: Scope, filters: SearchFilters, depth: int, index: BM25Index | None
    ) -> tuple[dict[str, list[str] | dict[str, int]], dict[str, float]]:
        """Every ranking the config names (name -> ids best first, or id -> tied rank), and their weights;
        ``index`` is the user's BM25 index (None when no lexical or session ranking is configured)."""
        retrievers = set(self.config.retrievers)
        where = where_clause(scope, filters)
        rankings: dict[str, list[str] | dict[str, int]] = {}
        if "dense" in retrievers:
            dense_query = query if index is None else without_common_names(query, index, self.config.common_names)
            rankings["dense"] = dense_ranking(self.store, self.embedder, dense_query, scope.user_id, where, depth)
        if index is None:
            return rankings, {}
        narrowed = filters != SearchFilters() or scope != Scope(user_id=scope.user_id)
        allowed = self.store.existing_ids_where(scope.user_id, where) if narrowed else None
        if "lexical" in retrievers:
            rankings["lexical"] = [i for i, _ in index.search(query, depth, allowed)]
        if "session" not in retrievers:
            return rankings, {}
        votes: dict[str, list[str] | dict[str, int]] = {"session": session_ranks(index, query, depth, allowed)}
        if self.granularity != "round":  # session records: their own rankings rank sessions
            return {**rankings, **votes}, {}
        # each round ranking votes for sessions by its best round; its own ranks count less
        for name, ranking in rankings.items():
            votes[f"{name}@session"] = sessions_of_ranking(index, list(ranking), allowed)
        return {**rankings, **votes}, dict.fromkeys(rankings, self.config.round_weight)

    def _rerank(self, query: str, fused: list[tuple[str, float, dict[str, int]]],
                records: dict[str, MemoryRecord]) -> list[tuple[str, float, dict[str, int]]]:
        """The fused top ``rerank_depth`` in the cross-encoder's order (``retrieve/rerank.py``), each with
        ``why["rerank"]``, its rank by the cross-encoder's logit; the rest after, as fused. Scores stay the
        fusion's: a logit beside the fused scores of the rest would mix two scales in one list."""
        assert self.reranker is not None
        head, tail = fused[: self.config.rerank_depth], fused[self.config.rerank_depth :]
        ids = [i for i, _, _ in head]
        texts = [records[i].value for i in ids]
        logits = self.reranker().scores(query, texts)
        head_sessions = self.config.rerank_sessions if self.granularity == "round" and short_rounds(texts) else 0
        order = rerank(ids, [records[i].session_id for i in ids], [float(x) for x in logits],
                       head_sessions=head_sessions, k=self.config.rrf_k)
        fused_of = {i: (score, why) for i, score, why in head}
        rank_of = {ids[n]: place for place, n in enumerate(np.argsort(-logits, kind="stable"), 1)}
        return [(i, fused_of[i][0], {**fused_of[i][1], "rerank": rank_of[i]}) for i in order] + tail

    def time_window(self, query: str, asked: datetime) -> TimeRange | None:
        """The range the question names, widened by ``time_window_days``; None when it names none."""
        llm = self.time_llm() if self.config.time_llm and self.time_llm is not None else None
        reading = read_time(query, asked, llm)
        return None if reading.range is None else reading.range.widened(self.config.time_window_days)

    def _by_salience(self, rankings: dict[str, list[str] | dict[str, int]], scope: Scope) -> list[str]:
        """The records the other rankings found, most salient first (ages among these records)."""
        assert self.salience is not None
        records = self.store.get(scope.user_id, list(dict.fromkeys(i for r in rankings.values() for i in r)))
        scores = self.salience(records)
        return [r.id for _s, r in sorted(zip(scores, records, strict=True), key=lambda p: -p[0])]

    def _inside(
        self, rankings: dict[str, list[str] | dict[str, int]], scope: Scope, window: TimeRange,
        known: dict[str, float],
    ) -> Callable[[str], bool]:
        """Whether a ranked record is dated inside ``window``. Times come from the user's BM25 index
        (``known``) when it holds them, so no record is fetched for this."""
        ranked = {i for ranking in rankings.values() for i in ranking}
        missing = [i for i in ranked if i not in known]
        fetched = {r.id: to_epoch(r.timestamp) for r in self.store.get(scope.user_id, missing)} if missing else {}
        start, end = to_epoch(window.start), to_epoch(window.end)
        inside = {i for i in ranked if start <= known.get(i, fetched.get(i, float("nan"))) < end}
        return inside.__contains__
