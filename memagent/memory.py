"""The ``Memory`` facade: validates input, holds the locks, and delegates to the stages.

    write   RecordWriter      (index/writer.py)     rounds → records → keys → store + BM25
    read    HybridRetriever   (retrieve/hybrid.py)  rankings → votes → fusion → time re-rank
    answer  read()            (answer/reader.py)    memories → Chain-of-Note → Answer

Every method that reads or writes memories takes ``user_id`` as a required keyword; ``agent_id``
and ``run_id`` narrow a scope further where a call works on many records. A record id of another
user is ``RecordNotFound``, exactly as an id that does not exist.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Concatenate, Literal, ParamSpec, TypeVar

from pydantic import ValidationError

from memagent._files import bank_path
from memagent._time import parse_timestamp, utc_now
from memagent.answer.confidence import fitted_threshold
from memagent.answer.reader import NOTHING_REMEMBERED, Passage, prompt_for, read
from memagent.config import MemoryConfig, default_store_path
from memagent.decay.salience import Order, SalienceScorer, decayed, keep_count, to_forget
from memagent.embedding import CachedEmbedder, Embedder, embedder_from_config
from memagent.errors import InputError, RecordNotFound
from memagent.index.decompose import split_rounds
from memagent.index.keys import CachedExpander, Expander, make_expander
from memagent.index.writer import RecordWriter, record_id
from memagent.llm.base import LLM, LockedLLM
from memagent.retrieve.hybrid import HybridRetriever
from memagent.retrieve.lexical import LexicalIndexes
from memagent.retrieve.rerank import CrossEncoder, PairScorer
from memagent.schema import (
    INT64_MAX,
    Answer,
    HistoryEntry,
    Hit,
    MemoryRecord,
    MetadataValue,
    Scope,
    SearchFilters,
    coerce_filters,
    validate_id,
    validate_messages,
    validate_metadata,
    validate_scope,
    validate_text,
)
from memagent.store.chroma import ChromaStore, where_clause

Filters = SearchFilters | Mapping[str, Any] | None
MAX_K = 100_000  # more hits than any reader reads; bounds the depth each retriever ranks to
When = datetime | str | float | None


class Memory:
    """Long-term memory for one or many users, in an embedded Chroma folder or a Chroma server.

    Stages can be passed in (``embedder``, ``llm`` for reading, ``expander`` for keys, ``salience_llm``
    for compaction's salience, ``reranker`` for ``retrieval.rerank``); the rest
    follows ``config``. Models named by the config load on first use.

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
        expander: Expander | None = None,
        client: Any | None = None,
        salience_llm: LLM | None = None,
        mac: Any | None = None,
        reranker: PairScorer | None = None,
    ) -> None:
        config = config if config is not None else MemoryConfig()
        if path is not None:
            config = config.model_copy(update={"store": config.store.model_copy(update={"path": Path(path)})})
        self.config = config
        cache_dir = config.store.path if config.store.url is None else default_store_path()
        self.embedder = _cached(embedder, config, cache_dir)
        self.store = ChromaStore(config.store, client, embedder=self.embedder.name)
        self._expansion_cache = (config.embedder.cache_path or cache_dir / "x").with_name("expansion_cache.sqlite")
        self._lock = threading.RLock()  # one writer at a time keeps store and lexical index in step
        self._loading = threading.Lock()  # a model named by the config loads once, even when two threads ask
        self._model_locks: weakref.WeakKeyDictionary[LLM, threading.Lock] = weakref.WeakKeyDictionary()
        self._llm = None if llm is None else self._locked(llm)
        self._expander = expander
        self._reranker = reranker
        self._salience_llm = None if salience_llm is None else self._locked(salience_llm)  # else loads when needed
        self._mac = mac  # a memagent.mac.MacModel; else loads from config.mac.checkpoint when first asked
        self._mac_lock = threading.Lock()
        self._mac_id: str | None = None
        self._salience: dict[tuple[str, int], CachedExpander] = {}  # scorers by (measure, max_chars)
        lexical = LexicalIndexes(self.store.keys, self.store.version)
        self.writer = RecordWriter(self.store, self.embedder, lexical, self._get_expander,
                                   granularity=config.granularity, key=config.key)
        self.retriever = HybridRetriever(self.store, self.embedder, lexical, config.retrieval,
                                         granularity=config.granularity, time_llm=lambda: self.llm,
                                         salience=self.salience, reranker=lambda: self.reranker)

    # -- models ------------------------------------------------------------------------------
    @property
    def reranker(self) -> PairScorer:
        """The cross-encoder of ``config.retrieval.rerank``, loaded on first use unless one was passed in."""
        with self._loading:
            if self._reranker is None:
                self._reranker = CrossEncoder(self.config.retrieval.rerank_model)
        return self._reranker

    @property
    def llm(self) -> LLM:
        """The reader model, loaded on first use (``config.reader.model``) unless one was passed in."""
        with self._loading:
            if self._llm is None:
                from memagent.llm.load import load_llm  # heavy: only when answering

                reader = self.config.reader
                self._llm = self._locked(load_llm(reader.model, backend=reader.backend, adapter=reader.adapter))
        return self._llm

    @property
    def expander(self) -> Expander | None:
        """The key expander in use (see ``config.expansion``), or None when keys are not expanded."""
        return self._get_expander()

    def _get_expander(self) -> Expander | None:
        """The key expander passed in or named by ``config.expansion`` (loaded on first use), or None."""
        options = self.config.expansion
        if self._expander is not None or options.kind == "none":
            return self._expander
        from memagent.llm.load import load_llm

        reader = self.config.reader
        name = options.model_name(reader.model)
        llm = self.llm if name == reader.model else self._locked(load_llm(name, backend=reader.backend))
        inner = make_expander(options.kind, llm, options.keyphrases)
        with self._loading:
            if self._expander is None:
                self._expander = CachedExpander(inner, self._expansion_cache)
        return self._expander

    def _locked(self, llm: LLM) -> LLM:
        """``llm`` behind the one lock this Memory keeps for that model, however many roles it plays."""
        if isinstance(llm, LockedLLM):
            return llm
        lock = self._model_locks.setdefault(llm, threading.Lock())
        return LockedLLM(llm, lock)

    # -- write -------------------------------------------------------------------------------
    def add(
        self,
        messages: Sequence[Mapping[str, Any]],
        /,
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        session_id: str | None = None,
        timestamp: When = None,
        metadata: Mapping[str, MetadataValue] | None = None,
    ) -> list[MemoryRecord]:
        """Remember one session's messages (or one exchange of it). Returns the records stored.

        Rounds already stored for this session are skipped, so adding twice is harmless.
        """
        scope = validate_scope(user_id, agent_id, run_id)
        session_id = uuid.uuid4().hex if session_id is None else validate_id(session_id, "session_id")
        when = utc_now() if timestamp is None else parse_timestamp(timestamp)
        extra = _validate_metadata(metadata)
        rounds = split_rounds(validate_messages(messages, max_chars=self.config.max_message_chars))
        if not rounds:
            return []
        with self._lock:
            return self.writer.add(rounds, scope, session_id, when, extra)

    # -- read --------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        /,
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        k: int | None = None,
        filters: Filters = None,
        question_date: When = None,
    ) -> list[Hit]:
        """The ``k`` records of the scope that best match ``query`` (see ``HybridRetriever``).

        ``question_date`` is when the question is asked: memories from after it are not searched.
        """
        scope = validate_scope(user_id, agent_id, run_id)
        self._check_query(query)
        k = self.config.k if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= MAX_K:
            raise InputError("k", f"must be a positive integer, got {k!r} (at most {MAX_K})")
        narrowed = coerce_filters(filters)
        asked = None if question_date is None else parse_timestamp(question_date, field="question_date")
        if asked is not None:
            narrowed = narrowed.model_copy(update={"end": min(narrowed.end, asked) if narrowed.end else asked})
        with self._lock:
            return self.retriever.search(query, scope, narrowed, k, asked)

    def _check_query(self, query: object) -> None:
        text = validate_text(query, "query")
        if not text.strip():
            raise InputError("query", f"must be a non-empty string, got {query!r}")
        if len(text) > self.config.max_query_chars:
            limit = self.config.max_query_chars
            raise InputError("query", f"has {len(text)} characters, over max_query_chars={limit}")

    def answer(
        self,
        question: str,
        /,
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        llm: LLM | None = None,
        k: int | None = None,
        question_date: When = None,
        filters: Filters = None,
        reader: Literal["retrieval", "mac"] = "retrieval",
    ) -> Answer:
        """Answer from the scope's memories, or refuse when they do not hold the answer.

        ``reader``: "retrieval" searches and gives the top memories to the reader LLM as text; "mac"
        reads every session of the scope, amortized into vectors (MAC; needs ``config.mac.checkpoint``
        or ``Memory(mac=...)``; it never refuses unless there is nothing stored).
        The model runs outside the store lock (searches and adds go on) but under its own lock.
        A model failure raises ``LLMError``; it is never turned into a refusal.
        """
        if reader == "mac":
            return self._answer_from_bank(question, validate_scope(user_id, agent_id, run_id), filters)
        if reader != "retrieval":
            raise InputError("reader", f"{reader!r} is not 'retrieval' or 'mac'")
        asked = utc_now() if question_date is None else parse_timestamp(question_date, field="question_date")
        options = self.config.reader
        hits = self.search(question, user_id=user_id, agent_id=agent_id, run_id=run_id, k=k or options.k,
                           filters=filters, question_date=asked)
        passages = [Passage(h.record.id, h.record.timestamp, h.record.value) for h in hits]
        if not passages:  # nothing to answer from: a reader asked anyway invents (seen with the 1.5B)
            return Answer(text=NOTHING_REMEMBERED, refused=True, confidence=0.0)
        model = self.llm if llm is None else self._locked(llm)
        prompt = options.prompt or prompt_for(model.name)
        refuse_below = options.refuse_below
        if refuse_below is None and options.sure_probe is not None:
            refuse_below = fitted_threshold(model.name, prompt, options.sure_probe)
        return read(model, question, passages, asked, max_new_tokens=options.max_new_tokens,
                    max_chars=options.max_memory_chars, refuse_below=refuse_below, prompt=prompt,
                    sure_probe=options.sure_probe)

    def _answer_from_bank(self, question: str, scope: Scope, filters: Filters) -> Answer:
        from memagent.mac.bank import MemoryBank, session_chunks

        self._check_query(question)
        records = self.get_all(user_id=scope.user_id, agent_id=scope.agent_id, run_id=scope.run_id, filters=filters)
        if not records:
            return Answer(text=NOTHING_REMEMBERED, refused=True, confidence=0.0)
        model, weights_id = self._get_mac()
        whole_user = scope == Scope(user_id=scope.user_id) and not filters
        with self._mac_lock:
            bank = MemoryBank(bank_path(self._mac_folder, scope.user_id), weights_id)
            chunks = session_chunks(records, model.encoder, model.config.max_doc_tokens)
            reply = model.answer([question], bank.gather(model, chunks, prune=whole_user),
                                 max_new_tokens=self.config.mac.max_new_tokens)[0]
        return Answer(text=reply.text, refused=False, confidence=reply.confidence,
                      prediction_confidence=reply.confidence)

    @property
    def _mac_folder(self) -> Path:
        return (self.config.store.path if self.config.store.url is None else default_store_path()) / "mac"

    def _get_mac(self) -> tuple[Any, str]:
        """The MAC model and the hash of its weights (hashed once: 13M parameters are ~50 MB to read)."""
        from memagent.mac.bank import checkpoint_id

        with self._loading:
            if self._mac is None:
                if self.config.mac.checkpoint is None:
                    raise InputError("mac.checkpoint", "is not set: train one with `memagent mac train` "
                                     "(or pass Memory(mac=...)) to answer with reader='mac'")
                from memagent.mac.model import MacModel

                self._mac = MacModel.load(self.config.mac.checkpoint, device=self.config.mac.device).eval()
            if self._mac_id is None:
                self._mac_id = checkpoint_id(self._mac)
        return self._mac, self._mac_id

    def get(self, record_id: str, /, *, user_id: str) -> MemoryRecord:
        """One of the user's records by id; ``RecordNotFound`` when the user has no record with it."""
        scope = validate_scope(user_id)
        found = self.store.get(scope.user_id, [validate_id(record_id, "record_id")])
        if not found:
            raise RecordNotFound(record_id)
        return found[0]

    def get_all(
        self, *, user_id: str, agent_id: str | None = None, run_id: str | None = None, filters: Filters = None
    ) -> list[MemoryRecord]:
        """All records of the scope, oldest conversation first."""
        scope = validate_scope(user_id, agent_id, run_id)
        return self.store.find(scope.user_id, where_clause(scope, coerce_filters(filters)))

    def history(self, record_id: str, /, *, user_id: str) -> list[HistoryEntry]:
        """What the user's record was before each update or delete, oldest first."""
        return self.store.history(validate_id(record_id, "record_id"), validate_scope(user_id).user_id)

    # -- change ------------------------------------------------------------------------------
    def update(
        self,
        record_id: str,
        /,
        *,
        user_id: str,
        value: str | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
    ) -> MemoryRecord:
        """Replace a record's value (its key follows) and/or metadata; the old version goes to history."""
        if value is not None and not validate_text(value, "value").strip():
            raise InputError("value", f"must be a non-empty string, got {value!r}")
        if value is not None and len(value) > self.config.max_message_chars:
            limit = self.config.max_message_chars
            raise InputError("value", f"has {len(value)} characters, over max_message_chars={limit}")
        extra = None if metadata is None else _validate_metadata(metadata)
        with self._lock:
            old = self.get(record_id, user_id=user_id)
            changes: dict[str, Any] = {"recorded_at": utc_now()}
            if value is not None:
                changes.update(value=value, key=self.writer.key_of(value))
            if extra is not None:
                changes["metadata"] = extra
            new = old.model_copy(update=changes)
            self.writer.write([new], replace=True)
            self.store.log([HistoryEntry(record_id=old.id, event="update", previous=old, changed_at=new.recorded_at)])
        return new

    def delete(self, record_id: str, /, *, user_id: str) -> None:
        """Forget one of the user's records; its last version goes to history."""
        with self._lock:
            old = self.get(record_id, user_id=user_id)
            self.store.delete(old.user_id, [old.id])
            self.store.log([HistoryEntry(record_id=old.id, event="delete", previous=old, changed_at=utc_now())])

    def delete_all(self, *, user_id: str, agent_id: str | None = None, run_id: str | None = None) -> int:
        """Forget every record of the scope and its history. Other users (and agents, runs) are untouched."""
        scope = validate_scope(user_id, agent_id, run_id)
        with self._lock:
            ids = sorted(self.store.existing_ids_where(scope.user_id, where_clause(scope)))
            self.store.delete(scope.user_id, ids)
            self.store.forget_history(scope.user_id, None if scope == Scope(user_id=scope.user_id) else ids)
            bank_path(self._mac_folder, scope.user_id).unlink(missing_ok=True)  # MAC's vectors of the sessions
        return len(ids)

    def compact(self, *, user_id: str, keep: int | float, by: Order = "salience") -> list[MemoryRecord]:
        """Forget the user's records beyond ``keep`` (a count, or a fraction below 1 of what is stored):
        the least salient (``config.salience``: token surprisal under a small LM, decayed by session
        age), the oldest (``by="recency"``), or at random. Each forgotten record goes to history."""
        scope = validate_scope(user_id)
        if by not in ("salience", "recency", "random"):
            raise InputError("by", f"must be 'salience', 'recency' or 'random', got {by!r}")
        with self._lock:
            records = self.store.find(scope.user_id, where_clause(scope))
            try:
                count = keep_count(len(records), keep)
            except ValueError as exc:
                raise InputError("keep", str(exc).removeprefix("keep: ")) from exc
            scores = self.salience(records) if by == "salience" else None
            forgotten = to_forget(records, count, by, scores)
            if forgotten:
                self.store.delete(scope.user_id, [r.id for r in forgotten])
                now = utc_now()
                self.store.log([HistoryEntry(record_id=r.id, event="forget", previous=r, changed_at=now)
                                for r in forgotten])
        return forgotten

    def salience(self, records: Sequence[MemoryRecord]) -> list[float]:
        """The records' salience: each value's token surprisal (``config.salience.measure``; cached by
        content), decayed by the age of its session among ``records``."""
        options = self.config.salience
        with self._loading:
            if self._salience_llm is None:
                from memagent.llm.load import load_llm

                self._salience_llm = self._locked(load_llm(options.model, backend=self.config.reader.backend))
            key = (options.measure, options.max_chars)
            if key not in self._salience:
                scorer = SalienceScorer(self._salience_llm, options.max_chars, options.measure)
                self._salience[key] = CachedExpander(scorer, self._expansion_cache)
            cached = self._salience[key]
        raw = [float(s) for s in cached.expand([r.value for r in records])]
        return decayed(records, raw, options.decay)

    # -- move --------------------------------------------------------------------------------
    def export(
        self, destination: str | Path | IO[str], /, *, user_id: str, agent_id: str | None = None,
        run_id: str | None = None,
    ) -> int:
        """Write the scope's records as JSONL (one ``MemoryRecord`` a line). Returns how many."""
        records = self.get_all(user_id=user_id, agent_id=agent_id, run_id=run_id)
        lines = "".join(r.model_dump_json() + "\n" for r in records)
        if isinstance(destination, (str, Path)):
            Path(destination).write_text(lines, encoding="utf-8")
        else:
            destination.write(lines)
        return len(records)

    def import_(self, source: str | Path | Iterable[str], /, *, user_id: str, as_user: str | None = None) -> int:
        """Read JSONL written by ``export`` of ``user_id``; ``as_user`` stores the records as that user's.

        Every line is checked before anything is written, so a bad file changes nothing, and a record
        of another user than ``user_id`` is refused. Records go to the target user's own collection, so
        an import can never overwrite another user's record, whatever ids the file holds.
        """
        owner = validate_scope(user_id).user_id
        target = owner if as_user is None else validate_id(as_user, "as_user")
        records = [_moved(r, target) for r in _read_export(source, owner)]
        with self._lock:
            self.writer.write(records, replace=True)
        return len(records)


