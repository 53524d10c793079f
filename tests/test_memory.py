"""The Memory API end to end, on the real embedder and an embedded Chroma folder."""

from __future__ import annotations

import asyncio
import io
from datetime import datetime, timezone
from pathlib import Path

import pytest

from memagent import AsyncMemory, InputError, Memory, RecordNotFound, SearchFilters
from memagent.errors import MemagentError
from tests.conftest import exchange
from tests.fakes import HashEmbedder

MAY = "2023/05/20 (Sat) 02:21"


def ids(hits) -> list[str]:
    return [h.record.id for h in hits]


def test_a_session_is_stored_as_rounds_with_their_fields(memory: Memory) -> None:
    session = exchange("I adopted a greyhound called Pixel", "Congratulations!") + exchange("She is two years old")
    first, second = memory.add(session, user_id="ana", session_id="s1", timestamp=MAY)
    assert (first.round_index, second.round_index) == (0, 1)
    assert first.value == "user: I adopted a greyhound called Pixel\nassistant: Congratulations!"
    assert first.timestamp == datetime(2023, 5, 20, 2, 21, tzinfo=timezone.utc)
    assert first.recorded_at > first.timestamp
    assert memory.get(first.id, user_id="ana") == first


def test_adding_the_same_exchange_twice_stores_it_once(memory: Memory) -> None:
    added = memory.add(exchange("I live in Porto"), user_id="ana", session_id="s1", timestamp=MAY)
    assert memory.add(exchange("I live in Porto"), user_id="ana", session_id="s1", timestamp=MAY) == []
    assert [r.id for r in memory.get_all(user_id="ana")] == [added[0].id]


def test_exchanges_added_one_by_one_continue_the_round_index(memory: Memory) -> None:
    memory.add(exchange("first thing"), user_id="ana", session_id="s1")
    (later,) = memory.add(exchange("second thing"), user_id="ana", session_id="s1")
    assert later.round_index == 1


def test_search_finds_the_relevant_round_by_meaning_and_by_words(memory: Memory) -> None:
    memory.add(exchange("I adopted a greyhound called Pixel"), user_id="ana", session_id="s1", timestamp=MAY)
    memory.add(exchange("My sister works as a pharmacist in Lyon"), user_id="ana", session_id="s2", timestamp=MAY)
    memory.add(exchange("I booked flights to Tokyo for October"), user_id="ana", session_id="s3", timestamp=MAY)
    dog = memory.search("what is my dog's name?", user_id="ana", k=1)
    assert "Pixel" in dog[0].record.value and "dense" in dog[0].why
    trip = memory.search("Tokyo flights", user_id="ana", k=3)
    assert "Tokyo" in trip[0].record.value and trip[0].why == {
        "dense": 1, "lexical": 1, "session": 1, "dense@session": 1, "lexical@session": 1}


def test_a_user_never_sees_another_users_records_also_through_bm25(make_memory) -> None:
    memory = make_memory()
    memory.add(exchange("My locker code is 4417 zebra"), user_id="bob", session_id="s1")
    memory.add(exchange("I like tea"), user_id="ana", session_id="s1")
    for hit in memory.search("locker code 4417 zebra", user_id="ana", k=10):
        assert hit.record.user_id == "ana"
    # dense must filter inside Chroma: a post-filter would drop bob's top hit and return nothing at k=1
    dense_only = make_memory(retrieval={"retrievers": ["dense"]})
    assert [h.record.user_id for h in dense_only.search("locker code 4417 zebra", user_id="ana", k=1)] == ["ana"]
    lexical_only = make_memory(retrieval={"retrievers": ["lexical"]})
    assert ids(lexical_only.search("locker code 4417 zebra", user_id="ana", k=10)) == []
    assert len(lexical_only.search("locker code 4417 zebra", user_id="bob", k=10)) == 1
    with pytest.raises(RecordNotFound):
        memory.get(memory.get_all(user_id="bob")[0].id, user_id="ana")


