"""LangGraph's ``BaseStore`` on memagent: a LangGraph app swaps ``InMemoryStore()`` for
``MemagentStore(memory)``; its items become memagent records, and a search with a query ranks
them with memagent's retrieval (dense + BM25 + time, fused).

One item is one record (never shared with a conversation's records):

    namespace[0]   the user_id: every namespace starts with the user it belongs to, as in
                   LangGraph's own examples, ``(user_id, "memories")``; one user's items never
                   reach another's reads, since memagent keeps each user's records apart
    namespace[1]   the agent_id, when there is a second label: ``(user_id, "coach")`` holds the
                   records that ``Memory.search(q, user_id=, agent_id="coach")`` narrows to
    namespace[2:]  metadata ``langgraph_ns2``, ``langgraph_ns3``, ...: a search of a deeper
                   prefix narrows inside the store (equality on each label)
    key            the session: an item is a session of one round, its ``session_id`` a hash of
                   (namespace, key); the key itself is metadata ``langgraph_key``
    value          JSON in metadata ``langgraph_value``; the record's text (what retrieval and the
                   reader see) is the value's text at the index fields, by default ``"$"``, the
                   whole value as JSON (LangGraph's own default)
    created_at     the record's timestamp (its first put); updated_at, its recorded_at (the last)

Choices where LangGraph leaves room:
- ``search`` and ``list_namespaces`` need a prefix that starts with a user id: nothing is read
  across users (memagent's rule: every read names its user). ``InputError`` otherwise.
- A batch checks every op before it runs the first, so a bad op changes nothing; the ops then run
  in order (a get after a put in one batch sees the put).
- A put to an existing (namespace, key) updates its record: ``created_at`` stays, the version
  before goes to ``Memory.history``. A put of ``None`` (``delete``) forgets the record; deleting an
  item that does not exist is no error.
- ``filter`` matches the value's fields exactly (a nested dict field by field) or with ``$eq``,
  ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, as ``InMemoryStore`` does; fields of different
  kinds ("3" against 3) never match.
- ``index=False``, or index fields the value lacks: the item is found by ``get`` and by searches
  without a query, never ranked by a query.
- A search without a query lists items oldest first, ``score`` None; with one, best first,
  ``score`` memagent's fused score.
- No TTL (``supports_ttl`` is False; a ``PutOp`` with a ``ttl`` is refused).
- Items are records of their user: ``Memory.search``/``answer`` of that user find them too, and
  ``Memory.delete_all`` forgets them.
"""

# ruff: noqa: E402  (the imports after require() come after it, so a missing extra is named)
from __future__ import annotations

import asyncio
import hashlib
import json
import operator
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from memagent._extras import require

require("langchain", "langgraph")

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    get_text_at_path,
    tokenize_path,
)

from memagent.errors import InputError
from memagent.index.decompose import Round
from memagent.memory import MAX_K, AsyncMemory, Memory
from memagent.schema import MemoryRecord, Message, MetadataValue, validate_id, validate_text