def _cached(embedder: Embedder | None, config: MemoryConfig, cache_dir: Path) -> Embedder:
    """The embedder (the config's when none is given) behind a cache by content hash."""
    if embedder is None:
        embedder = embedder_from_config(config.embedder)
    if isinstance(embedder, CachedEmbedder):
        return embedder
    return CachedEmbedder(embedder, config.embedder.cache_path or cache_dir / "embedding_cache.sqlite")


def _read_export(source: str | Path | Iterable[str], owner: str) -> list[MemoryRecord]:
    """Every record of an export file, each checked; ``InputError`` names the first bad line.

    A path that cannot be read (missing, a folder, not UTF-8, an impossible name) is
    ``InputError("source", ...)``, as is a source that is neither a path nor an iterable of str.
    """

    if isinstance(source, (str, Path)):
        try:
            text = Path(source).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError("source", f"no file at {str(source)!r:.200} (a str is read as a path: pass JSONL "
                                       "text as a list of lines)") from None
        except (OSError, ValueError) as exc:  # a folder, no permission, not UTF-8, a NUL or surrogate in the name
            raise InputError("source", f"cannot read {str(source)!r:.200}: {exc}") from None
        # cut at "\n" only: str.splitlines also cuts at U+2028, U+0085 ..., which JSON leaves unescaped in values
        lines: Iterable[object] = text.split("\n")
    elif isinstance(source, Iterable) and not isinstance(source, (bytes, bytearray, Mapping)):
        lines = source
    else:
        raise InputError("source", f"must be a path or an iterable of JSONL lines, got {type(source).__name__}")
    records: list[MemoryRecord] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        where = f"line {number}"
        if not isinstance(line, str):
            raise InputError(where, f"must be a string, got {type(line).__name__}")
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested past what json parses
            raise InputError(where, f"is not JSON: {str(exc)[:200]}") from None
        if not isinstance(data, dict):
            raise InputError(where, f"must be a JSON object (one record), got {type(data).__name__}")
        try:
            record = MemoryRecord.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            culprit = ".".join(str(part) for part in first["loc"])
            raise InputError(where, f"is not a memagent record: {culprit}: {first['msg']}") from None
        record = _check_imported(record, where, owner)
        if record.id in seen:
            raise InputError(where, f"repeats record id {record.id!r} (line {seen[record.id]})")
        seen[record.id] = number
        records.append(record)
    return records