def test_filters_on_session_metadata_and_time(memory: Memory) -> None:
    memory.add(exchange("Paris trip in spring"), user_id="ana", session_id="s1", timestamp="2023-03-01T10:00")
    memory.add(exchange("Paris trip in summer"), user_id="ana", session_id="s2", timestamp="2023-07-01T10:00",
               metadata={"topic": "travel"})
    memory.add(exchange("Paris trip in winter"), user_id="ana", session_id="s3", timestamp="2023-12-01T10:00")

    def sessions(**kwargs) -> set[str]:
        return {h.record.session_id for h in memory.search("Paris trip", user_id="ana", k=10, **kwargs)}

    assert sessions() == {"s1", "s2", "s3"}
    assert sessions(filters={"session_ids": ["s1", "s3"]}) == {"s1", "s3"}
    assert sessions(filters={"metadata": {"topic": "travel"}}) == {"s2"}
    assert sessions(filters={"start": "2023-06-01", "end": "2023-08-01"}) == {"s2"}
    assert sessions(filters={"start": "2023-06-01"}) == {"s2", "s3"}
    assert sessions(question_date="2023/07/02 (Sun) 09:00") == {"s1", "s2"}  # nothing after the question


def test_session_votes_never_bring_in_a_round_the_question_date_hides(memory: Memory) -> None:
    # one session told over two days: its session votes must not carry the later round past the filter
    memory.add(exchange("Booked the Paris trip"), user_id="ana", session_id="s1", timestamp="2023-03-01T10:00")
    memory.add(exchange("Paris trip cancelled"), user_id="ana", session_id="s1", timestamp="2023-03-09T10:00")
    hits = memory.search("Paris trip", user_id="ana", k=10, question_date="2023-03-05T10:00")
    assert [h.record.value.splitlines()[0] for h in hits] == ["user: Booked the Paris trip"]


def test_delete_all_forgets_one_user_only(memory: Memory) -> None:
    memory.add(exchange("ana's secret"), user_id="ana", session_id="s1")
    memory.add(exchange("bob's secret"), user_id="bob", session_id="s1")
    memory.add(exchange("bob's other secret"), user_id="bob", session_id="s2")
    assert memory.delete_all(user_id="bob") == 2
    assert memory.get_all(user_id="bob") == []
    assert memory.search("secret", user_id="bob") == []
    assert [r.value for r in memory.get_all(user_id="ana")] == ["user: ana's secret\nassistant: Noted."]


def test_a_new_memory_on_the_same_folder_sees_everything(make_memory, tmp_path) -> None:
    first = make_memory(path=tmp_path / "kept")
    first.add(exchange("I adopted a greyhound called Pixel"), user_id="ana", session_id="s1")
    reopened = make_memory(path=tmp_path / "kept")
    hits = reopened.search("greyhound Pixel", user_id="ana", k=1)
    # the lexical index was rebuilt from the store
    assert hits[0].why == {"dense": 1, "lexical": 1, "session": 1, "dense@session": 1, "lexical@session": 1}


def test_update_keeps_history_and_search_follows_the_new_value(memory: Memory) -> None:
    (record,) = memory.add(exchange("I live in Porto"), user_id="ana", session_id="s1")
    memory.search("Porto", user_id="ana")  # builds the lexical index before the change
    updated = memory.update(record.id, user_id="ana", value="user: I moved to Madrid", metadata={"verified": True})
    assert memory.get(record.id, user_id="ana").value == "user: I moved to Madrid"
    assert updated.metadata == {"verified": True}
    (entry,) = memory.history(record.id, user_id="ana")
    assert entry.event == "update" and entry.previous.value == record.value
    assert memory.search("Porto", user_id="ana", filters=None, k=5)[0].why.get("lexical") is None
    assert memory.search("Madrid", user_id="ana")[0].why["lexical"] == 1


def test_delete_removes_from_both_retrievers_and_logs_history(memory: Memory) -> None:
    (record,) = memory.add(exchange("My bike is a red Brompton"), user_id="ana", session_id="s1")
    memory.add(exchange("I like tea"), user_id="ana", session_id="s2")
    memory.search("Brompton", user_id="ana")
    memory.delete(record.id, user_id="ana")
    assert record.id not in ids(memory.search("red Brompton bike", user_id="ana", k=5))
    assert memory.history(record.id, user_id="ana")[0].event == "delete"
    with pytest.raises(RecordNotFound, match="id: no memory record"):
        memory.get(record.id, user_id="ana")


