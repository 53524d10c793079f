"""Property-based tests (issue 12): whatever a caller passes, a call either succeeds and what was
stored comes back exactly, or raises ``InputError`` and changes nothing; never another exception.
And users stay apart: after any interleaving of adds, updates and deletes, each user sees exactly
what a plain dict of their records predicts.

Most properties run on ``HashEmbedder`` (a deterministic stand-in: the properties are about
validation and storage, not ranking); one runs on the real embedder. Under CI the examples are
derandomized, so a run is repeatable; elsewhere hypothesis explores afresh each time.

Not fuzzed here: a lone surrogate in ``update(value=...)`` or in a search query, which still
escapes as ``UnicodeEncodeError`` (see the strict xfail in test_input_regressions.py).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from memagent import InputError, Memory, MemoryConfig, MemoryRecord, RecordNotFound, SearchFilters
from memagent.schema import parse_timestamp
from tests.conftest import exchange
from tests.fakes import HashEmbedder, snapshot

FUZZ = settings(deadline=None, derandomize=bool(os.environ.get("CI")),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def fast(tmp_path: Path) -> Memory:
    """One store for all the examples of a test: each example checks its own records."""
    return Memory(MemoryConfig(), path=tmp_path / "store", embedder=HashEmbedder())


# -- strategies: each mostly valid (so round trips get checked), sometimes anything ---------------
def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` seven times in eight, ``bad`` otherwise (shrinking goes towards ``good``)."""
    return st.sampled_from([good] * 7 + [bad]).flatmap(lambda chosen: chosen)


def no_surrogates(text: str) -> bool:
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


SPECIAL = ["", " ", "\n", "\t", "\x00", "a\x00b", "\ud800", "x\udfffy", "\u2028", "\x85", "\r\n", "é", "👍",
           "user: ", "$and", "meta_x", "x" * 256, "x" * 257]
ANY_TEXT = st.one_of(st.text(max_size=20), st.text(st.characters(exclude_categories=()), max_size=20),
                     st.sampled_from(SPECIAL))
# valid Unicode, NULs and control characters included (the default alphabet has no lone surrogates)
CLEAN_TEXT = st.one_of(st.text(max_size=20), st.sampled_from([t for t in SPECIAL if no_surrogates(t)]))
TEXT = mostly(CLEAN_TEXT, ANY_TEXT)
GOOD_IDS = st.one_of(st.sampled_from(["ana", "bo", "s1", "s2", "a b", "é", "a" * 256, "$and", "user: x", "a\u2028b"]),
                     st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=12))
IDS = mostly(GOOD_IDS, st.one_of(ANY_TEXT, st.integers(), st.none(), st.floats(), st.binary(max_size=4),
                                 st.lists(st.text(max_size=2), max_size=2)))
INT64_EDGES = [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**30]
GOOD_VALUES = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1),
                        st.floats(allow_nan=False, allow_infinity=False), CLEAN_TEXT)
META_VALUES = mostly(GOOD_VALUES, st.one_of(st.integers(), st.sampled_from(INT64_EDGES), st.floats(), ANY_TEXT,
                                            st.none(), st.lists(st.integers(), max_size=2)))
GOOD_KEYS = st.one_of(st.sampled_from(["mood", "n", "k" * 256, "$and", "meta_x", "a.b", "é"]),
                      st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=8))
META_KEYS = mostly(GOOD_KEYS, st.one_of(ANY_TEXT, st.integers(), st.sampled_from(["k" * 257, "a\x00b", " "])))
METADATA = mostly(st.one_of(st.none(), st.dictionaries(META_KEYS, META_VALUES, max_size=3)),
                  st.one_of(st.lists(st.integers(), max_size=2), ANY_TEXT))
