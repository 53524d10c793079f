"""Issue 12 (defects 4, 5, 6): bad input is an ``InputError`` naming the field, and changes nothing.

One test per defect the fuzzing probe found, named after it, through the public API; then each
kind of input it sent, refused or round-tripped (the decision is written beside each case).
Tests that write thousands of records use ``HashEmbedder`` (a deterministic stand-in for the
model, so they take a second instead of minutes); the rest use the real fixtures.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from memagent import InputError, Memory, MemoryConfig, MemoryRecord, ScriptedLLM
from tests.conftest import exchange
from tests.fakes import HashEmbedder, _rows, snapshot


def fast_memory(path: Path, **settings: Any) -> Memory:
    return Memory(MemoryConfig(**settings), path=path, embedder=HashEmbedder())


def line_of(memory: Memory, user: str, **changes: Any) -> str:
    """The user's first record as an export line, with ``changes`` made to its JSON."""
    buffer = io.StringIO()
    memory.export(buffer, user_id=user)
    data = json.loads(buffer.getvalue().splitlines()[0])
    data.update(changes)
    return json.dumps(data)


# -- (a) an import past Chroma's batch size whose last line is bad wrote the batches before it ----
@pytest.mark.parametrize(
    ("bad", "field"),
    [
        # Chroma raised half-way through the write
        ({"metadata": {"mood": "\ud800"}}, r"^line 5463\.metadata\.mood: is not valid Unicode"),
        ({"metadata": {"n": 2**63}}, r"^line 5463\.metadata\.n: .* outside int64"),  # Chroma stored a float
        ({"metadata": {"n": math.nan}}, r"^line 5463\.metadata\.n: must be a finite number"),  # Chroma dropped it
        ({"value": "x\ud800"}, r"^line 5463\.value: is not valid Unicode"),  # the embedder's cache raised
    ],
    ids=["surrogate-metadata", "int-past-int64", "nan-metadata", "surrogate-value"],
)
def test_import_past_chromas_batch_size_with_a_bad_last_line_changes_nothing(tmp_path, bad, field) -> None:
    memory = fast_memory(tmp_path / "store")
    memory.add(exchange("I play the cello"), user_id="ana", session_id="s0")
    batch = memory.store.client.get_max_batch_size()
    assert batch == 5461  # the line numbers above: 5462 good lines fill one batch and start a second
    template = json.loads(line_of(memory, "ana"))
    lines = [json.dumps({**template, "id": f"r{i}", "session_id": f"s{i + 1}", "value": f"user: fact {i}",
                         "key": f"user: fact {i}"}) for i in range(batch + 1)]
    lines.append(json.dumps({**template, "id": "last", "session_id": "last", **bad}))
    before = snapshot(memory)
    with pytest.raises(InputError, match=field):
        memory.import_(lines, user_id="ana")
    assert snapshot(memory) == before
    assert [r.value for r in memory.get_all(user_id="ana")] == ["user: I play the cello\nassistant: Noted."]


# -- (b) an import line with user_id "" was stored as a record of no one -------------------------
@pytest.mark.parametrize("as_user", [None, "eve"])
def test_an_import_line_with_an_empty_user_id_fails_and_changes_nothing(memory: Memory, as_user) -> None:
    memory.add(exchange("I play the cello"), user_id="ana", session_id="s1")
    line = line_of(memory, "ana", user_id="", id="fresh-id", value="user: nobody's")
    before = snapshot(memory)
    with pytest.raises(InputError, match=r"^line 1\.user_id: must be a non-empty string"):
        memory.import_([line], user_id="ana", as_user=as_user)
    assert snapshot(memory) == before


