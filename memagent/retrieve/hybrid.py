"""The read path: rankings (dense, BM25, session votes) → reciprocal rank fusion → time re-rank.

Which rankings run is ``RetrievalConfig.retrievers``:
- ``dense``: the query's embedding against the keys' (Chroma, filtered by scope in the database);
- ``lexical``: BM25 over the user's keys;
- ``session``: session context for rounds (LongMemEval §5): BM25 over whole sessions, and each
  round ranking also votes for sessions by its best round; every round takes its session's votes,
  its own ranks weighted by ``round_weight`` (context a single round lacks).
Then, with ``time_aware``, records dated in the range the question names move to the front.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from memagent._time import from_epoch, to_epoch, utc_now
from memagent.config import RetrievalConfig
from memagent.embedding import Embedder
from memagent.llm.base import LLM
from memagent.retrieve.dense import dense_ranking
from memagent.retrieve.fuse import reciprocal_rank_fusion
from memagent.retrieve.lexical import LexicalIndexes, session_ranks, sessions_of_ranking
from memagent.retrieve.temporal import TimeRange, front_in_range, read_time
from memagent.schema import Hit, Scope, SearchFilters
from memagent.store.chroma import ChromaStore, where_clause

Fused = tuple[str, float, dict[str, int]]  # (record id, fused score, {ranking name: rank})


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
    ) -> None:
        self.store, self.embedder, self.lexical, self.config = store, embedder, lexical, config
        self.granularity, self.time_llm = granularity, time_llm

    def search(self, query: str, scope: Scope, filters: SearchFilters, k: int, asked: datetime | None) -> list[Hit]:
        """The ``k`` best hits; ``filters`` already end at ``asked`` (the question date) when one is given."""
        fused = self.fuse(query, scope, filters, max(self.config.candidates, k))
        window = self.time_window(query, asked or utc_now()) if self.config.time_aware else None
        if window is not None:
            fused = self._front_in_window(fused, scope, window)
        hits: list[Hit] = []
        # only the records returned are fetched (a fused list holds every round of the top sessions:
        # thousands of ids at 100k rounds); ids gone since ranking are skipped, the next take their place
        for start in range(0, len(fused), k):
            part = fused[start : start + k]
            # every ranking already kept to the scope; fetching by id alone is 6x faster in Chroma than
            # with the where clause, and the scope is checked once more here
            records = {r.id: r for r in self.store.get(scope.user_id, [i for i, _, _ in part]) if scope.holds(r)}
            for i, score, why in part:
                if i in records:
                    moved = window is not None and window.contains(records[i].timestamp)
                    # 'time' in why marks a hit that the question's time range moved forward
                    hits.append(Hit(record=records[i], score=score, why={**why, "time": 1} if moved else why))
            if len(hits) >= k:
                break
        return hits[:k]

    def fuse(self, query: str, scope: Scope, filters: SearchFilters, depth: int) -> list[Fused]:
        """Every ranking the config names, fused: (id, score, {ranking: rank}), best first."""
        retrievers = set(self.config.retrievers)
        where = where_clause(scope, filters)
        rankings: dict[str, list[str]] = {}
        if "dense" in retrievers:
            rankings["dense"] = dense_ranking(self.store, self.embedder, query, scope.user_id, where, depth)
        if not {"lexical", "session"} & retrievers:
            return reciprocal_rank_fusion(rankings, self.config.rrf_k)
        index = self.lexical.for_user(scope.user_id)  # once: each call checks the store's version
        narrowed = filters != SearchFilters() or scope != Scope(user_id=scope.user_id)
        allowed = self.store.existing_ids_where(scope.user_id, where) if narrowed else None
        if "lexical" in retrievers:
            rankings["lexical"] = [i for i, _ in index.search(query, depth, allowed)]
        votes: dict[str, dict[str, int]] = {}
        weights: dict[str, float] = {}
        if "session" in retrievers:
            votes["session"] = session_ranks(index, query, depth, allowed)
            if self.granularity == "round":  # session records: their own rankings rank sessions
                # each round ranking votes for sessions by their best round; its own ranks count less
                votes |= {f"{name}@session": sessions_of_ranking(index, ranking, allowed)
                          for name, ranking in rankings.items()}
                weights = dict.fromkeys(rankings, self.config.round_weight)
        return reciprocal_rank_fusion({**rankings, **votes}, self.config.rrf_k, weights)

    def time_window(self, query: str, asked: datetime) -> TimeRange | None:
        """The range the question names, widened by ``time_window_days``; None when it names none."""
        llm = self.time_llm() if self.config.time_llm and self.time_llm is not None else None
        reading = read_time(query, asked, llm)
        return None if reading.range is None else reading.range.widened(self.config.time_window_days)

    def _front_in_window(self, fused: list[Fused], scope: Scope, window: TimeRange) -> list[Fused]:
        """Records dated inside ``window`` move to the front, each group in fused order; none are dropped.

        Times come from the user's BM25 index when it holds them, so no record is fetched for this.
        """
        indexed = bool({"lexical", "session"} & set(self.config.retrievers))
        known = self.lexical.for_user(scope.user_id).times if indexed else {}
        missing = [i for i, _, _ in fused if i not in known]
        fetched = {r.id: to_epoch(r.timestamp) for r in self.store.get(scope.user_id, missing)} if missing else {}
        moments = [from_epoch(known[i]) if i in known else from_epoch(fetched[i]) if i in fetched else None
                   for i, _, _ in fused]
        return front_in_range(fused, moments, window)
