"""Chroma as the record store: an embedded folder by default, a Chroma server by URL.

Each user's records live in a collection of their own (``<collection>-u-<sha256 of the user id>``),
so isolation is physical: a query can only ever see one user's records, and it needs no ``where``
on the user, which made Chroma's query 15x slower (58 ms against 4 ms at 10k records, one user).
Two shared collections keep the history of updates and deletes and each user's version token, so a
server deployment needs nothing but Chroma. A store written by memagent 0.1 (every user in one
collection) is moved into per-user collections the first time it is opened.

Several processes on one embedded folder: chromadb's embedded client keeps each collection's vector
index (HNSW) in the memory of the process that loaded it, and only that process's own writes reach
it; metadata and documents live in sqlite, which every process reads fresh. Another process's write
leaves this process's index behind: a filtered query then meets ids the index lacks (chromadb raises
"Error finding id"), or ranks a record the other process updated by its old embedding. So every
write of records here holds a lock file in the folder (``memagent.lock``) and leaves a new token in
it; before each vector query the store reads that token (a few microseconds), and a token this
process did not leave means another process wrote: the folder's client is opened afresh (chromadb's
cached system for the path is dropped) and its indexes load again on first use. Writers that leave no
token (an older memagent, chromadb used directly) are only noticed when a query fails: the folder is
then reopened once and the query retried, and ``StaleStoreError`` says to use a server. Many writers
belong on a Chroma server (``chroma run``, ``MemoryConfig(store={"url": ...})``): one process holds
the index for all its clients.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from memagent._time import from_epoch, to_epoch
from memagent.config import StoreConfig
from memagent.errors import MemagentError
from memagent.schema import HistoryEntry, MemoryRecord, Scope, SearchFilters

if sys.platform != "win32":
    import fcntl

_META_PREFIX = "meta_"  # user metadata keys are prefixed so they can never shadow ours
Where = dict[str, Any]
# Chroma keeps every write in a log (sqlite) until the collection's vector index is saved, every
# ``sync_threshold`` records, and writes slow down as the log grows: with many users under the default
# 1,000 the log reaches users x 1,000 rows (1,000 users, 50 records an add: 7 s per 10k records at
# first, 17 s by 100k; with 50, 8-11 s throughout). The version token written by every add gains as
# much (17.6 ms a write, 9.4 ms with 50). Set when a collection is made; those made earlier keep theirs.
_SAVE_OFTEN = {"hnsw:sync_threshold": 50, "hnsw:batch_size": 50}


def make_client(config: StoreConfig) -> Any:
    import chromadb

    if config.url:
        url = urlparse(config.url)
        return chromadb.HttpClient(
            host=url.hostname or "localhost",
            port=url.port or (443 if url.scheme == "https" else 8000),
            ssl=url.scheme == "https",
            settings=_settings(),
        )
    return _folder_client(config.path)


def _settings() -> Any:
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False, allow_reset=False)


def _folder_client(path: Path) -> Any:
    import chromadb

    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=_settings())


class StaleStoreError(MemagentError):
    """The embedded folder's vector index could not be brought in step with other processes' writes."""


def server_advice(path: Path | str) -> str:
    return (
        f"several processes seem to write to the embedded store at {path}, which chromadb's embedded client does "
        f"not support; run a Chroma server (chroma run --path {path} --host 127.0.0.1 --port 8000) and give every "
        "process MemoryConfig(store={'url': 'http://127.0.0.1:8000'}) (memagent --url) instead of the folder"
    )


_LOCK_FILE = "memagent.lock"  # writers hold it (flock) and leave their token in it
_TOKEN_BYTES = 32


class _Folder:
    """An embedded folder as this process sees it. chromadb shares one system (and so one in-memory
    vector index per collection) among all clients of a path in a process, so every store on the
    path shares this too.

    ``token`` is the token in the lock file when the open client's indexes were loaded, or the one
    this process left after its last write: the indexes hold every write up to it, and any other
    token in the file means another process wrote since.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()  # opening, and a write with its tokens, one thread at a time
        self.generation = 0  # bumped by each open; a store reconnects its collections when it moved
        self.client: Any = None
        self.names: set[str] = set()  # the collections this process's stores use here
        self.token = b""
        self._held: str | None = None  # the file lock this process holds: "write", "read" or none
        self._system: Any = None  # chromadb's system behind ``client``, and its count of clients
        self._clients: int | None = None
        self._retired: Any = None  # the system the last open replaced; the next open stops it
        path.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        weakref.finalize(self, os.close, self._fd)

    def attach(self, names: set[str]) -> None:
        """A store uses ``names`` here: open the folder (again, when it brings collections not loaded yet)."""
        with self.lock:
            new = names - self.names
            self.names |= names
            if self.client is None or new:
                self.open()

    def load(self, collection: Any) -> None:
        """Load a collection's index now, under a shared hold of the lock file (see ``open``)."""
        with self.lock, self._reading():
            collection.count()  # chromadb loads a collection's indexes on its first read

    def read_token(self) -> bytes:
        return os.pread(self._fd, _TOKEN_BYTES, 0)

    def _leave_token(self) -> bytes:
        token = uuid.uuid4().hex.encode()
        os.pwrite(self._fd, token, 0)
        return token

    def sync(self) -> None:
        """Reopen when another process wrote since the indexes were loaded (or last written by us)."""
        if self.read_token() == self.token:
            return
        with self.lock:  # a write of ours in another thread may hold it; its token is ours once it ends
            if self.read_token() != self.token:
                self.open()

    def open(self) -> None:
        """A fresh client, its collections' indexes loaded from disk under a shared hold of the lock
        file: no writer (each holds it alone) is halfway through a write, so the indexes hold exactly
        the writes up to the token read then."""
        from chromadb.api.shared_system_client import SharedSystemClient

        key = str(self.path)
        systems = getattr(SharedSystemClient, "_identifier_to_system", None)
        clients = getattr(SharedSystemClient, "_identifier_to_refcount", None)
        if not isinstance(systems, dict) or not isinstance(clients, dict):  # not the chromadb we know
            if self.client is not None:  # a reopen would hand back the same stale system
                raise StaleStoreError("this chromadb cannot be reopened by memagent: " + server_advice(self.path))
            systems, clients = {}, {}
        with self.lock, self._reading():
            self.token = self.read_token()
            # drop chromadb's cached system for the path, so the new client loads the indexes from disk
            old, old_clients = systems.pop(key, None), clients.pop(key, None)
            only_ours = old is not None and old is self._system and old_clients == self._clients
            self.client = _folder_client(self.path)
            self._system, self._clients = systems.get(key), clients.get(key)
            for collection in self.client.list_collections():
                if collection.name in self.names:
                    collection.count()  # chromadb loads a collection's indexes on its first read
            self.generation += 1
            # The old system is not stopped now: another thread may be reading through it. The one
            # the previous open replaced is: every store has moved on since (each call follows the
            # generation), and stopping it frees its indexes now rather than when the GC finds them.
            if self._retired is not None:
                with contextlib.suppress(Exception):  # freeing memory early is all this is for
                    self._retired.stop()
            self._retired = old if only_ours else None  # not when a client of someone else's uses it

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A shared hold of the lock file, unless this thread holds it already."""
        if self._held is not None:
            yield
            return
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        self._held = "read"
        try:
            yield
        finally:
            self._held = None
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the lock file alone (and the thread lock) for a write. The indexes are brought in step
        first; a token is left before the write (a writer killed halfway still shows others a change)
        and after it: that last one is this process's own."""
        with self.lock:
            if self._held == "write":  # nested
                yield
                return
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._held = "write"
            try:
                self.sync()
                self._leave_token()
                try:
                    yield
                finally:
                    self.token = self._leave_token()
            finally:
                self._held = None
                fcntl.flock(self._fd, fcntl.LOCK_UN)


