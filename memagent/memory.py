"""The ``Memory`` facade: validates input, then wires the stages. No stage logic lives here."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from memagent._time import parse_timestamp, utc_now
from memagent.config import MemoryConfig, default_store_path
from memagent.embedding import CachedEmbedder, Embedder, SentenceTransformerEmbedder
from memagent.errors import InputError, RecordNotFound
from memagent.index.decompose import Round, split_rounds
from memagent.index.keys import CachedExpander, Expander, Keyphrases, LLMFacts, LLMSummary, build_key, key_for_text, merge_key
from memagent.llm.base import LLM
from memagent.llm.reader import Passage, read
from memagent.retrieve.dense import dense_ranking
from memagent.retrieve.fuse import reciprocal_rank_fusion
from memagent.retrieve.lexical import LexicalIndexes, session_ranks, sessions_of_ranking
from memagent.retrieve.temporal import front_in_range, read_time
from memagent.schema import (
    Answer,
    HistoryEntry,
    Hit,
    MemoryRecord,
    MetadataValue,
    SearchFilters,
    coerce_filters,
    validate_messages,
    validate_user_id,
)
from memagent.store.chroma import ChromaStore, where_clause


def record_id(user_id: str, session_id: str, value: str) -> str:
    """Stable id from content: the same exchange added twice to a session is stored once."""
    return hashlib.sha256(f"{user_id}\0{session_id}\0{value}".encode()).hexdigest()[:32]


class Memory:
    """Long-term memory for one or many users, in an embedded Chroma folder or a Chroma server.

    >>> memory = Memory(path="./memagent_data")                       # doctest: +SKIP
    >>> memory.add([{"role": "user", "content": "I adopted a greyhound called Pixel"}],
    ...            user_id="ana", session_id="s1", timestamp="2023/05/20 (Sat) 02:21")
    >>> memory.search("what is my dog's name?", user_id="ana", k=5)
    """

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        path: str | Path | None = None,
        embedder: Embedder | None = None,
        llm: LLM | None = None,
        client: Any | None = None,
    ) -> None:
        config = config if config is not None else MemoryConfig()
        if path is not None:
            config = config.model_copy(update={"store": config.store.model_copy(update={"path": Path(path)})})
        self.config = config
        self.store = ChromaStore(config.store, client)
        if embedder is None:
            embedder = SentenceTransformerEmbedder(
                config.embedder.model, device=config.embedder.device, batch_size=config.embedder.batch_size
            )
        cache_dir = config.store.path if config.store.url is None else default_store_path()
        if not isinstance(embedder, CachedEmbedder):
            embedder = CachedEmbedder(embedder, config.embedder.cache_path or cache_dir / "embedding_cache.sqlite")
        self.embedder = embedder
        self._expansion_cache = (config.embedder.cache_path or cache_dir / "x").with_name("expansion_cache.sqlite")
        self._expander: Expander | None = None
        self.lexical = LexicalIndexes(self._keys_of, self.store.version)
        self._lock = threading.RLock()  # one writer at a time keeps store and lexical index in step
        self._llm = llm

    @property
    def llm(self) -> LLM:
        """The reader model, loaded on first use (``config.reader.model``) unless one was passed in."""
        if self._llm is None:
            from memagent.llm.load import load_llm  # heavy: only when answering

            self._llm = load_llm(self.config.reader.model)
        return self._llm

    @property
    def expander(self) -> Expander | None:
        """The key expander ``config.expansion`` names (its model loads on first use), or None."""
        options = self.config.expansion
        if options.kind == "none" or self._expander is not None:
            return self._expander
        from memagent.llm.load import load_llm

        if options.kind == "keyphrases":
            inner: Expander = Keyphrases(load_llm(options.model or "smollm2-135m-instruct"), options.keyphrases)
        else:
            llm = self.llm if options.model in (None, self.config.reader.model) else load_llm(options.model)
            inner = LLMFacts(llm) if options.kind == "facts" else LLMSummary(llm)
        self._expander = CachedExpander(inner, self._expansion_cache)
        return self._expander

    def _expanded_keys(self, keys: Sequence[str], values: Sequence[str]) -> list[str]:
        if self.expander is None:
            return list(keys)
        return [merge_key(k, e) for k, e in zip(keys, self.expander.expand(values))]

    def _keys_of(self, user_id: str) -> list[tuple[str, str, str]]:
        return self.store.keys(where_clause(user_id))

    # -- write -------------------------------------------------------------------------------
    def add(
        self,
        messages: Sequence[Mapping[str, Any]],
        /,
        *,
        user_id: str,
        session_id: str | None = None,
        timestamp: datetime | str | float | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
    ) -> list[MemoryRecord]:
        """Remember one session's messages (or one exchange of it). Returns the records stored.

        Rounds already stored for this session are skipped, so adding twice is harmless.
        """
        user_id = validate_user_id(user_id)
        session_id = uuid.uuid4().hex if session_id is None else validate_user_id(session_id, "session_id")
        when = utc_now() if timestamp is None else parse_timestamp(timestamp)
        extra = _validate_metadata(metadata)
        rounds = split_rounds(validate_messages(messages, max_chars=self.config.max_message_chars))
        if not rounds:
            return []
        with self._lock:
            if self.config.granularity == "session":
                return self._add_to_session_record(rounds, user_id, session_id, when, extra)
            return self._add_rounds(rounds, user_id, session_id, when, extra)

    def _add_rounds(
        self, rounds: list[Round], user_id: str, session_id: str, when: datetime, extra: dict[str, MetadataValue]
    ) -> list[MemoryRecord]:
        stored = self.store.find(where_clause(user_id, SearchFilters(session_ids=[session_id])))
        known_values = {r.value for r in stored}
        taken_ids = {r.id for r in stored}
        next_index = max((r.round_index for r in stored), default=-1) + 1  # not a count: deletes leave gaps
        now = utc_now()
        records: list[MemoryRecord] = []
        for round_ in rounds:
            if round_.value in known_values:  # already remembered (also drops repeats within the call)
                continue
            rid = record_id(user_id, session_id, round_.value)
            if rid in taken_ids:  # an updated record kept this id for another value
                rid = record_id(user_id, session_id, f"{round_.value}\0{next_index}")
            records.append(
                MemoryRecord(
                    id=rid,
                    user_id=user_id,
                    session_id=session_id,
                    round_index=next_index,
                    value=round_.value,
                    key=build_key(round_, self.config.key),
                    timestamp=when,
                    recorded_at=now,
                    metadata=extra,
                )
            )
            known_values.add(round_.value)
            taken_ids.add(rid)
            next_index += 1
        if self.expander is not None:
            keys = self._expanded_keys([r.key for r in records], [r.value for r in records])
            records = [r.model_copy(update={"key": key}) for r, key in zip(records, keys)]
        self._write(records)
        return records

    def _add_to_session_record(
        self, rounds: list[Round], user_id: str, session_id: str, when: datetime, extra: dict[str, MetadataValue]
    ) -> list[MemoryRecord]:
        """Session granularity: one record per session, which grows by the rounds it does not hold yet."""
        rid = record_id(user_id, session_id, "")
        existing = self.store.get([rid])
        old = existing[0] if existing else None
        # compare whole rounds (blocks between newlines), so a round that is a prefix of another is still new
        held = f"\n{old.value}\n" if old else ""
        fresh = [r for r in dict.fromkeys(rounds) if f"\n{r.value}\n" not in held]
        if not fresh:
            return []
        value = "\n".join(r.value for r in fresh)
        key = "\n".join(build_key(r, self.config.key) for r in fresh)
        if old is not None:
            value, key = f"{old.value}\n{value}", f"{old.key}\n{key}"
            when, extra = old.timestamp, {**old.metadata, **extra}  # a session happened when it started
            self.store.log([HistoryEntry(record_id=rid, event="update", previous=old, changed_at=utc_now())])
        if self.expander is not None:  # the grown session is expanded as a whole, its expansion first
            key = self._expanded_keys([key_for_text(value, self.config.key)], [value])[0]
        record = MemoryRecord(
            id=rid,
            user_id=user_id,
            session_id=session_id,
            round_index=0,
            value=value,
            key=key,
            timestamp=when,
            recorded_at=utc_now(),
            metadata=extra,
        )
        self._write([record], replace=old is not None)
        return [record]

    def _write(self, records: Sequence[MemoryRecord], *, replace: bool = False) -> None:
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
                                before[user_id], after[user_id])

    # -- read --------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        /,
        *,
        user_id: str,
        k: int | None = None,
        filters: SearchFilters | Mapping[str, Any] | None = None,
        question_date: datetime | str | float | None = None,
    ) -> list[Hit]:
        """The ``k`` records of ``user_id`` that best match ``query``: dense and BM25, fused by rank.

        ``question_date`` is when the question is asked: memories from after it are not searched.
        """
        user_id = validate_user_id(user_id)
        if not isinstance(query, str) or not query.strip():
            raise InputError("query", f"must be a non-empty string, got {query!r}")
        k = self.config.k if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise InputError("k", f"must be a positive integer, got {k!r}")
        scope = coerce_filters(filters)
        asked = None if question_date is None else parse_timestamp(question_date, field="question_date")
        if asked is not None:
            scope = scope.model_copy(update={"end": min(scope.end, asked) if scope.end else asked})
        where = where_clause(user_id, scope)
        depth = max(self.config.retrieval.candidates, k)
        with self._lock:
            rankings: dict[str, list[str]] = {}
            if "dense" in self.config.retrieval.retrievers:
                rankings["dense"] = dense_ranking(self.store, self.embedder, query, where, depth)
            allowed = None
            if {"lexical", "session"} & set(self.config.retrieval.retrievers):
                index = self.lexical.for_user(user_id)  # once: each call checks the store's version
                if scope != SearchFilters():
                    allowed = self.store.existing_ids_where(where)
            if "lexical" in self.config.retrieval.retrievers:
                rankings["lexical"] = [i for i, _ in index.search(query, depth, allowed)]
            votes: dict[str, dict[str, int]] = {}
            weights: dict[str, float] = {}
            if "session" in self.config.retrieval.retrievers:
                votes["session"] = session_ranks(index, query, depth, allowed)
                if self.config.granularity == "round":  # session records: their own rankings rank sessions
                    # each round ranking votes for sessions by their best round; its own ranks count less
                    votes |= {f"{name}@session": sessions_of_ranking(index, ranking, allowed)
                              for name, ranking in rankings.items()}
                    weights = dict.fromkeys(rankings, self.config.retrieval.round_weight)
            fused = reciprocal_rank_fusion({**rankings, **votes}, self.config.retrieval.rrf_k, weights)
            if not self.config.retrieval.time_aware:
                fused = fused[:k]
            # every ranking above already kept to the user and the filters; fetching by id alone is
            # 6x faster in Chroma than with the where clause, and the user is checked once more here
            records = {r.id: r for r in self.store.get([i for i, _, _ in fused]) if r.user_id == user_id}
        hits = [Hit(record=records[i], score=s, why=why) for i, s, why in fused if i in records]
        if self.config.retrieval.time_aware:
            hits = self._time_aware(query, hits, asked or utc_now())
        return hits[:k]

    def _time_aware(self, query: str, hits: list[Hit], asked: datetime) -> list[Hit]:
        """Records dated inside the range the question names move to the front; none are dropped."""
        options = self.config.retrieval
        reading = read_time(query, asked, self.llm if options.time_llm else None)
        if reading.range is None:
            return hits
        window = reading.range.widened(options.time_window_days)
        moved = front_in_range(hits, [h.record.timestamp for h in hits], window)
        # 'time' in why marks a hit that the question's time range moved forward
        return [h.model_copy(update={"why": {**h.why, "time": 1}}) if window.contains(h.record.timestamp) else h
                for h in moved]

    def answer(
        self,
        question: str,
        /,
        *,
        user_id: str,
        llm: LLM | None = None,
        k: int | None = None,
        question_date: datetime | str | float | None = None,
        filters: SearchFilters | Mapping[str, Any] | None = None,
    ) -> Answer:
        """Answer from ``user_id``'s memories, or refuse when they do not hold the answer.

        A model failure raises ``LLMError``; it is never turned into a refusal.
        """
        asked = utc_now() if question_date is None else parse_timestamp(question_date, field="question_date")
        reader = self.config.reader
        hits = self.search(question, user_id=user_id, k=k or reader.k, filters=filters, question_date=asked)
        passages = [Passage(h.record.id, h.record.timestamp, h.record.value) for h in hits]
        return read(
            llm or self.llm,
            question,
            passages,
            asked,
            max_new_tokens=reader.max_new_tokens,
            max_chars=reader.max_memory_chars,
            refuse_below=reader.refuse_below,
        )

    def get(self, record_id: str, /, *, user_id: str | None = None) -> MemoryRecord:
        """One record by id; with ``user_id``, only if it belongs to that user."""
        where = None if user_id is None else {"user_id": validate_user_id(user_id)}
        found = self.store.get([record_id], where=where)
        if not found:
            raise RecordNotFound(record_id)
        return found[0]

    def get_all(self, user_id: str, /, *, filters: SearchFilters | Mapping[str, Any] | None = None) -> list[MemoryRecord]:
        """All of a user's records, oldest conversation first."""
        return self.store.find(where_clause(validate_user_id(user_id), coerce_filters(filters)))

    def history(self, record_id: str, /, *, user_id: str | None = None) -> list[HistoryEntry]:
        """What the record was before each update or delete, oldest first; with ``user_id``, that user's only."""
        return self.store.history(record_id, None if user_id is None else validate_user_id(user_id))

    # -- change ------------------------------------------------------------------------------
    def update(
        self,
        record_id: str,
        /,
        *,
        value: str | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
        user_id: str | None = None,
    ) -> MemoryRecord:
        """Replace a record's value (its key follows) and/or metadata; the old version goes to history."""
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise InputError("value", f"must be a non-empty string, got {value!r}")
        if value is not None and len(value) > self.config.max_message_chars:
            raise InputError("value", f"has {len(value)} characters, over max_message_chars={self.config.max_message_chars}")
        extra = None if metadata is None else _validate_metadata(metadata)
        with self._lock:
            old = self.get(record_id, user_id=user_id)
            changes: dict[str, Any] = {"recorded_at": utc_now()}
            if value is not None:
                changes.update(value=value, key=self._expanded_keys([key_for_text(value, self.config.key)], [value])[0])
            if extra is not None:
                changes["metadata"] = extra
            new = old.model_copy(update=changes)
            self.store.log([HistoryEntry(record_id=old.id, event="update", previous=old, changed_at=new.recorded_at)])
            self._write([new], replace=True)
        return new

    def delete(self, record_id: str, /, *, user_id: str | None = None) -> None:
        with self._lock:
            old = self.get(record_id, user_id=user_id)
            self.store.log([HistoryEntry(record_id=old.id, event="delete", previous=old, changed_at=utc_now())])
            self.store.delete([old.id], old.user_id)

    def delete_all(self, user_id: str, /) -> int:
        """Forget everything about ``user_id`` (records and their history). Other users are untouched."""
        user_id = validate_user_id(user_id)
        with self._lock:
            ids = sorted(self.store.existing_ids_where({"user_id": user_id}))
            self.store.delete(ids, user_id)
            self.store.forget_history(user_id)
        return len(ids)

    # -- move --------------------------------------------------------------------------------
    def export(self, user_id: str, destination: str | Path | IO[str], /) -> int:
        """Write a user's records as JSONL (one ``MemoryRecord`` a line). Returns how many."""
        records = self.get_all(user_id)
        lines = "".join(r.model_dump_json() + "\n" for r in records)
        if isinstance(destination, (str, Path)):
            Path(destination).write_text(lines, encoding="utf-8")
        else:
            destination.write(lines)
        return len(records)

    def import_(self, source: str | Path | Iterable[str], /, *, user_id: str | None = None) -> int:
        """Read JSONL written by ``export``; ``user_id`` moves the records to another user.

        Every line is checked before anything is written, so a bad file changes nothing.
        """
        lines = Path(source).read_text(encoding="utf-8").splitlines() if isinstance(source, (str, Path)) else source
        records: list[MemoryRecord] = []
        seen: dict[str, int] = {}
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = MemoryRecord.model_validate(json.loads(line))
            except ValueError as exc:
                raise InputError(f"line {number}", f"is not a memagent record: {exc}") from exc
            if user_id is not None:
                record = _moved(record, validate_user_id(user_id))
            if record.id in seen:
                raise InputError(f"line {number}", f"repeats record id {record.id!r} (line {seen[record.id]})")
            seen[record.id] = number
            records.append(record)
        with self._lock:
            self._write(records, replace=True)
        return len(records)


