"""The write path: rounds become records (ids, dedup, session growth), keys are expanded, and the
records go to the store and to the user's BM25 index together.

Rules kept here, not in the facade:
- a round already stored in its session (same scope, same value) is skipped, so adding twice is
  harmless, also within one call;
- round indices continue after the session's highest (deletes leave gaps, so not a count);
- with ``granularity="session"`` a session is one record that grows by the rounds it lacks; it
  keeps the time the session started, and its old version goes to history;
- ids hash the scope, session and value, so the same exchange of two users (or agents) are two
  records; the parts are JSON-encoded before hashing, so no two different tuples share an id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Literal

from memagent._time import to_epoch, utc_now
from memagent.embedding import Embedder
from memagent.index.decompose import Round
from memagent.index.keys import Expander, build_key, key_for_text, merge_key
from memagent.retrieve.lexical import LexicalIndexes
from memagent.schema import HistoryEntry, MemoryRecord, MetadataValue, Scope, SearchFilters
from memagent.store.chroma import ChromaStore, where_clause


def record_id(scope: Scope, session_id: str, value: str) -> str:
    """Stable id from content: the same exchange added twice to a session is stored once."""
    parts = [scope.user_id, scope.agent_id, scope.run_id, session_id, value]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


class RecordWriter:
    """Stores sessions as records. ``expander`` is called for the key expander on first need (its model
    may be slow to load), and returns None when keys are not expanded."""

    def __init__(
        self,
        store: ChromaStore,
        embedder: Embedder,
        lexical: LexicalIndexes,
        expander: Callable[[], Expander | None],
        *,
        granularity: Literal["round", "session"] = "round",
        key: Literal["value", "user"] = "value",
    ) -> None:
        self.store, self.embedder, self.lexical = store, embedder, lexical
        self.expander, self.granularity, self.key = expander, granularity, key

    def add(
        self, rounds: Sequence[Round], scope: Scope, session_id: str, when: datetime, extra: dict[str, MetadataValue]
    ) -> list[MemoryRecord]:
        """Store the rounds of one session that are not stored yet; returns the records written."""
        if self.granularity == "session":
            return self._grow_session(rounds, scope, session_id, when, extra)
        stored = self._session_records(scope, session_id)
        known_values = {r.value for r in stored}
        taken_ids = {r.id for r in stored}
        next_index = max((r.round_index for r in stored), default=-1) + 1
        base = MemoryRecord(id="-", user_id=scope.user_id, agent_id=scope.agent_id, run_id=scope.run_id,
                            session_id=session_id, round_index=0, value="-", key="-", timestamp=when,
                            recorded_at=utc_now(), metadata=extra)
        records: list[MemoryRecord] = []
        for round_ in rounds:
            if round_.value in known_values:
                continue
            rid = record_id(scope, session_id, round_.value)
            if rid in taken_ids:  # an updated record kept this id for another value
                rid = record_id(scope, session_id, f"{round_.value}\0{next_index}")
            records.append(base.model_copy(update={"id": rid, "round_index": next_index, "value": round_.value,
                                                   "key": build_key(round_, self.key)}))
            known_values.add(round_.value)
            taken_ids.add(rid)
            next_index += 1
        keys = self.expanded_keys([r.key for r in records], [r.value for r in records])
        records = [r.model_copy(update={"key": k}) for r, k in zip(records, keys)]
        self.write(records)
        return records

    def _grow_session(
        self, rounds: Sequence[Round], scope: Scope, session_id: str, when: datetime, extra: dict[str, MetadataValue]
    ) -> list[MemoryRecord]:
        """Session granularity: one record per session, which grows by the rounds it does not hold yet."""
        stored = self._session_records(scope, session_id)
        old = stored[0] if stored else None
        # compare whole rounds (blocks between newlines), so a round that is a prefix of another is still new
        held = f"\n{old.value}\n" if old else ""
        fresh = [r for r in dict.fromkeys(rounds) if f"\n{r.value}\n" not in held]
        if not fresh:
            return []
        value = "\n".join(r.value for r in fresh)
        key = "\n".join(build_key(r, self.key) for r in fresh)
        if old is not None:
            value, key = f"{old.value}\n{value}", f"{old.key}\n{key}"
            when, extra = old.timestamp, {**old.metadata, **extra}  # a session happened when it started
        if self.expander() is not None:  # the grown session is expanded as a whole, its expansion first
            key = self.expanded_keys([key_for_text(value, self.key)], [value])[0]
        record = MemoryRecord(
            id=old.id if old is not None else record_id(scope, session_id, ""),
            user_id=scope.user_id, agent_id=scope.agent_id, run_id=scope.run_id, session_id=session_id,
            round_index=0, value=value, key=key, timestamp=when, recorded_at=utc_now(), metadata=extra,
        )
        self.write([record], replace=old is not None)
        if old is not None:
            entry = HistoryEntry(record_id=old.id, event="update", previous=old, changed_at=record.recorded_at)
            self.store.log([entry])
        return [record]

    def _session_records(self, scope: Scope, session_id: str) -> list[MemoryRecord]:
        """The session's records in exactly this scope (a search scope would also take other agents' records)."""
        where = where_clause(Scope(user_id=scope.user_id), SearchFilters(session_ids=[session_id]))
        exact = (scope.agent_id, scope.run_id)
        return [r for r in self.store.find(scope.user_id, where) if (r.agent_id, r.run_id) == exact]

    def key_of(self, value: str) -> str:
        """The key of a value given as text (an update), expanded like an added round's."""
        return self.expanded_keys([key_for_text(value, self.key)], [value])[0]

    def expanded_keys(self, keys: Sequence[str], values: Sequence[str]) -> list[str]:
        expander = self.expander() if keys else None
        if expander is None:
            return list(keys)
        return [merge_key(k, e) for k, e in zip(keys, expander.expand(values))]

    def write(self, records: Sequence[MemoryRecord], *, replace: bool = False) -> None:
        """Embed and store ``records``; ``replace`` for records that may exist (their old metadata goes)."""
        if not records:
            return
        users = {r.user_id for r in records}
        before = {u: self.store.version(u) for u in users}
        after = self.store.upsert(records, self.embedder.embed_documents([r.key for r in records]), replace=replace)
        if replace:
            return  # the new version makes each process rebuild its lexical index
        for user_id in users:
            mine = [r for r in records if r.user_id == user_id]
            self.lexical.extend(user_id, [r.id for r in mine], [r.key for r in mine], [r.session_id for r in mine],
                                [to_epoch(r.timestamp) for r in mine], before[user_id], after[user_id])