_FOLDERS: weakref.WeakValueDictionary[str, _Folder] = weakref.WeakValueDictionary()
_FOLDERS_LOCK = threading.Lock()


def _shared_folder(path: Path) -> _Folder | None:
    """This process's ``_Folder`` for ``path``; None where the lock file cannot be made (a read-only
    folder, or Windows: no flock), and the store works as a plain embedded client."""
    if sys.platform == "win32":
        return None
    key = str(Path(path).resolve())
    with _FOLDERS_LOCK:
        folder = _FOLDERS.get(key)
        if folder is None:
            try:
                folder = _Folder(Path(key))
            except OSError:
                return None
            _FOLDERS[key] = folder
        return folder


if hasattr(os, "register_at_fork"):  # a forked child opens folders afresh: its own lock file, its own client
    os.register_at_fork(after_in_child=_FOLDERS.clear)


def where_clause(scope: Scope, filters: SearchFilters | None = None) -> Where | None:
    """The Chroma filter inside the user's collection: agent and run when the scope names them,
    narrowed by ``filters``; None when nothing narrows (the collection is the user)."""
    clauses: list[Where] = [{name: value} for name, value in (("agent_id", scope.agent_id), ("run_id", scope.run_id))
                            if value]
    if filters is not None:
        if filters.session_ids is not None:
            clauses.append({"session_id": {"$in": list(filters.session_ids)}})
        if filters.start is not None:
            clauses.append({"timestamp": {"$gte": to_epoch(filters.start)}})
        if filters.end is not None:
            clauses.append({"timestamp": {"$lte": to_epoch(filters.end)}})
        for name, value in filters.metadata.items():
            clauses.append({_META_PREFIX + name: value})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def collection_name(base: str, user_id: str) -> str:
    """A user's collection: Chroma names allow [a-zA-Z0-9._-] only, so the user id is hashed."""
    return f"{base}-u-{hashlib.sha256(user_id.encode()).hexdigest()[:32]}"