# -- (c) an import line carrying another user's record id overwrote that user's record -----------
def test_an_import_line_with_another_users_record_id_cannot_take_that_record_over(memory: Memory) -> None:
    (bos,) = memory.add(exchange("My locker code is 4417"), user_id="bo", session_id="s1")
    memory.add(exchange("I play the cello"), user_id="ana", session_id="s1")
    memory.update(bos.id, user_id="bo", metadata={"checked": True})
    history = memory.history(bos.id, user_id="bo")
    kept = memory.get(bos.id, user_id="bo")
    line = line_of(memory, "ana", id=bos.id, value="user: my locker code is 0000")
    bos_collection = _rows(memory.store.records("bo"))
    # each user's records live in a collection of their own: the line lands in ana's, never in bo's
    memory.import_([line], user_id="ana")
    assert _rows(memory.store.records("bo")) == bos_collection
    assert memory.get(bos.id, user_id="bo") == kept and memory.history(bos.id, user_id="bo") == history
    assert memory.get(bos.id, user_id="ana").value == "user: my locker code is 0000"
    assert [h.record.user_id for h in memory.search("locker code", user_id="bo")] == ["bo"]


# -- (d) ids hashed "user\0session\0value": a NUL moved between two ids made the same id ------------
def test_ids_that_differed_only_by_where_a_nul_sits_are_refused_or_cannot_collide(memory: Memory) -> None:
    stored: dict[str, list[MemoryRecord]] = {}
    for user, session in (("v\0x", "s"), ("v", "x\0s")):
        try:
            stored[user] = memory.add(exchange("the same words"), user_id=user, session_id=session)
        except InputError as refused:
            assert str(refused).startswith(("user_id: ", "session_id: "))
    for user, records in stored.items():  # whatever was accepted is its user's, unchanged
        assert memory.get_all(user_id=user) == records
    ids = [r.id for records in stored.values() for r in records]
    assert len(ids) == len(set(ids))


def test_session_mode_add_cannot_return_or_take_over_another_users_session_record(make_memory) -> None:
    memory = make_memory(granularity="session")
    stored: dict[str, list[MemoryRecord]] = {}
    for user, session, words in (("v\0x", "s", "first user's secret"), ("v", "x\0s", "second user's words")):
        try:
            stored[user] = memory.add(exchange(words), user_id=user, session_id=session)
        except InputError as refused:
            assert str(refused).startswith(("user_id: ", "session_id: "))
    for user, records in stored.items():
        assert memory.get_all(user_id=user) == records
        assert all(r.user_id == user for r in records)
    if "v" in stored:
        assert "secret" not in "".join(r.value for r in stored["v"])


def test_an_imported_record_cannot_squat_the_id_of_another_users_future_session_record(make_memory) -> None:
    memory = make_memory(granularity="session")
    memory.add(exchange("ana's own"), user_id="ana", session_id="a1")
    (probe,) = memory.add(exchange("probe"), user_id="bo", session_id="s1")  # learn the id bo's s1 record gets
    memory.delete_all(user_id="bo")
    memory.import_([line_of(memory, "ana", id=probe.id, value="user: ana's planted record")], user_id="ana")
    planted = memory.get(probe.id, user_id="ana")
    try:
        memory.add(exchange("bo's words"), user_id="bo", session_id="s1")
    except InputError:
        pass
    assert memory.get(probe.id, user_id="ana") == planted  # bo's add must not overwrite ana's record


def test_reimporting_a_record_without_its_agent_id_stores_it_without_one(tmp_path) -> None:
    memory = fast_memory(tmp_path / "store")
    memory.add(exchange("I play the cello"), user_id="ana", agent_id="tutor", run_id="r1", session_id="s1")
    line = line_of(memory, "ana", agent_id=None, run_id=None)
    memory.import_([line], user_id="ana")
    (record,) = memory.get_all(user_id="ana")
    assert (record.agent_id, record.run_id) == (None, None)
    assert memory.get_all(user_id="ana", agent_id="tutor") == []


# -- (e) a year-9999 timestamp was stored, and reading it back failed for every read of the user ----
@pytest.mark.parametrize("when", ["9999-12-31T23:59:59.999999", "9999-12-31T23:59:59-05:00",
                                  "0001-01-01T00:00:00+05:00", 253402300800.0])