MARK = "langgraph"  # True on every record the store wrote: searches never return a conversation's records
KEY, NAMESPACE, VALUE, INDEXED = "langgraph_key", "langgraph_namespace", "langgraph_value", "langgraph_indexed"
_ORDER: dict[str, Callable[[Any, Any], Any]] = {
    "$eq": operator.eq,
    "$ne": operator.ne,
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


@dataclass(frozen=True)
class _Scope:
    """A namespace (or a prefix of one) as memagent sees it."""

    user_id: str
    agent_id: str | None = None
    labels: dict[str, MetadataValue] = field(default_factory=dict)  # langgraph_nsN for namespace[2:]

    def metadata(self) -> dict[str, MetadataValue]:
        """What every record of the scope carries: the store's mark and the labels past the agent."""
        return {MARK: True, **self.labels}


@dataclass(frozen=True)
class _Get:
    scope: _Scope
    namespace: tuple[str, ...]
    key: str


@dataclass(frozen=True)
class _Put(_Get):
    value: str | None  # the value as JSON; None deletes
    text: str = ""
    indexed: bool = False


@dataclass(frozen=True)
class _Search:
    scope: _Scope
    query: str | None
    filter: Mapping[str, Any]
    limit: int
    offset: int


@dataclass(frozen=True)
class _List:
    scope: _Scope
    conditions: tuple[MatchCondition, ...]
    max_depth: int | None
    limit: int
    offset: int


_Checked = _Get | _Search | _List  # _Put is a _Get


class MemagentStore(BaseStore):
    """A LangGraph store whose items are memagent records (the mapping: this module's docstring).

    >>> store = MemagentStore(Memory(path="./memagent_data"))                    # doctest: +SKIP
    >>> store.put(("ana", "memories"), "dog", {"text": "Ana's greyhound is called Pixel"})
    >>> store.search(("ana",), query="what is my dog called?")[0].value
    {'text': "Ana's greyhound is called Pixel"}

    ``fields`` are the value's paths whose text is searched (LangGraph's ``index["fields"]``
    syntax: ``"text"``, ``"facts[*]"``, ``"$"`` for the whole value); a put's ``index`` overrides them.
    """

    def __init__(self, memory: Memory | AsyncMemory, *, fields: Sequence[str] = ("$",)) -> None:
        self.memory = memory.sync if isinstance(memory, AsyncMemory) else memory
        if not isinstance(self.memory, Memory):
            raise InputError("memory", f"must be a memagent Memory or AsyncMemory, got {type(memory).__name__}")
        if isinstance(fields, str) or not fields or not all(isinstance(f, str) and f for f in fields):
            raise InputError("fields", f"must be a non-empty list of value paths, got {fields!r}")
        self.fields = list(fields)
        self._lock = threading.Lock()  # a put reads then writes: two puts of one new key must not both add

    # -- BaseStore ---------------------------------------------------------------------------
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        checked = [self._check(op, i) for i, op in enumerate(ops)]  # all before any runs: a bad op changes nothing
        with self._lock:
            return [self._run(op) for op in checked]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    # -- checks ------------------------------------------------------------------------------
    def _check(self, op: object, index: int) -> _Checked:
        if isinstance(op, PutOp):
            return self._check_put(op)
        if isinstance(op, GetOp):
            namespace = _namespace(op.namespace, "namespace")
            return _Get(_scope(namespace, "namespace"), namespace, _key(op.key))
        if isinstance(op, SearchOp):
            return self._check_search(op)
        if isinstance(op, ListNamespacesOp):
            return _check_list(op)
        raise InputError(
            f"ops[{index}]", f"must be a GetOp, PutOp, SearchOp or ListNamespacesOp, got {type(op).__name__}"
        )

    def _check_put(self, op: PutOp) -> _Put:
        namespace = _namespace(op.namespace, "namespace")
        scope, key = _scope(namespace, "namespace"), _key(op.key)
        if op.ttl is not None:
            raise InputError("ttl", f"is not supported by MemagentStore (items do not expire), got {op.ttl!r}")
        if op.value is None:
            return _Put(scope, namespace, key, None)
        value = _value_json(op.value)
        paths = self.fields if op.index is None else op.index or []
        if isinstance(paths, str) or not all(isinstance(p, str) and p for p in paths):
            raise InputError("index", f"must be False, None or a list of value paths, got {op.index!r}")
        texts = [t for p in paths for t in get_text_at_path(op.value, "$" if p == "$" else tokenize_path(p))]
        text = "\n".join(texts)
        indexed = bool(text.strip())
        text = text if indexed else value  # a record needs some text; unindexed items are never ranked by it
        limit = self.memory.config.max_message_chars
        if len(text) > limit:
            raise InputError("value", f"has {len(text)} characters of text, over max_message_chars={limit}")
        return _Put(scope, namespace, key, value, validate_text(text, "value"), indexed)

    def _check_search(self, op: SearchOp) -> _Search:
        prefix = _namespace(op.namespace_prefix, "namespace_prefix")
        query = op.query
        if query is not None:
            validate_text(query, "query")
            if not query.strip():
                raise InputError("query", "is blank: give a query, or None to list the items")
            if len(query) > self.memory.config.max_query_chars:
                limit = self.memory.config.max_query_chars
                raise InputError("query", f"has {len(query)} characters, over max_query_chars={limit}")
        return _Search(
            _scope(prefix, "namespace_prefix"),
            query,
            _check_filter(op.filter, "filter"),
            _count(op.limit, "limit", 1),
            _count(op.offset, "offset", 0),
        )

    # -- runs --------------------------------------------------------------------------------
    def _run(self, op: _Checked) -> Result:
        if isinstance(op, _Put):
            self._put(op)
            return None
        if isinstance(op, _Get):
            record = self._find(op)
            return None if record is None else _item(record)
        if isinstance(op, _Search):
            return self._search(op)
        return self._list(op)

    def _find(self, op: _Get) -> MemoryRecord | None:
        session = _session_id(op.namespace, op.key)
        found = self.memory.get_all(
            user_id=op.scope.user_id,
            agent_id=op.scope.agent_id,
            filters={"session_ids": [session], "metadata": {MARK: True}},
        )
        return found[-1] if found else None  # the store's lock keeps it at most one

    def _put(self, op: _Put) -> None:
        old = self._find(op)
        user_id = op.scope.user_id
        if op.value is None:
            if old is not None:
                self.memory.delete(old.id, user_id=user_id)
            return
        metadata = {
            **op.scope.metadata(),
            KEY: op.key,
            NAMESPACE: json.dumps(op.namespace),
            VALUE: op.value,
            INDEXED: op.indexed,
        }
        if old is None:
            self.memory.add(
                [{"role": "user", "content": op.text}],
                user_id=user_id,
                agent_id=op.scope.agent_id,
                session_id=_session_id(op.namespace, op.key),
                metadata=metadata,
            )
        else:  # the text as add stores it ("user: ..."), so an updated item reads as a new one would
            text = Round((Message(role="user", content=op.text),)).value
            self.memory.update(old.id, user_id=user_id, value=text, metadata=metadata)

    def _search(self, op: _Search) -> list[SearchItem]:
        scope, page = op.scope, slice(op.offset, op.offset + op.limit)
        if op.query is None:
            return [_search_item(r) for r in self._filtered(op)[page]]
        narrowed: dict[str, Any] = {"metadata": {**scope.metadata(), INDEXED: True}}
        if op.filter:  # rank only the items the filter keeps: each is a session of its own
            sessions = [r.session_id for r in self._filtered(op)]
            if not sessions:
                return []
            narrowed["session_ids"] = sessions
        hits = self.memory.search(
            op.query,
            user_id=scope.user_id,
            agent_id=scope.agent_id,
            k=min(op.offset + op.limit, MAX_K),
            filters=narrowed,
        )
        return [_search_item(h.record, h.score) for h in hits[page]]

    def _filtered(self, op: _Search) -> list[MemoryRecord]:
        """The scope's items whose value passes the search's filter, oldest first."""
        records = self.memory.get_all(
            user_id=op.scope.user_id, agent_id=op.scope.agent_id, filters={"metadata": op.scope.metadata()}
        )
        return [r for r in records if _holds(_value(r), op.filter)]

    def _list(self, op: _List) -> list[tuple[str, ...]]:
        scope = op.scope
        records = self.memory.get_all(
            user_id=scope.user_id, agent_id=scope.agent_id, filters={"metadata": scope.metadata()}
        )
        namespaces = {_item_namespace(r) for r in records}
        matching = {ns for ns in namespaces if all(_matches(c, ns) for c in op.conditions)}
        if op.max_depth is not None:
            matching = {ns[: op.max_depth] for ns in matching}
        return sorted(matching)[op.offset : op.offset + op.limit]


# -- checks ----------------------------------------------------------------------------------
def _namespace(namespace: object, field: str) -> tuple[str, ...]:
    if isinstance(namespace, (str, bytes)) or not isinstance(namespace, Sequence):
        raise InputError(field, f"must be a tuple of labels, (user_id, ...), got {type(namespace).__name__}")
    return tuple(_label(label, f"{field}[{i}]") for i, label in enumerate(namespace))


def _label(label: object, field: str) -> str:
    text = validate_id(label, field)  # a non-empty str of at most 256 printable characters
    if "." in text:
        raise InputError(field, f"must not contain '.' (LangGraph's rule for namespace labels), got {text!r}")
    return text


def _scope(namespace: tuple[str, ...], field: str, wildcard: bool = False) -> _Scope:
    """The user, agent and deeper labels a namespace names; ``*`` labels (list_namespaces) narrow nothing."""
    if not namespace or (wildcard and namespace[0] == "*"):
        raise InputError(
            field,
            f"must start with the user id, e.g. (user_id, 'memories'), got {namespace!r}: "
            "the store reads one user's items at a time",
        )
    agent = namespace[1] if len(namespace) > 1 and not (wildcard and namespace[1] == "*") else None
    labels: dict[str, MetadataValue] = {
        f"langgraph_ns{i}": label for i, label in enumerate(namespace) if i >= 2 and not (wildcard and label == "*")
    }
    return _Scope(namespace[0], agent, labels)


def _key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InputError("key", f"must be a non-empty string, got {key!r:.80}")
    return validate_text(key, "key")


def _value_json(value: object) -> str:
    if not isinstance(value, Mapping):
        raise InputError("value", f"must be a dict (or None to delete), got {type(value).__name__}")
    for name in value:
        if not isinstance(name, str):
            raise InputError("value", f"keys must be strings, got {name!r:.80}")
    try:
        text = json.dumps(dict(value), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InputError("value", f"must be JSON (str keys; str, number, bool, None, list, dict): {exc}") from None
    return validate_text(text, "value")


def _count(value: object, field: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InputError(field, f"must be an integer of at least {least}, got {value!r:.80}")
    return value


def _check_filter(filter: object, field: str) -> Mapping[str, Any]:
    if filter is None:
        return {}
    if not isinstance(filter, Mapping):
        raise InputError(field, f"must be a dict of the value's fields, got {type(filter).__name__}")
    for name, wanted in filter.items():
        if not isinstance(name, str):
            raise InputError(field, f"keys must be strings, got {name!r:.80}")
        if isinstance(wanted, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in wanted):
            unknown = [k for k in wanted if k not in _ORDER]
            if unknown:
                raise InputError(f"{field}.{name}", f"unknown operator {unknown[0]!r}: use one of {sorted(_ORDER)}")
        elif isinstance(wanted, Mapping):
            _check_filter(wanted, f"{field}.{name}")
    return filter


def _check_list(op: ListNamespacesOp) -> _List:
    conditions = []
    for n, condition in enumerate(op.match_conditions or ()):
        kind = getattr(condition, "match_type", None)
        if kind not in ("prefix", "suffix"):
            raise InputError(f"match_conditions[{n}].match_type", f"must be 'prefix' or 'suffix', got {kind!r:.80}")
        path = condition.path
        if isinstance(path, (str, bytes)) or not isinstance(path, Sequence):
            raise InputError(kind, f"must be a tuple of labels, got {type(path).__name__}")
        labels = tuple(p if p == "*" else _label(p, f"{kind}[{i}]") for i, p in enumerate(path))
        conditions.append(MatchCondition(match_type=kind, path=labels))
    prefix = next((c.path for c in conditions if c.match_type == "prefix"), ())
    scope = _scope(tuple(prefix), "prefix", wildcard=True)
    max_depth = None if op.max_depth is None else _count(op.max_depth, "max_depth", 1)
    return _List(scope, tuple(conditions), max_depth, _count(op.limit, "limit", 1), _count(op.offset, "offset", 0))


# -- records to items ------------------------------------------------------------------------
def _session_id(namespace: tuple[str, ...], key: str) -> str:
    """One session per item: a hash, since a namespace and key may be longer than an id may be."""
    digest = hashlib.sha256(json.dumps([namespace, key]).encode()).hexdigest()
    return f"langgraph-{digest[:40]}"


def _value(record: MemoryRecord) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(str(record.metadata[VALUE]))
    return value


def _item_namespace(record: MemoryRecord) -> tuple[str, ...]:
    return tuple(json.loads(str(record.metadata[NAMESPACE])))


def _item_fields(record: MemoryRecord) -> dict[str, Any]:
    return {"namespace": _item_namespace(record), "key": str(record.metadata[KEY]), "value": _value(record),
            "created_at": record.timestamp, "updated_at": record.recorded_at}


def _item(record: MemoryRecord) -> Item:
    return Item(**_item_fields(record))


def _search_item(record: MemoryRecord, score: float | None = None) -> SearchItem:
    return SearchItem(**_item_fields(record), score=score)


def _holds(actual: Any, wanted: Any) -> bool:
    """Whether a value (or one of its fields) passes a filter (or one of its conditions)."""
    if isinstance(wanted, Mapping) and any(str(k).startswith("$") for k in wanted):
        return all(_compare(actual, _ORDER[name], operand) for name, operand in wanted.items())
    if isinstance(wanted, Mapping):
        return isinstance(actual, Mapping) and all(_holds(actual.get(k), v) for k, v in wanted.items())
    return bool(actual == wanted)


def _compare(actual: Any, test: Callable[[Any, Any], Any], operand: Any) -> bool:
    try:
        return bool(test(actual, operand))
    except TypeError:  # "3" > 2, None < 1: values of different kinds never match
        return False


def _matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    part = namespace[: len(path)] if condition.match_type == "prefix" else namespace[len(namespace) - len(path) :]
    return all(p in ("*", label) for p, label in zip(path, part))


__all__ = ["MemagentStore"]
