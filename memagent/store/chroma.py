"""Chroma as the record store: an embedded folder by default, a Chroma server by URL.

One collection holds every user's records; each query carries a ``where`` on ``user_id``, so
isolation is enforced by the database, not by filtering results afterwards. A second collection
keeps the history of updates and deletes, so a server deployment needs nothing but Chroma.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np

from memagent._time import from_epoch, to_epoch
from memagent.config import StoreConfig
from memagent.schema import HistoryEntry, MemoryRecord, Scope, SearchFilters

_META_PREFIX = "meta_"  # user metadata keys are prefixed so they can never shadow ours
Where = dict[str, Any]


def make_client(config: StoreConfig) -> Any:
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False, allow_reset=False)
    if config.url:
        url = urlparse(config.url)
        return chromadb.HttpClient(
            host=url.hostname or "localhost",
            port=url.port or (443 if url.scheme == "https" else 8000),
            ssl=url.scheme == "https",
            settings=settings,
        )
    config.path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(config.path), settings=settings)


def where_clause(scope: Scope, filters: SearchFilters | None = None) -> Where:
    """The Chroma filter for one scope's records (a user, maybe one agent or run), narrowed by ``filters``."""
    clauses: list[Where] = [{"user_id": scope.user_id}]
    clauses += [{name: value} for name, value in (("agent_id", scope.agent_id), ("run_id", scope.run_id)) if value]
    if filters is not None:
        if filters.session_ids is not None:
            clauses.append({"session_id": {"$in": list(filters.session_ids)}})
        if filters.start is not None:
            clauses.append({"timestamp": {"$gte": to_epoch(filters.start)}})
        if filters.end is not None:
            clauses.append({"timestamp": {"$lte": to_epoch(filters.end)}})
        for name, value in filters.metadata.items():
            clauses.append({_META_PREFIX + name: value})
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def record_to_metadata(record: MemoryRecord) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "user_id": record.user_id,
        "session_id": record.session_id,
        "round_index": record.round_index,
        "value": record.value,
        "timestamp": to_epoch(record.timestamp),
        "recorded_at": to_epoch(record.recorded_at),
    }
    meta.update({name: value for name, value in (("agent_id", record.agent_id), ("run_id", record.run_id)) if value})
    meta.update({_META_PREFIX + k: v for k, v in record.metadata.items()})
    return meta


def record_from_chroma(record_id: str, key: str, meta: Mapping[str, Any]) -> MemoryRecord:
    return MemoryRecord(
        id=record_id,
        user_id=meta["user_id"],
        session_id=meta["session_id"],
        agent_id=meta.get("agent_id"),
        run_id=meta.get("run_id"),
        round_index=int(meta["round_index"]),
        value=meta["value"],
        key=key,
        timestamp=from_epoch(meta["timestamp"]),
        recorded_at=from_epoch(meta["recorded_at"]),
        metadata={k[len(_META_PREFIX) :]: v for k, v in meta.items() if k.startswith(_META_PREFIX)},
    )