def test_a_far_future_timestamp_is_refused_and_the_users_memories_stay_readable(memory: Memory, when) -> None:
    (kept,) = memory.add(exchange("I live in Porto"), user_id="ana", session_id="s1")
    before = snapshot(memory)
    with pytest.raises(InputError, match=r"^timestamp: "):
        memory.add(exchange("I moved to Madrid"), user_id="ana", session_id="s2", timestamp=when)
    assert snapshot(memory) == before
    assert memory.get_all(user_id="ana") == [kept]
    assert [h.record for h in memory.search("where do I live", user_id="ana")] == [kept]


# -- (f) update logged history before writing: a write that failed left a history entry -------------
@pytest.mark.parametrize(
    "change",
    [{"metadata": {"mood": "\ud800"}}, {"metadata": {"n": math.nan}}, {"metadata": {"n": -(2**63) - 1}},
     {"value": "user: I moved to \ud800"}],
    ids=["surrogate-metadata", "nan-metadata", "int-below-int64", "surrogate-value"],
)
def test_an_update_that_fails_leaves_no_history_entry(memory: Memory, change) -> None:
    (record,) = memory.add(exchange("I live in Porto"), user_id="ana", session_id="s1")
    before = snapshot(memory)
    with pytest.raises(ValueError):  # InputError; see the strict xfail below for the value's error type
        memory.update(record.id, user_id="ana", **change)
    assert memory.history(record.id, user_id="ana") == []
    assert snapshot(memory) == before and memory.get(record.id, user_id="ana") == record


@pytest.mark.parametrize("call", ["update", "search"])
def test_a_lone_surrogate_in_an_update_value_or_a_query_is_an_input_error(memory: Memory, call) -> None:
    (record,) = memory.add(exchange("I live in Porto"), user_id="ana", session_id="s1")
    with pytest.raises(InputError, match=r"^(value|query): is not valid Unicode"):
        if call == "update":
            memory.update(record.id, user_id="ana", value="user: \ud800")
        else:
            memory.search("where \ud800", user_id="ana")


# -- every kind of input the probe sent: refused with the field, or round-tripped ----------------
def _add(messages: list[dict[str, Any]] | None = None, user_id: str = "ana",
         **kwargs: Any) -> Callable[[Memory], object]:
    return lambda m: m.add(messages or exchange("hello there"), user_id=user_id, session_id="s9", **kwargs)