def _check_imported(record: MemoryRecord, where: str, owner: str) -> MemoryRecord:
    """The checks ``add`` makes on its input, made on a record read from a file; returns it with UTC times
    (a naive time in a file means UTC, as everywhere in memagent)."""

    for name in ("id", "user_id", "session_id"):
        validate_id(getattr(record, name), f"{where}.{name}")
    for name in ("agent_id", "run_id"):
        if getattr(record, name) is not None:
            validate_id(getattr(record, name), f"{where}.{name}")
    if record.user_id != owner:
        raise InputError(f"{where}.user_id", f"is {record.user_id!r}, not {owner!r}: pass as_user= to move records")
    if record.round_index > INT64_MAX:  # Chroma stores it as an int64
        raise InputError(f"{where}.round_index", f"{record.round_index} is over {INT64_MAX}")
    times = {name: parse_timestamp(getattr(record, name), field=f"{where}.{name}")
             for name in ("timestamp", "recorded_at")}
    for name, text in (("value", record.value), ("key", record.key)):
        validate_text(text, f"{where}.{name}")
        if not text.strip():
            raise InputError(f"{where}.{name}", "is empty")
    _validate_metadata(record.metadata, field=f"{where}.metadata")
    return record.model_copy(update=times)


def _moved(record: MemoryRecord, user_id: str) -> MemoryRecord:
    """The record as another user's, its id derived by the rule that made it (session or round)."""
    if record.user_id == user_id:
        return record
    old, new = (Scope(user_id=u, agent_id=record.agent_id, run_id=record.run_id) for u in (record.user_id, user_id))
    is_session_record = record.id == record_id(old, record.session_id, "")
    new_id = record_id(new, record.session_id, "" if is_session_record else record.value)
    return record.model_copy(update={"user_id": user_id, "id": new_id})