def test_export_import_round_trip(make_memory, tmp_path) -> None:
    source = make_memory(path=tmp_path / "a")
    source.add(exchange("I play the cello"), user_id="ana", session_id="s1", timestamp=MAY, metadata={"mood": "happy"})
    source.add(exchange("I run on Sundays"), user_id="ana", session_id="s2", timestamp=MAY)
    buffer = io.StringIO()
    assert source.export(buffer, user_id="ana") == 2
    target = make_memory(path=tmp_path / "b")
    assert target.import_(buffer.getvalue().splitlines(), user_id="ana") == 2
    assert target.get_all(user_id="ana") == source.get_all(user_id="ana")
    assert target.search("cello", user_id="ana", k=1)[0].record.metadata == {"mood": "happy"}
    target.import_(buffer.getvalue().splitlines(), user_id="ana", as_user="eve")
    assert {r.value for r in target.get_all(user_id="eve")} == {r.value for r in source.get_all(user_id="ana")}


def test_a_bad_import_line_changes_nothing(memory: Memory) -> None:
    memory.add(exchange("I play the cello"), user_id="ana", session_id="s1")
    good = memory.get_all(user_id="ana")[0].model_dump_json()
    with pytest.raises(InputError, match=r"^line 2: "):
        memory.import_([good.replace("cello", "piano"), '{"id": "x"}'], user_id="ana")
    assert [r.value for r in memory.get_all(user_id="ana")] == ["user: I play the cello\nassistant: Noted."]


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([{"content": "hi"}], r"messages\[0\]\.role: is missing"),
        ([{"role": "user"}], r"messages\[0\]\.content: is missing"),
        ([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}], r"messages\[1\]\.role: unknown role"),
        ([{"role": "user", "content": 42}], r"messages\[0\]\.content: must be a string"),
        ([{"role": "user", "content": "x" * 101}], r"messages\[0\]\.content: has 101 characters, over the limit"),
        ([], r"messages: is empty"),
        ("hello", r"messages: expected a list"),
    ],
)
def test_bad_messages_name_the_field_and_keep_what_was_stored(make_memory, messages, field) -> None:
    memory = make_memory(max_message_chars=100)
    memory.add(exchange("kept"), user_id="ana", session_id="s1")
    with pytest.raises(InputError, match=field):
        memory.add(messages, user_id="ana", session_id="s1")
    assert [r.value for r in memory.get_all(user_id="ana")] == ["user: kept\nassistant: Noted."]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"user_id": ""}, r"^user_id: must be a non-empty string"),
        ({"user_id": None}, r"^user_id: "),
        ({"user_id": "ana", "timestamp": "next tuesday"}, r"^timestamp: cannot parse"),
        ({"user_id": "ana", "metadata": {"tags": ["a"]}}, r"^metadata\.tags: must be a str"),
        ({"user_id": "ana", "session_id": ""}, r"^session_id: "),
    ],
)
def test_bad_add_arguments_name_the_field(memory: Memory, kwargs, field) -> None:
    with pytest.raises(InputError, match=field):
        memory.add(exchange("hello"), **kwargs)
    assert memory.store.count() == 0


def test_bad_search_arguments_name_the_field(memory: Memory) -> None:
    with pytest.raises(InputError, match=r"^query: "):
        memory.search("  ", user_id="ana")
    with pytest.raises(InputError, match=r"^k: must be a positive integer, got 0"):
        memory.search("hi", user_id="ana", k=0)
    with pytest.raises(InputError, match=r"^filters\.start: cannot parse"):
        memory.search("hi", user_id="ana", filters={"start": "soon"})
    with pytest.raises(InputError, match=r"^filters\.colour: Extra inputs are not permitted"):
        memory.search("hi", user_id="ana", filters={"colour": "red"})
    with pytest.raises(InputError, match=r"^question_date: "):
        memory.search("hi", user_id="ana", question_date="whenever")