UTC_TIMES = st.sampled_from([timezone.utc, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))])
GOOD_TIMES = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1901, 1, 1), max_value=datetime(2198, 12, 31), timezones=st.none() | UTC_TIMES),
    st.integers(-(2**31), 2**32), st.floats(-2e9, 7e9),
    st.sampled_from(["2023/05/20 (Sat) 02:21", "2023-05-20", "1900-01-01T00:00:00Z", "2199-12-31T23:59:59.999999"]),
)
TIMES = mostly(GOOD_TIMES, st.one_of(
    st.datetimes(timezones=st.none() | UTC_TIMES), st.floats(), st.integers(), ANY_TEXT,
    st.sampled_from(["9999-12-31T23:59:59.999999", "0001-01-01T00:00:00+05:00", "2023-02-30T00:00", "soon"]),
))
GOOD_MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]), "content": TEXT})
ROLES = st.one_of(st.sampled_from(["user", "assistant", "system", "robot", "", "USER"]), st.integers(), st.none())
BAD_MESSAGE = st.one_of(st.fixed_dictionaries({}, optional={"role": ROLES, "content": st.one_of(
    ANY_TEXT, st.integers(), st.none())}), st.integers(), st.text(max_size=3))
MESSAGES = mostly(st.lists(GOOD_MESSAGE, min_size=1, max_size=5),
                  st.one_of(st.lists(mostly(GOOD_MESSAGE, BAD_MESSAGE), max_size=4), ANY_TEXT, st.none()))
GOOD_FILTERS = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={"session_ids": st.lists(GOOD_IDS, min_size=1, max_size=3),
                                        "start": GOOD_TIMES, "end": GOOD_TIMES,
                                        "metadata": st.dictionaries(GOOD_KEYS, GOOD_VALUES, max_size=2)}),
    st.sampled_from([SearchFilters(), SearchFilters(session_ids=["s1"]), SearchFilters(metadata={"n": 1})]),
)
FILTERS = mostly(GOOD_FILTERS, st.one_of(
    st.fixed_dictionaries({}, optional={"session_ids": st.one_of(st.lists(IDS, max_size=3), IDS), "start": TIMES,
                                        "end": TIMES, "metadata": METADATA, "colour": st.integers()}),
    st.lists(st.integers(), max_size=2), ANY_TEXT, st.integers(),
))
KS = mostly(st.one_of(st.none(), st.integers(1, 30)),
            st.one_of(st.integers(), st.floats(), st.booleans(), st.sampled_from([2**63, 100_000, 100_001])))


def rounds_of(messages: list[dict[str, str]]) -> list[str]:
    """What ``add`` stores: one value per user turn and the replies after it, system messages dropped."""
    rounds: list[list[str]] = []
    for message in messages:
        if message["role"] == "system":
            continue
        if message["role"] == "user" or not rounds:
            rounds.append([])
        rounds[-1].append(f"{message['role']}: {message['content']}")
    return list(dict.fromkeys("\n".join(lines) for lines in rounds))