def _validate_metadata(metadata: Mapping[str, Any] | None, field: str = "metadata") -> dict[str, MetadataValue]:
    """Metadata that round-trips through the store, or ``InputError`` (the rules: ``schema.validate_metadata``)."""

    return validate_metadata(metadata, field)


# -- asyncio --------------------------------------------------------------------------------------
P = ParamSpec("P")
R = TypeVar("R")


def _in_thread(method: Callable[Concatenate[Memory, P], R]) -> Callable[Concatenate[AsyncMemory, P], Awaitable[R]]:
    """``Memory.method`` as a coroutine run in a worker thread, with the same signature and docs."""

    @functools.wraps(method)
    async def run(self: AsyncMemory, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(method, self.sync, *args, **kwargs)

    return run


class AsyncMemory:
    """``Memory`` for asyncio code: the same methods and signatures, each run in a worker thread.

    ``Memory``'s locks keep the store and each model safe when several awaits run at once.
    """

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        path: str | Path | None = None,
        embedder: Embedder | None = None,
        llm: LLM | None = None,
        expander: Expander | None = None,
        client: Any | None = None,
        salience_llm: LLM | None = None,
        mac: Any | None = None,
        reranker: PairScorer | None = None,
    ) -> None:
        self.sync = Memory(config, path=path, embedder=embedder, llm=llm, expander=expander, client=client,
                           salience_llm=salience_llm, mac=mac, reranker=reranker)

    add = _in_thread(Memory.add)
    search = _in_thread(Memory.search)
    answer = _in_thread(Memory.answer)
    get = _in_thread(Memory.get)
    get_all = _in_thread(Memory.get_all)
    history = _in_thread(Memory.history)
    update = _in_thread(Memory.update)
    delete = _in_thread(Memory.delete)
    delete_all = _in_thread(Memory.delete_all)
    compact = _in_thread(Memory.compact)
    export = _in_thread(Memory.export)
    import_ = _in_thread(Memory.import_)