def test_session_granularity_grows_one_record_per_session(make_memory) -> None:
    memory = make_memory(granularity="session")
    memory.add(exchange("I adopted a greyhound"), user_id="ana", session_id="s1", timestamp=MAY)
    memory.add(exchange("She is called Pixel"), user_id="ana", session_id="s1", timestamp="2023-05-21T00:00")
    assert memory.add(exchange("She is called Pixel"), user_id="ana", session_id="s1") == []
    (record,) = memory.get_all(user_id="ana")
    assert record.value.count("user:") == 2 and record.timestamp.day == 20
    assert memory.search("greyhound Pixel", user_id="ana")[0].record.id == record.id


def test_embeddings_are_cached_by_content(memory: Memory) -> None:
    memory.add(exchange("I adopted a greyhound"), user_id="ana", session_id="s1")
    misses = memory.embedder.misses
    memory.add(exchange("I adopted a greyhound"), user_id="bob", session_id="s9")
    assert memory.embedder.misses == misses  # same text, other user: no new embedding


def test_async_memory_wraps_the_same_logic(tmp_path, embedder) -> None:
    async def run() -> list[str]:
        memory = AsyncMemory(path=tmp_path / "async", embedder=embedder)
        await memory.add(exchange("I adopted a greyhound called Pixel"), user_id="ana", session_id="s1")
        return [h.record.value for h in await memory.search("greyhound", user_id="ana")]

    assert asyncio.run(run())[0].startswith("user: I adopted a greyhound")


def test_round_index_continues_after_a_delete(memory: Memory) -> None:
    a, b, c = memory.add(exchange("a") + exchange("b") + exchange("c"), user_id="ana", session_id="s1")
    memory.delete(a.id, user_id="ana")
    (d,) = memory.add(exchange("d"), user_id="ana", session_id="s1")
    assert d.round_index == 3


def test_resending_the_whole_session_stores_only_the_new_rounds(make_memory) -> None:
    for granularity in ("round", "session"):
        memory = make_memory(granularity=granularity)
        user = f"ana-{granularity}"
        memory.add(exchange("first"), user_id=user, session_id="s1")
        memory.add(exchange("first") + exchange("second"), user_id=user, session_id="s1")
        values = "\n".join(r.value for r in memory.get_all(user_id=user))
        assert values.count("user: first") == 1 and values.count("user: second") == 1, granularity


def test_session_granularity_keeps_a_round_that_is_a_prefix_of_a_stored_one(make_memory) -> None:
    memory = make_memory(granularity="session")
    memory.add([{"role": "user", "content": "I like tea and coffee"}], user_id="ana", session_id="s1")
    assert memory.add([{"role": "user", "content": "I like tea"}], user_id="ana", session_id="s1") != []
    assert memory.get_all(user_id="ana")[0].value == "user: I like tea and coffee\nuser: I like tea"


def test_update_replaces_metadata_in_the_store(memory: Memory) -> None:
    (record,) = memory.add(exchange("I live in Porto"), user_id="ana", session_id="s1", metadata={"a": 1})
    memory.update(record.id, user_id="ana", metadata={"b": 2})
    assert memory.get(record.id, user_id="ana").metadata == {"b": 2}
    assert memory.search("Porto", user_id="ana", filters={"metadata": {"a": 1}}) == []


def test_retelling_the_original_fact_after_an_update_is_remembered(memory: Memory) -> None:
    (record,) = memory.add(exchange("I live in Porto"), user_id="ana", session_id="s1")
    memory.update(record.id, user_id="ana", value="user: I live in Madrid")
    (again,) = memory.add(exchange("I live in Porto"), user_id="ana", session_id="s1")
    assert again.id != record.id
    firsts = {r.value.splitlines()[0] for r in memory.get_all(user_id="ana")}
    assert firsts == {"user: I live in Madrid", "user: I live in Porto"}


def test_a_second_memory_on_the_same_store_sees_the_others_writes(make_memory, tmp_path) -> None:
    one = make_memory(path=tmp_path / "shared", retrieval={"retrievers": ["lexical"]})
    two = make_memory(path=tmp_path / "shared", retrieval={"retrievers": ["lexical"]})
    (zebra,) = one.add(exchange("the zebra escaped"), user_id="ana", session_id="s1")
    assert len(one.search("zebra", user_id="ana")) == 1  # one's index is built now
    two.add(exchange("the giraffe escaped"), user_id="ana", session_id="s2")
    two.delete(zebra.id, user_id="ana")
    assert [h.record.value for h in one.search("escaped giraffe zebra", user_id="ana")] == [
        "user: the giraffe escaped\nassistant: Noted."
    ]