def typed(metadata: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    return {name: (type(value), value) for name, value in metadata.items()}


def same_metadata(stored: dict[str, Any], given: dict[str, Any]) -> bool:
    """Equal keys, types and values; except that a float may come back one ulp off.

    Chroma 1.5.9 stores a float exactly (a filter on it finds the record) but reads some back one
    unit in the last place off: 0.9971415884291277 comes back as 0.9971415884291276. About one
    arbitrary float in six; floats with few digits (0.1, 98.6) come back exactly. This is Chroma's,
    not memagent's (a bare Chroma collection does the same); see the strict xfail in
    test_input_regressions.py.
    """
    if stored.keys() != given.keys():
        return False
    for name, value in given.items():
        back = stored[name]
        if type(back) is not type(value):
            return False
        if isinstance(value, float) and back != value:
            event("a float metadata value came back one ulp off (Chroma)")
            if abs(back - value) > math.ulp(max(abs(back), abs(value))):
                return False
        elif back != value:
            return False
    return True


def same(stored: MemoryRecord, given: MemoryRecord) -> bool:
    """The same record, metadata compared by ``same_metadata``."""
    return (stored.model_copy(update={"metadata": {}}) == given.model_copy(update={"metadata": {}})
            and same_metadata(stored.metadata, given.metadata))


def check_add(memory: Memory, messages: Any, user: Any, session: Any, when: Any, metadata: Any) -> None:
    """One ``add``: an exact round trip of what it returns, or an InputError that stored nothing."""
    before = snapshot(memory)
    try:  # what the session holds already (a session_id of None means a new session)
        probe = "no-such-session" if session is None else session
        prior = {r.value for r in memory.get_all(user_id=user, filters={"session_ids": [probe]})}
    except InputError:
        prior = None  # the user or session id is bad: the add must be refused too
    try:
        added = memory.add(messages, user_id=user, session_id=session, timestamp=when, metadata=metadata)
    except InputError as refused:
        event(f"add refused: {refused.field.split('[')[0].split('.')[0]}")
        assert snapshot(memory) == before
        return
    event(f"add stored {min(len(added), 2)} records" + (" or more" if len(added) >= 2 else ""))
    assert prior is not None
    assert [r.value for r in added] == [v for v in rounds_of(messages) if v not in prior]
    assert len(snapshot(memory)[0]) == len(before[0]) + len(added)
    for record in added:
        assert (record.user_id, record.key) == (user, record.value)
        assert record.session_id == session or (session is None and len(record.session_id) == 32)
        assert typed(record.metadata) == typed(dict(metadata or {}))
        if when is not None:
            assert record.timestamp == parse_timestamp(when)
        stored = memory.get(record.id, user_id=user)
        assert same(stored, record)
        assert stored in memory.get_all(user_id=user, filters={"session_ids": [record.session_id]})


# -- every call: round trip or InputError --------------------------------------------------------
@settings(FUZZ, max_examples=150)
@given(messages=MESSAGES, user=IDS, session=IDS, when=TIMES, metadata=METADATA)
def test_add_round_trips_exactly_or_raises_input_error(fast: Memory, messages, user, session, when, metadata) -> None:
    check_add(fast, messages, user, session, when, metadata)


@settings(FUZZ, max_examples=20)
@given(messages=st.lists(GOOD_MESSAGE, min_size=1, max_size=3), user=IDS, session=IDS, when=TIMES, metadata=METADATA)
def test_add_round_trips_on_the_real_embedder(memory: Memory, messages, user, session, when, metadata) -> None:
    check_add(memory, messages, user, session, when, metadata)


def populated(memory: Memory) -> Memory:
    if memory.store.count() == 0:
        for user in ("ana", "bo"):
            for n, words in enumerate(["I live in Porto", "my dog is Pixel", "tea with milk"]):
                memory.add(exchange(words), user_id=user, session_id=f"s{n % 2 + 1}", timestamp=1_700_000_000 + n,
                           metadata={"n": n, "who": user})
    return memory


@settings(FUZZ, max_examples=150)
@given(query=CLEAN_TEXT, user=mostly(st.sampled_from(["ana", "bo"]), IDS), k=KS, filters=FILTERS, asked=TIMES)
def test_search_and_get_all_return_only_the_users_records_or_raise_input_error(fast: Memory, query, user, k, filters,
                                                                              asked) -> None:
    memory = populated(fast)
    before = snapshot(memory)
    try:
        hits = memory.search(query, user_id=user, k=k, filters=filters, question_date=asked)
        event("search found some" if hits else "search found none")
    except InputError as refused:
        event(f"search refused: {refused.field.split('[')[0].split('.')[0]}")
        hits = None
    if hits is not None:
        assert len(hits) <= (k or memory.config.k)
        for hit in hits:
            assert hit.record.user_id == user and same(memory.get(hit.record.id, user_id=user), hit.record)
    try:
        records = memory.get_all(user_id=user, filters=filters)
    except InputError:
        records = None
    if records is not None:
        assert all(r.user_id == user for r in records)
        assert all(same(memory.get(r.id, user_id=user), r) for r in records)
    assert snapshot(memory) == before


@settings(FUZZ, max_examples=50)
@given(value=mostly(st.none() | CLEAN_TEXT, st.integers()), metadata=st.none() | METADATA,
       target=mostly(st.just("own"), st.just("other's") | IDS))
def test_update_round_trips_or_raises_and_changes_nothing(fast: Memory, value, metadata, target) -> None:
    memory = populated(fast)
    own, others = memory.get_all(user_id="ana")[0], memory.get_all(user_id="bo")[0]
    record_id = {"own": own.id, "other's": others.id}.get(target, target) if isinstance(target, str) else target
    before, history = snapshot(memory), memory.history(own.id, user_id="ana")
    try:
        new = memory.update(record_id, user_id="ana", value=value, metadata=metadata)
    except (InputError, RecordNotFound) as refused:
        event(f"update refused: {type(refused).__name__}")
        assert snapshot(memory) == before
        return
    event("update stored")
    assert record_id == own.id
    assert same(memory.get(own.id, user_id="ana"), new)
    assert new.value == (own.value if value is None else value)
    assert same_metadata(new.metadata, own.metadata if metadata is None else dict(metadata))
    assert [e.previous for e in memory.history(own.id, user_id="ana")] == [e.previous for e in history] + [own]


JSON_VALUES = st.one_of(ANY_TEXT, st.integers(), st.sampled_from(INT64_EDGES), st.floats(), st.none(), st.booleans(),
                        st.lists(st.integers(), max_size=2), st.dictionaries(META_KEYS, META_VALUES, max_size=2),
                        st.sampled_from(["2023-05-20T02:21:00", "9999-12-31T23:59:59.999999", "ana", "bo"]))
OWNER = "<the importing user>"
ISO_TIMES = st.datetimes(min_value=datetime(1901, 1, 1), max_value=datetime(2198, 12, 31),
                         timezones=st.none() | UTC_TIMES).map(datetime.isoformat)
GOOD_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "id": GOOD_IDS, "user_id": st.just(OWNER), "session_id": GOOD_IDS, "agent_id": st.none() | GOOD_IDS,
    "run_id": st.none() | GOOD_IDS, "round_index": st.integers(0, 2**63 - 1), "value": CLEAN_TEXT.filter(str.strip),
    "key": CLEAN_TEXT.filter(str.strip), "timestamp": ISO_TIMES, "recorded_at": ISO_TIMES,
    "metadata": st.dictionaries(GOOD_KEYS, GOOD_VALUES, max_size=2),
}
CHANGE = st.sampled_from(sorted(GOOD_FIELDS)).flatmap(
    lambda name: st.tuples(st.just(name), mostly(GOOD_FIELDS[name], JSON_VALUES)))