def _optional(key: str) -> bool:
    """Metadata keys a record may lack: user metadata, agent and run."""
    return key.startswith(_META_PREFIX) or key in ("agent_id", "run_id")


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
    """Records in one collection per user; history and version tokens in two shared collections."""

    def __init__(self, config: StoreConfig, client: Any | None = None, *, embedder: str | None = None) -> None:
        """``embedder``: the name of the model whose vectors this store keeps; a user's collection records
        it when made, and one made by another model is refused (its vectors would not be comparable)."""
        import chromadb.errors

        self._internal_error: type[Exception] = chromadb.errors.InternalError
        self._embedder = embedder
        self._name = config.collection
        embedded = client is None and not config.url
        self._folder = _shared_folder(config.path) if embedded else None
        # the folder of an embedded store (ours, or a PersistentClient passed in), for error messages
        self._path: str | None = str(config.path) if embedded else _persist_directory(client)
        self._generation = -1
        self._users: dict[str, Any] = {}  # user id -> that user's collection, on the current client
        self._lock = threading.Lock()
        if self._folder is not None:
            self._folder.attach({self._name + "_history", self._name + "_versions"})
            self._follow()
        else:
            self._connect(client if client is not None else make_client(config), -1)
        self._batch = int(self.client.get_max_batch_size())
        self._move_shared_collection()

    def _connect(self, client: Any, generation: int) -> None:
        self.client = client
        self._history_log = client.get_or_create_collection(self._name + "_history", metadata=_SAVE_OFTEN)
        self._versions = client.get_or_create_collection(self._name + "_versions", metadata=_SAVE_OFTEN)
        self._users = {}
        self._generation = generation

    def _follow(self) -> None:
        """Use the folder's current client: this or another store on the folder may have reopened it."""
        folder = self._folder
        if folder is not None and folder.generation != self._generation:
            with folder.lock:
                self._connect(folder.client, folder.generation)

    def records(self, user_id: str) -> Any:
        """The user's collection (made on first use; on a folder its index loads under the lock file's
        shared hold, so no writer of another process is halfway through a write)."""
        self._follow()
        collection = self._users.get(user_id)
        if collection is None:
            with self._lock:
                metadata: dict[str, Any] = {"hnsw:space": "cosine", "user_id": user_id, **_SAVE_OFTEN}
                if self._embedder is not None:
                    metadata["embedder"] = self._embedder
                name = collection_name(self._name, user_id)
                collection = self.client.get_or_create_collection(name, metadata=metadata)
                made_by = (collection.metadata or {}).get("embedder")  # None: made before stores recorded it
                if self._embedder is not None and made_by is not None and made_by != self._embedder:
                    raise MemagentError(
                        f"embedder.model: {user_id!r}'s memories in this store were embedded by {made_by!r}, and "
                        f"{self._embedder!r} vectors cannot be compared with them; use {made_by!r} for this store "
                        "(or export the user, and import into a store made with the new model)"
                    )
                if self._folder is not None:
                    self._folder.load(collection)
                self._users[user_id] = collection
        return collection

    def user_collections(self) -> list[Any]:
        """Every user's collection in this store."""
        self._follow()
        prefix = f"{self._name}-u-"
        return [self.client.get_collection(c.name) for c in self.client.list_collections() if c.name.startswith(prefix)]

    @property
    def history_log(self) -> Any:
        self._follow()
        return self._history_log

    @property
    def versions(self) -> Any:
        self._follow()
        return self._versions

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Around every write of records: on a folder, the folder's write lock and tokens."""
        if self._folder is None:
            yield
            return
        with self._folder.writing():
            self._follow()
            yield

    def _move_shared_collection(self) -> None:
        """A memagent 0.1 store kept every user in one collection named ``collection``: move its
        records (embeddings included: nothing is embedded again) into per-user collections, once."""
        if self._name not in {c.name for c in self.client.list_collections()}:
            return
        with self._writing():
            shared = self.client.get_collection(self._name)
            moved: set[str] = set()
            while True:
                part = shared.get(limit=self._batch, include=["documents", "metadatas", "embeddings"])
                if not part["ids"]:
                    break
                by_user: dict[str, list[int]] = {}
                for n, meta in enumerate(part["metadatas"]):
                    by_user.setdefault(str(meta["user_id"]), []).append(n)
                moved |= set(by_user)
                for user_id, rows in by_user.items():
                    self.records(user_id).upsert(
                        ids=[part["ids"][n] for n in rows], documents=[part["documents"][n] for n in rows],
                        metadatas=[part["metadatas"][n] for n in rows],
                        embeddings=[part["embeddings"][n] for n in rows],
                    )
                shared.delete(ids=part["ids"])
            self.client.delete_collection(self._name)
            self.bump(moved)  # every process's BM25 index of those users is rebuilt

    # -- records -------------------------------------------------------------------------
    def upsert(
        self, records: Sequence[MemoryRecord], embeddings: np.ndarray, *, replace: bool = False
    ) -> dict[str, str]:
        """Write records, each into its user's collection. Chroma merges metadata on upsert, so
        ``replace`` first clears the optional keys a stored version has and the new one drops (an
        update must not keep them)."""
        with self._writing():
            rows_of: dict[str, list[int]] = {}
            for n, record in enumerate(records):
                rows_of.setdefault(record.user_id, []).append(n)
            for user_id, rows in rows_of.items():
                for start in range(0, len(rows), self._batch):
                    part = rows[start : start + self._batch]
                    self._upsert(user_id, [records[n] for n in part], embeddings[part], replace)
            return self.bump(set(rows_of))

    def _upsert(self, user_id: str, part: Sequence[MemoryRecord], embeddings: np.ndarray, replace: bool) -> None:
        collection = self.records(user_id)
        metadatas = [record_to_metadata(r) for r in part]
        if replace:
            stored = collection.get(ids=[r.id for r in part], include=["metadatas"])
            old_keys = {i: set(m) for i, m in zip(stored["ids"], stored["metadatas"])}
            for record, meta in zip(part, metadatas):
                dropped = {k for k in old_keys.get(record.id, ()) if _optional(k) and k not in meta}
                meta.update(dict.fromkeys(dropped))  # None deletes a key in Chroma
        collection.upsert(ids=[r.id for r in part], documents=[r.key for r in part], metadatas=metadatas,
                          embeddings=embeddings)

    def get(self, user_id: str, ids: Sequence[str], where: Where | None = None) -> list[MemoryRecord]:
        """The user's records by id, in the order asked, skipping ids that do not exist (or fail ``where``)."""
        if not ids:
            return []
        found = self.records(user_id).get(ids=list(ids), where=where, include=["documents", "metadatas"])
        by_id = {
            i: record_from_chroma(i, doc, meta)
            for i, doc, meta in zip(found["ids"], found["documents"], found["metadatas"])
        }
        return [by_id[i] for i in ids if i in by_id]

    def _get_all(self, user_id: str, where: Where | None, include: list[str]) -> dict[str, list[Any]]:
        """Every record of the user matching ``where``, read in pages: one unbounded get of 100k
        records fails in chromadb ("too many SQL variables")."""
        collection, pages = self.records(user_id), list[Any]()
        while not pages or len(pages[-1]["ids"]) == self._batch:
            pages.append(collection.get(where=where, include=include, limit=self._batch,
                                        offset=len(pages) * self._batch))
        return {field: [x for page in pages for x in page[field] or []] for field in ["ids", *include]}

    def find(self, user_id: str, where: Where | None = None) -> list[MemoryRecord]:
        """Every record of the user matching ``where``, oldest conversation first."""
        found = self._get_all(user_id, where, ["documents", "metadatas"])
        records = [
            record_from_chroma(i, doc, meta)
            for i, doc, meta in zip(found["ids"], found["documents"], found["metadatas"])
        ]
        return sorted(records, key=lambda r: (r.timestamp, r.session_id, r.round_index))

    def existing_ids_where(self, user_id: str, where: Where | None = None) -> set[str]:
        return set(self._get_all(user_id, where, [])["ids"])

    def keys(self, user_id: str) -> list[tuple[str, str, str, float]]:
        """(id, key, session id, epoch seconds) of every record of the user: what the lexical index is
        built from (the time lets the read path re-rank by time without fetching records)."""
        found = self._get_all(user_id, None, ["documents", "metadatas"])
        rows = zip(found["ids"], found["documents"], found["metadatas"])
        return [(i, key, str(meta["session_id"]), float(meta["timestamp"])) for i, key, meta in rows]

    def nearest(self, user_id: str, embedding: np.ndarray, where: Where | None, n: int) -> list[tuple[str, float]]:
        """Ids of the user's ``n`` records nearest to ``embedding`` among those matching ``where``."""
        if self._folder is not None:
            self._folder.sync()  # another process's write: reopen, so the index holds its records
        try:
            result = self._query(user_id, embedding, where, n)
        except self._internal_error as exc:  # "Error finding id": the index lacks records the metadata has
            if self._path is None:
                raise
            if self._folder is None:  # a client passed in: not ours to reopen
                raise StaleStoreError(f"the vector query failed ({exc}); " + server_advice(self._path)) from exc
            self._folder.open()  # a writer that left no token (see the module docstring): reopen once
            try:
                result = self._query(user_id, embedding, where, n)
            except self._internal_error as again:
                raise StaleStoreError(
                    f"the vector query failed after a reopen ({again}); " + server_advice(self._path)
                ) from again
        return list(zip(result["ids"][0], result["distances"][0]))

    def _query(self, user_id: str, embedding: np.ndarray, where: Where | None, n: int) -> Any:
        collection = self.records(user_id)
        return collection.query(query_embeddings=[embedding], n_results=n, where=where, include=["distances"])

    def delete(self, user_id: str, ids: Sequence[str]) -> None:
        if ids:
            with self._writing():
                for start in range(0, len(ids), self._batch):
                    self.records(user_id).delete(ids=list(ids[start : start + self._batch]))
                self.bump({user_id})

    def count(self) -> int:
        """Records of every user."""
        return sum(int(c.count()) for c in self.user_collections())

    # -- versions: each user's records change together with a new version token --------------
    def bump(self, user_ids: set[str]) -> dict[str, str]:
        """Mark users' records as changed: a lexical index built at another version is rebuilt, in
        this process and in every other one on the store (a folder's vector index follows the lock
        file's token instead, see the module docstring)."""
        versions = {user_id: uuid.uuid4().hex for user_id in sorted(user_ids)}
        if versions:
            with self._writing():
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


def _persist_directory(client: Any | None) -> str | None:
    """The folder of a PersistentClient passed in; None for a server or an in-memory client."""
    if client is None:
        return None
    try:
        settings = client.get_settings()
    except Exception:  # a client without settings: nothing to say about its folder
        return None
    return str(settings.persist_directory) if getattr(settings, "is_persistent", False) else None