def _moved(record: MemoryRecord, user_id: str) -> MemoryRecord:
    """The record as another user's, its id derived by the rule that made it (session or round)."""
    is_session_record = record.id == record_id(record.user_id, record.session_id, "")
    new_id = record_id(user_id, record.session_id, "" if is_session_record else record.value)
    return record.model_copy(update={"user_id": user_id, "id": new_id})


def _validate_metadata(metadata: Mapping[str, Any] | None) -> dict[str, MetadataValue]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InputError("metadata", f"must be a dict, got {type(metadata).__name__}")
    for name, value in metadata.items():
        if not isinstance(name, str) or not name:
            raise InputError("metadata", f"keys must be non-empty strings, got {name!r}")
        if not isinstance(value, (str, int, float, bool)):
            raise InputError(f"metadata.{name}", f"must be a str, int, float or bool, got {type(value).__name__}")
    return dict(metadata)


class AsyncMemory:
    """``Memory`` for asyncio code: the same methods, run in a worker thread. No second copy of logic."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sync = Memory(*args, **kwargs)

    async def add(self, *args: Any, **kwargs: Any) -> list[MemoryRecord]:
        return await asyncio.to_thread(self.sync.add, *args, **kwargs)

    async def search(self, *args: Any, **kwargs: Any) -> list[Hit]:
        return await asyncio.to_thread(self.sync.search, *args, **kwargs)

    async def answer(self, *args: Any, **kwargs: Any) -> Answer:
        return await asyncio.to_thread(self.sync.answer, *args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> MemoryRecord:
        return await asyncio.to_thread(self.sync.get, *args, **kwargs)

    async def get_all(self, *args: Any, **kwargs: Any) -> list[MemoryRecord]:
        return await asyncio.to_thread(self.sync.get_all, *args, **kwargs)

    async def history(self, *args: Any, **kwargs: Any) -> list[HistoryEntry]:
        return await asyncio.to_thread(self.sync.history, *args, **kwargs)

    async def update(self, *args: Any, **kwargs: Any) -> MemoryRecord:
        return await asyncio.to_thread(self.sync.update, *args, **kwargs)

    async def delete(self, *args: Any, **kwargs: Any) -> None:
        return await asyncio.to_thread(self.sync.delete, *args, **kwargs)

    async def delete_all(self, *args: Any, **kwargs: Any) -> int:
        return await asyncio.to_thread(self.sync.delete_all, *args, **kwargs)

    async def export(self, *args: Any, **kwargs: Any) -> int:
        return await asyncio.to_thread(self.sync.export, *args, **kwargs)

    async def import_(self, *args: Any, **kwargs: Any) -> int:
        return await asyncio.to_thread(self.sync.import_, *args, **kwargs)