LINES = mostly(
    st.lists(CHANGE, max_size=3),  # an exported record with some fields changed
    st.one_of(st.text(max_size=20), st.sampled_from(["[]", "null", "1", '"x"', "{}", "[" * 5000, "{bad"])),
)
_unique = itertools.count()


@settings(FUZZ, max_examples=60)
@given(lines=st.lists(LINES, min_size=1, max_size=3), source_kind=mostly(st.sampled_from(["lines", "path", "iter"]),
                                                                         st.just("odd")),
       odd=st.one_of(st.integers(), st.none(), st.binary(max_size=3), st.just({"id": "x"}), st.just("/no/such.jsonl")))
def test_import_round_trips_or_raises_input_error_and_changes_nothing(fast: Memory, tmp_path, lines, source_kind,
                                                                      odd) -> None:
    # a new owner per example: an id an earlier example stored is then another user's, and must be refused
    # (re-importing one's own record with another agent_id is a known store bug: the strict xfail in
    # test_input_regressions.py)
    memory, owner = populated(fast), f"owner-{next(_unique)}"
    template = {**json.loads(memory.get_all(user_id="ana")[0].model_dump_json()), "user_id": owner}
    texts = []
    for line in lines:
        if isinstance(line, list):
            data = {**template, "id": f"imported-{next(_unique)}", **dict(line)}
            data["user_id"] = owner if data["user_id"] == OWNER else data["user_id"]
            texts.append(json.dumps(data))
        else:
            texts.append(line)
    path = tmp_path / f"export-{next(_unique)}.jsonl"
    path.write_text("\n".join(texts), encoding="utf-8", errors="surrogatepass")
    source: Any = {"lines": texts, "path": path, "iter": iter(texts), "odd": odd}[source_kind]
    before = snapshot(memory)
    try:
        count = memory.import_(source, user_id=owner)
    except InputError as refused:
        taken = "belongs to another user" in str(refused)
        event("import refused: another user's id" if taken else f"import refused: {refused.field.split('.')[0]}")
        assert snapshot(memory) == before
        return
    event("import stored")
    expected = [MemoryRecord.model_validate(json.loads(t)) for t in texts if t.strip()]
    assert count == len(expected)
    for record in expected:
        utc = {name: parse_timestamp(getattr(record, name)) for name in ("timestamp", "recorded_at")}
        stored = memory.get(record.id, user_id=owner)
        assert same(stored, record.model_copy(update=utc))
    assert len(memory.get_all(user_id=owner)) == count