class ChromaStore:
    def __init__(self, config: StoreConfig, client: Any | None = None) -> None:
        self.client = client if client is not None else make_client(config)
        self.records = self.client.get_or_create_collection(config.collection, metadata={"hnsw:space": "cosine"})
        self.history_log = self.client.get_or_create_collection(config.collection + "_history")
        self.versions = self.client.get_or_create_collection(config.collection + "_versions")
        self._batch = int(self.client.get_max_batch_size())

    # -- records -------------------------------------------------------------------------
    def upsert(
        self, records: Sequence[MemoryRecord], embeddings: np.ndarray, *, replace: bool = False
    ) -> dict[str, str]:
        """Write records. Chroma merges metadata on upsert, so ``replace`` first clears the user
        metadata keys a stored version has and the new one drops (an update must not keep them)."""
        for start in range(0, len(records), self._batch):
            part = records[start : start + self._batch]
            metadatas = [record_to_metadata(r) for r in part]
            if replace:
                stored = self.records.get(ids=[r.id for r in part], include=["metadatas"])
                old_keys = {i: set(m) for i, m in zip(stored["ids"], stored["metadatas"])}
                for record, meta in zip(part, metadatas):
                    dropped = {k for k in old_keys.get(record.id, ()) if k.startswith(_META_PREFIX) and k not in meta}
                    meta.update(dict.fromkeys(dropped))  # None deletes a key in Chroma
            self.records.upsert(
                ids=[r.id for r in part],
                documents=[r.key for r in part],
                metadatas=metadatas,
                embeddings=embeddings[start : start + self._batch],
            )
        return self.bump({r.user_id for r in records})

    def get(self, ids: Sequence[str], where: Where | None = None) -> list[MemoryRecord]:
        """Records by id, in the order asked, skipping ids that do not exist (or fail ``where``)."""
        if not ids:
            return []
        found = self.records.get(ids=list(ids), where=where, include=["documents", "metadatas"])
        by_id = {
            i: record_from_chroma(i, doc, meta)
            for i, doc, meta in zip(found["ids"], found["documents"], found["metadatas"])
        }
        return [by_id[i] for i in ids if i in by_id]

    def find(self, where: Where) -> list[MemoryRecord]:
        """Every record matching ``where``, oldest conversation first."""
        found = self.records.get(where=where, include=["documents", "metadatas"])
        records = [
            record_from_chroma(i, doc, meta)
            for i, doc, meta in zip(found["ids"], found["documents"], found["metadatas"])
        ]
        return sorted(records, key=lambda r: (r.timestamp, r.session_id, r.round_index))

    def existing_ids_where(self, where: Where) -> set[str]:
        return set(self.records.get(where=where, include=[])["ids"])

    def keys(self, where: Where) -> list[tuple[str, str, str]]:
        """(id, key, session id) of every record matching ``where``: what the lexical index is built from."""
        found = self.records.get(where=where, include=["documents", "metadatas"])
        rows = zip(found["ids"], found["documents"], found["metadatas"])
        return [(i, key, str(meta["session_id"])) for i, key, meta in rows]

    def nearest(self, embedding: np.ndarray, where: Where, n: int) -> list[tuple[str, float]]:
        """Ids of the ``n`` records nearest to ``embedding`` among those matching ``where``."""
        result = self.records.query(query_embeddings=[embedding], n_results=n, where=where, include=["distances"])
        return list(zip(result["ids"][0], result["distances"][0]))

    def delete(self, ids: Sequence[str], user_id: str) -> None:
        if ids:
            self.records.delete(ids=list(ids))
            self.bump({user_id})

    def count(self) -> int:
        return int(self.records.count())

    # -- versions: each user's records change together with a new version token --------------
    def bump(self, user_ids: set[str]) -> dict[str, str]:
        """Mark users' records as changed, so every process's lexical index sees it needs a rebuild."""
        versions = {user_id: uuid.uuid4().hex for user_id in sorted(user_ids)}
        if versions:
            self.versions.upsert(
                ids=list(versions),
                embeddings=np.zeros((len(versions), 1), dtype=np.float32),  # looked up by id, never searched
                metadatas=[{"version": v} for v in versions.values()],
            )
        return versions

    def version(self, user_id: str) -> str | None:
        found = self.versions.get(ids=[user_id], include=["metadatas"])
        return found["metadatas"][0]["version"] if found["ids"] else None

    # -- history -------------------------------------------------------------------------
    def log(self, entries: Sequence[HistoryEntry]) -> None:
        if not entries:
            return
        self.history_log.add(
            ids=[f"{e.record_id}:{to_epoch(e.changed_at)!r}:{e.event}" for e in entries],
            embeddings=np.zeros((len(entries), 1), dtype=np.float32),  # history is looked up, never searched
            metadatas=[
                {
                    "record_id": e.record_id,
                    "user_id": e.previous.user_id,
                    "changed_at": to_epoch(e.changed_at),
                    "entry": e.model_dump_json(),
                }
                for e in entries
            ],
        )

    def history(self, record_id: str, user_id: str | None = None) -> list[HistoryEntry]:
        where: Where = {"record_id": record_id}
        if user_id is not None:
            where = {"$and": [where, {"user_id": user_id}]}
        found = self.history_log.get(where=where, include=["metadatas"])
        entries = [HistoryEntry.model_validate(json.loads(m["entry"])) for m in found["metadatas"]]
        return sorted(entries, key=lambda e: e.changed_at)

    def forget_history(self, user_id: str, record_ids: Sequence[str] | None = None) -> None:
        """Drop the user's history: all of it, or that of ``record_ids`` only."""
        if record_ids is None:
            self.history_log.delete(where={"user_id": user_id})
            return
        for start in range(0, len(record_ids), self._batch):
            part = list(record_ids[start : start + self._batch])
            self.history_log.delete(where={"$and": [{"user_id": user_id}, {"record_id": {"$in": part}}]})