def test_import_under_another_user_keeps_session_records_addressable(make_memory, tmp_path) -> None:
    source = make_memory(path=tmp_path / "a", granularity="session")
    source.add(exchange("first"), user_id="ana", session_id="s1")
    buffer = io.StringIO()
    source.export(buffer, user_id="ana")
    lines = buffer.getvalue().splitlines()
    target = make_memory(path=tmp_path / "b", granularity="session")
    target.import_(lines, user_id="ana", as_user="eve")
    target.add(exchange("second"), user_id="eve", session_id="s1")
    (record,) = target.get_all(user_id="eve")
    assert record.value.count("user:") == 2


def test_more_bad_input_is_refused_with_the_field(memory: Memory) -> None:
    memory.add(exchange("kept"), user_id="ana", session_id="s1")
    line = memory.get_all(user_id="ana")[0].model_dump_json()
    with pytest.raises(InputError, match=r"^line 2: repeats record id"):
        memory.import_([line, line], user_id="ana")
    with pytest.raises(InputError, match=r"^filters\.session_ids: "):
        memory.search("kept", user_id="ana", filters={"session_ids": []})
    for bad in (float("nan"), 1e20):
        with pytest.raises(InputError, match=r"^timestamp: "):
            memory.add(exchange("x"), user_id="ana", session_id="s2", timestamp=bad)
    assert [r.value for r in memory.get_all(user_id="ana")] == ["user: kept\nassistant: Noted."]


def test_filter_bounds_are_utc_and_a_bare_end_date_covers_that_day(memory: Memory) -> None:
    memory.add(exchange("leap day walk"), user_id="ana", session_id="s1", timestamp="2024-02-29T10:00")
    assert len(memory.search("walk", user_id="ana", filters={"end": "2024-02-29"})) == 1
    naive = SearchFilters(start=datetime(2024, 2, 29, 9, 0), end=datetime(2024, 2, 29, 11, 0))
    assert len(memory.search("walk", user_id="ana", filters=naive, question_date="2024-03-01")) == 1
    assert memory.search("walk", user_id="ana", filters={"end": "2024-02-29T09:59"}) == []


def test_history_can_be_scoped_to_its_user(memory: Memory) -> None:
    (record,) = memory.add(exchange("I live in Porto"), user_id="ana", session_id="s1")
    memory.update(record.id, user_id="ana", value="user: I live in Madrid")
    assert len(memory.history(record.id, user_id="ana")) == 1
    assert memory.history(record.id, user_id="bob") == []


def test_a_store_refuses_vectors_of_another_embedder(tmp_path: Path, embedder) -> None:
    """Switching embedder.model on a store would compare vectors of two models (or fail on their sizes):
    a user's collection remembers its model, and another is refused with the field named, the
    memories untouched; export, then import into a store of the new model, moves them."""
    first = Memory(path=tmp_path / "store", embedder=embedder)
    first.add([{"role": "user", "content": "My sister Ines lives in Porto."}], user_id="ana")
    other = Memory(path=tmp_path / "store", embedder=HashEmbedder())
    with pytest.raises(MemagentError, match=r"^embedder.model: 'ana'.*embedded by 'all-MiniLM-L6-v2'"):
        other.search("Where does my sister live?", user_id="ana")
    with pytest.raises(MemagentError, match=r"^embedder.model:"):
        other.add([{"role": "user", "content": "I moved to Lyon."}], user_id="ana")
    assert [h.record.value for h in first.search("Where does my sister live?", user_id="ana")] == [
        "user: My sister Ines lives in Porto."]
    first.export(tmp_path / "ana.jsonl", user_id="ana")
    moved = Memory(path=tmp_path / "new", embedder=HashEmbedder())
    assert moved.import_(tmp_path / "ana.jsonl", user_id="ana") == 1
    assert moved.search("sister", user_id="ana")[0].record.value == "user: My sister Ines lives in Porto."