# -- isolation: a dict of each user's records predicts every read -------------------------------
USERS = ["ana", "Ana", "ana ", "bo"]
WORDS = ["I live in Porto", "my dog is Pixel", "tea with milk", "I live in Madrid"]
ADD = st.tuples(st.just("add"), st.sampled_from(USERS), st.sampled_from(["s1", "s2"]), st.sampled_from(WORDS))
OPS = st.lists(st.sampled_from([ADD, ADD, ADD,  # adds weigh most, so users hold records to update, delete, steal
                                st.tuples(st.just("update"), st.sampled_from(USERS), st.integers(0, 9),
                                          st.sampled_from(WORDS)),
                                st.tuples(st.just("delete"), st.sampled_from(USERS), st.integers(0, 9)),
                                st.tuples(st.just("steal"), st.sampled_from(USERS), st.integers(0, 9)),
                                st.tuples(st.just("delete_all"), st.sampled_from(USERS))]).flatmap(lambda op: op),
               max_size=16)


def value_of(words: str) -> str:
    return f"user: {words}\nassistant: Noted."


@settings(FUZZ, max_examples=20)
@given(ops=OPS)
def test_users_only_ever_see_their_own_records_as_a_dict_predicts(fast: Memory, ops) -> None:
    memory, run = fast, next(_unique)
    model: dict[str, dict[str, tuple[str, str]]] = {f"{run}/{u}": {} for u in USERS}  # user -> id -> (session, value)
    for op, user, *args in ops:
        user = f"{run}/{user}"
        mine = sorted(model[user])
        if op == "add":
            session, words = args
            added = memory.add(exchange(words), user_id=user, session_id=session)
            held = {v for s, v in model[user].values() if s == session}
            assert [r.value for r in added] == ([] if value_of(words) in held else [value_of(words)])
            model[user].update({r.id: (session, r.value) for r in added})
        elif op == "update" and mine:
            record_id = mine[args[0] % len(mine)]
            memory.update(record_id, user_id=user, value=value_of(args[1]))
            model[user][record_id] = (model[user][record_id][0], value_of(args[1]))
        elif op == "delete" and mine:
            record_id = mine[args[0] % len(mine)]
            memory.delete(record_id, user_id=user)
            del model[user][record_id]
        elif op == "steal":
            theirs = sorted(i for u, records in model.items() if u != user for i in records)
            if theirs:
                record_id = theirs[args[0] % len(theirs)]
                with pytest.raises(RecordNotFound):
                    memory.get(record_id, user_id=user)
                with pytest.raises(RecordNotFound):
                    memory.delete(record_id, user_id=user)
                with pytest.raises(RecordNotFound):
                    memory.update(record_id, user_id=user, value="user: taken")
        elif op == "delete_all":
            assert memory.delete_all(user_id=user) == len(model[user])
            model[user] = {}
    event(f"{len(ops) // 5 * 5}+ operations, {min(sum(map(len, model.values())) // 3 * 3, 6)}+ records at the end")
    for user, records in model.items():
        assert {r.id: (r.session_id, r.value) for r in memory.get_all(user_id=user)} == records
        hits = memory.search("where do I live, my dog, tea", user_id=user, k=20)
        assert all(h.record.user_id == user and h.record.id in records for h in hits)
        assert bool(hits) == bool(records)
        assert all(math.isfinite(h.score) for h in hits)