REFUSED: list[tuple[str, Callable[[Memory], object], str]] = [
    # refuse: a lone surrogate has no UTF-8 form; Chroma, the embedding cache and JSONL cannot hold it
    ("surrogate-content", _add(messages=exchange("caf\udce9")), r"^messages\[0\]\.content: is not valid Unicode"),
    ("surrogate-reply", _add(messages=exchange("hi", "\ud83d")), r"^messages\[1\]\.content: is not valid Unicode"),
    # refuse: a blank user turn (skipping it would hang its reply on the round before, unannounced)
    ("empty-user", _add(messages=exchange("")), r"^messages\[0\]\.content: is empty"),
    ("blank-user", _add(messages=exchange("hi") + exchange(" \n\t")), r"^messages\[2\]\.content: is empty"),
    ("blank-greeting", _add(messages=[{"role": "assistant", "content": " "}]), r"^messages\[0\]\.content: is empty"),
    ("role-not-str", _add(messages=[{"role": ["user"], "content": "hi"}]), r"^messages\[0\]\.role: unknown role"),
    # refuse: metadata values Chroma would drop (NaN), cannot filter (inf) or turns into floats (past int64)
    ("nan", _add(metadata={"x": math.nan}), r"^metadata\.x: must be a finite number"),
    ("inf", _add(metadata={"x": math.inf}), r"^metadata\.x: must be a finite number"),
    ("-inf", _add(metadata={"x": -math.inf}), r"^metadata\.x: must be a finite number"),
    ("int64+1", _add(metadata={"x": 2**63}), r"^metadata\.x: 9223372036854775808 is outside int64"),
    ("huge-int", _add(metadata={"x": 10**5000}), r"^metadata\.x: .* is outside int64"),
    ("surrogate-value", _add(metadata={"x": "\udfff"}), r"^metadata\.x: is not valid Unicode"),
    ("list-value", _add(metadata={"x": [1]}), r"^metadata\.x: must be a str, int, float or bool"),
    # refuse: keys that are not non-empty strings of at most 256 printable characters
    ("int-key", _add(metadata={1: "a"}), r"^metadata: keys must be non-empty strings, got 1"),
    ("empty-key", _add(metadata={"": "a"}), r"^metadata: keys must be non-empty strings"),
    ("blank-key", _add(metadata={"  ": "a"}), r"^metadata: keys must be non-empty strings"),
    ("long-key", _add(metadata={"k" * 257: "a"}), r"^metadata: key .* has 257 characters"),
    ("nul-key", _add(metadata={"a\0b": 1}), r"^metadata: key 'a\\x00b' must not contain control characters"),
    ("newline-key", _add(metadata={"a\nb": 1}), r"^metadata: key .* must not contain control characters"),
    ("surrogate-key", _add(metadata={"\ud800": 1}), r"^metadata: key '\\ud800' is not valid Unicode"),
    ("metadata-list", _add(metadata=[("a", 1)]), r"^metadata: must be a dict, got list"),
    # ids: checked by validate_id at HEAD (non-strings, NUL, 1M characters, surrogates)
    ("id-int", lambda m: m.get(5, user_id="ana"), r"^record_id: must be a non-empty string"),
    ("user-1M", _add(user_id="u" * 1_000_000), r"^user_id: has 1000000 characters"),
    ("user-surrogate", _add(user_id="\ud800"), r"^user_id: is not valid Unicode"),
    ("session-ids-int", lambda m: m.search("hi", user_id="ana", filters={"session_ids": ["s1", 2]}),
     r"^filters\.session_ids\[1\]: must be a non-empty string"),
    ("session-ids-str", lambda m: m.get_all(user_id="ana", filters={"session_ids": "s1"}),
     r"^filters\.session_ids: must be a list of session ids, got str"),
    ("session-ids-surrogate", lambda m: m.get_all(user_id="ana", filters={"session_ids": ["\ud800"]}),
     r"^filters\.session_ids\[0\]: is not valid Unicode"),
    # filters that are not a mapping or a SearchFilters
    ("filters-list", lambda m: m.search("hi", user_id="ana", filters=[("metadata", {})]),
     r"^filters: must be a dict or a SearchFilters, got list"),
    ("filters-str", lambda m: m.get_all(user_id="ana", filters="session_ids"), r"^filters: must be a dict .*got str"),
    ("filters-int", lambda m: m.search("hi", user_id="ana", filters=3), r"^filters: must be a dict .*got int"),
    # filter values no record can hold (Chroma raised "Invalid where clause" on these)
    ("filter-nan", lambda m: m.search("hi", user_id="ana", filters={"metadata": {"x": math.nan}}),
     r"^filters\.metadata\.x: must be a finite number"),
    ("filter-inf", lambda m: m.get_all(user_id="ana", filters={"metadata": {"x": math.inf}}),
     r"^filters\.metadata\.x: must be a finite number"),
    ("filter-int64", lambda m: m.search("hi", user_id="ana", filters={"metadata": {"x": -(2**63) - 1}}),
     r"^filters\.metadata\.x: .* is outside int64"),
    ("filter-surrogate", lambda m: m.search("hi", user_id="ana", filters={"metadata": {"x": "\ud800"}}),
     r"^filters\.metadata\.x: is not valid Unicode"),
    ("filter-key", lambda m: m.search("hi", user_id="ana", filters={"metadata": {"": 1}}),
     r"^filters\.metadata: keys must be non-empty strings"),
    ("filter-big-input", lambda m: m.search("hi", user_id="ana", filters={"colour": 10**5000}),
     r"^filters\.colour: Extra inputs are not permitted"),
    # k and timestamps: bounded at HEAD
    ("k-2**63", lambda m: m.search("hi", user_id="ana", k=2**63), r"^k: must be a positive integer"),
    ("offset-at-year-1", _add(timestamp="0001-01-01T00:00:00+05:00"), r"^timestamp: .* outside the supported range"),
    ("filter-end-year-9999", lambda m: m.search("hi", user_id="ana", filters={"end": "9999-12-31T23:59:59-05:00"}),
     r"^filters\.end: .* outside the supported range"),
    # import sources that are not a path or an iterable of str, or a path that cannot be read
    ("source-int", lambda m: m.import_(7, user_id="ana"), r"^source: must be a path or an iterable of JSONL lines"),
    ("source-none", lambda m: m.import_(None, user_id="ana"), r"^source: must be a path or an iterable"),
    ("source-bytes", lambda m: m.import_(b"{}", user_id="ana"), r"^source: must be a path or an iterable"),
    ("source-dict", lambda m: m.import_({"id": "x"}, user_id="ana"), r"^source: must be a path or an iterable"),
    ("source-missing", lambda m: m.import_("/no/such/export.jsonl", user_id="ana"), r"^source: no file at"),
    ("source-folder", lambda m: m.import_(Path("/"), user_id="ana"), r"^source: cannot read '/'"),
    ("source-nul-path", lambda m: m.import_("a\0b.jsonl", user_id="ana"), r"^source: cannot read"),
    ("source-bytes-lines", lambda m: m.import_([b"{}"], user_id="ana"), r"^line 1: must be a string, got bytes"),
    # JSON lines that are not objects, or not JSON
    ("line-list", lambda m: m.import_(["[1, 2]"], user_id="ana"), r"^line 1: must be a JSON object .*got list"),
    ("line-null", lambda m: m.import_(["", "null"], user_id="ana"), r"^line 2: must be a JSON object .*got NoneType"),
    ("line-deep", lambda m: m.import_(["[" * 100_000], user_id="ana"), r"^line 1: is not JSON"),
    ("line-missing-field", lambda m: m.import_(['{"id": "x"}'], user_id="ana"),
     r"^line 1: is not a memagent record: user_id: Field required"),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Memory:
    """One store for the refusal cases (each checks that it changed nothing, so they can share it)."""
    memory = fast_memory(tmp_path_factory.mktemp("refusals"))
    memory.add(exchange("I live in Porto"), user_id="ana", session_id="s1", metadata={"x": 1})
    return memory


@pytest.mark.parametrize(("call", "field"), [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_bad_input_is_an_input_error_naming_the_field_and_changes_nothing(shared: Memory, call, field) -> None:
    memory = shared
    before = snapshot(memory)
    with pytest.raises(InputError, match=field):
        call(memory)
    assert snapshot(memory) == before


@pytest.mark.parametrize(
    "change",
    [{"user_id": ""}, {"value": "user: \ud800"}, {"key": "\udc80"}, {"metadata": {"n": 2**64}},
     {"metadata": {"": 1}}, {"round_index": 2**63}, {"timestamp": "9999-12-31T23:59:59.999999"},
     {"session_id": "a\nb"}],
    ids=lambda change: next(iter(change)),
)
def test_a_bad_import_line_is_refused_naming_its_field(shared: Memory, change) -> None:
    memory = shared
    line = line_of(memory, "ana", id="new-id", **change)
    before = snapshot(memory)
    with pytest.raises(InputError, match=rf"^line 2\.{next(iter(change))}\b"):
        memory.import_([line_of(memory, "ana", id="another-id"), line], user_id="ana")
    assert snapshot(memory) == before


# -- round trips: what is accepted comes back exactly ---------------------------------------------
def test_nul_bytes_round_trip_through_content_metadata_search_and_export(make_memory, tmp_path) -> None:
    # round-trip, not refuse: a NUL is valid Unicode, and Chroma (embedded and server) and JSONL keep it
    memory = make_memory()
    (record,) = memory.add(exchange("my pin is 12\x0034", "Not\x00ed."), user_id="ana", session_id="s1",
                           metadata={"tag": "a\x00b", "n": 2**63 - 1, "low": -(2**63), "f": 1e308, "t": True})
    assert record.value == "user: my pin is 12\x0034\nassistant: Not\x00ed."
    assert memory.get(record.id, user_id="ana") == record
    assert memory.get(record.id, user_id="ana").metadata["t"] is True
    assert [h.record for h in memory.search("my pin", user_id="ana", filters={"metadata": {"tag": "a\x00b"}})] == [
        record]
    assert memory.search("my pin", user_id="ana", filters={"metadata": {"tag": "a"}}) == []
    path = tmp_path / "ana.jsonl"
    memory.export(path, user_id="ana")
    other = make_memory(path=tmp_path / "other")
    other.import_(str(path), user_id="ana")
    assert other.get_all(user_id="ana") == [record]


def test_an_export_with_unicode_line_separators_in_values_reads_back_from_a_path(tmp_path) -> None:
    # JSON leaves U+2028 and U+0085 unescaped; str.splitlines cut the line there, so the import failed
    memory = fast_memory(tmp_path / "store")
    memory.add(exchange("line\u2028separator and next\x85line"), user_id="ana", session_id="s1")
    path = tmp_path / "ana.jsonl"
    memory.export(path, user_id="ana")
    other = fast_memory(tmp_path / "other")
    assert other.import_(path, user_id="ana") == 1
    assert other.get_all(user_id="ana") == memory.get_all(user_id="ana")


@pytest.mark.xfail(strict=True, reason="Chroma 1.5.9 (not memagent): some floats are stored exactly but read back one "
                   "ulp off; a bare Chroma collection does the same. Fix in store/chroma.py (keep each float's repr "
                   "beside it) or upgrade Chroma, then drop this mark and the ulp tolerance in test_fuzz.py")
def test_float_metadata_comes_back_bit_exact(tmp_path) -> None:
    memory = fast_memory(tmp_path / "store")
    floats = {"score": 0.9971415884291277, "weight": 430.91544863973445, "tiny": 6.58912413425566e-18}
    (record,) = memory.add(exchange("I rate it"), user_id="ana", session_id="s1", metadata=floats)
    assert memory.get(record.id, user_id="ana").metadata == floats


def test_a_blank_assistant_reply_is_kept_as_given(memory: Memory) -> None:
    # round-trip: a reply that said nothing (a tool call) still belongs to the user's round
    (record,) = memory.add(exchange("what time is it?", ""), user_id="ana", session_id="s1")
    assert record.value == "user: what time is it?\nassistant: "
    assert memory.get(record.id, user_id="ana") == record


def test_a_changed_search_filters_object_is_checked_again(memory: Memory) -> None:
    from memagent import SearchFilters

    filters = SearchFilters(metadata={"x": 1})
    filters.metadata["x"] = math.nan  # a SearchFilters is not frozen
    with pytest.raises(InputError, match=r"^filters\.metadata\.x: must be a finite number"):
        memory.search("hi", user_id="ana", filters=filters)


def test_a_naive_time_in_an_import_line_means_utc(tmp_path) -> None:
    memory = fast_memory(tmp_path / "store")
    memory.add(exchange("I play the cello"), user_id="ana", session_id="s1")
    line = line_of(memory, "ana", id="naive", session_id="s2", timestamp="2023-05-20T02:21:00",
                   recorded_at="2023-05-20T02:22:00")
    memory.import_([line], user_id="ana")
    stored = memory.get("naive", user_id="ana")
    assert stored.timestamp.isoformat() == "2023-05-20T02:21:00+00:00"
    assert stored.recorded_at.isoformat() == "2023-05-20T02:22:00+00:00"


def test_a_query_over_max_query_chars_is_refused_before_any_parsing(make_memory) -> None:
    # issue 12: a 64 KB query once stalled the server in the temporal parser; now it never gets there
    memory = make_memory(max_query_chars=100)
    with pytest.raises(InputError, match=r"^query: has 101 characters, over max_query_chars=100"):
        memory.search("between " * 12 + "a" * 5, user_id="ana")
    with pytest.raises(InputError, match=r"^query: has 101 characters"):
        memory.answer("x" * 101, user_id="ana", llm=ScriptedLLM("ANSWER: x"))
