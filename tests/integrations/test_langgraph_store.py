"""MemagentStore through LangGraph's own store API (the calls a LangGraph app makes), on the real
embedder and an embedded Chroma folder: items, namespaces as scopes, isolation, bad input."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, TypedDict

import pytest

pytest.importorskip("langgraph", reason="the langchain extra is not installed")

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore, GetOp, Item, PutOp, SearchItem, SearchOp

from memagent import AsyncMemory, InputError, Memory
from memagent.integrations.langgraph import MemagentStore
from tests.conftest import exchange
from tests.fakes import snapshot

DOG = {"text": "Ana adopted a greyhound called Pixel", "kind": "pet", "age": 3}
TEA = {"text": "Ana drinks green tea every morning", "kind": "habit", "age": 10}
THEME = {"theme": "dark", "kind": "ui"}


@pytest.fixture
def store(memory: Memory) -> MemagentStore:
    store = MemagentStore(memory)
    store.put(("ana", "memories"), "dog", DOG)
    store.put(("ana", "memories"), "tea", TEA)
    store.put(("ana", "prefs", "ui"), "theme", THEME)
    store.put(("bob", "memories"), "dog", {"text": "Bob's beagle Pepper chews shoes", "kind": "pet"})
    return store


def keys(items: list[SearchItem]) -> list[str]:
    return [item.key for item in items]


def test_it_is_a_langgraph_store_and_an_item_comes_back_as_put(store: MemagentStore) -> None:
    assert isinstance(store, BaseStore)
    item = store.get(("ana", "memories"), "dog")
    assert isinstance(item, Item) and not isinstance(item, SearchItem)
    assert (item.namespace, item.key, item.value) == (("ana", "memories"), "dog", DOG)
    assert item.created_at <= item.updated_at and item.created_at.tzinfo is not None
    assert store.get(("ana", "memories"), "cat") is None
    assert store.get(("ana", "other"), "dog") is None  # the same key in another namespace is another item


def test_a_second_put_updates_the_item_keeping_created_at_and_history(store: MemagentStore, memory: Memory) -> None:
    before = store.get(("ana", "memories"), "dog")
    time.sleep(0.01)
    store.put(("ana", "memories"), "dog", {"text": "Pixel the greyhound turned four", "kind": "pet", "age": 4})
    after = store.get(("ana", "memories"), "dog")
    assert before is not None and after is not None
    assert after.value["age"] == 4 and after.created_at == before.created_at and after.updated_at > before.updated_at
    records = memory.get_all(user_id="ana", agent_id="memories")
    assert len(records) == 2  # dog and tea: an update never adds a record
    dog = next(r for r in records if r.metadata["langgraph_key"] == "dog")
    assert [h.previous.metadata["langgraph_value"] for h in memory.history(dog.id, user_id="ana")] == [
        '{"text": "Ana adopted a greyhound called Pixel", "kind": "pet", "age": 3}'
    ]
    assert "turned four" in store.search(("ana",), query="how old is Pixel now?")[0].value["text"]


def test_delete_forgets_the_item_and_deleting_a_missing_one_is_no_error(store: MemagentStore) -> None:
    store.delete(("ana", "memories"), "dog")
    assert store.get(("ana", "memories"), "dog") is None
    assert keys(store.search(("ana",))) == ["tea", "theme"]
    store.delete(("ana", "memories"), "dog")
    store.delete(("nobody",), "nothing")


def test_a_query_ranks_items_by_meaning_best_first(store: MemagentStore) -> None:
    found = store.search(("ana",), query="what is the name of my dog?")
    assert found[0].key == "dog" and found[0].namespace == ("ana", "memories")
    assert all(isinstance(i, SearchItem) and i.score is not None for i in found)
    assert [i.score for i in found] == sorted((i.score for i in found), reverse=True)
    assert store.search(("ana",), query="morning drink", limit=1)[0].key == "tea"
    assert len(store.search(("ana",), query="morning drink", limit=2, offset=1)) == 2


def test_without_a_query_items_are_listed_oldest_first_a_page_at_a_time(store: MemagentStore) -> None:
    assert keys(store.search(("ana",))) == ["dog", "tea", "theme"]
    assert all(i.score is None for i in store.search(("ana",)))
    assert keys(store.search(("ana",), limit=2)) == ["dog", "tea"]
    assert keys(store.search(("ana",), limit=2, offset=2)) == ["theme"]


def test_a_prefix_narrows_to_the_namespaces_under_it(store: MemagentStore) -> None:
    assert keys(store.search(("ana", "memories"))) == ["dog", "tea"]
    assert keys(store.search(("ana", "prefs"))) == ["theme"]
    assert keys(store.search(("ana", "prefs", "ui"))) == ["theme"]
    assert keys(store.search(("ana", "prefs", "other"))) == []
    # a query in a narrow prefix never ranks an item outside it, however well it matches
    assert keys(store.search(("ana", "prefs"), query="greyhound Pixel")) == ["theme"]


def test_filters_match_value_fields_exactly_or_by_operator(store: MemagentStore) -> None:
    assert keys(store.search(("ana",), filter={"kind": "pet"})) == ["dog"]
    assert keys(store.search(("ana",), filter={"age": {"$gt": 3}})) == ["tea"]
    assert keys(store.search(("ana",), filter={"age": {"$gte": 3, "$lt": 10}})) == ["dog"]
    assert keys(store.search(("ana",), filter={"kind": {"$ne": "pet"}})) == ["tea", "theme"]
    assert keys(store.search(("ana",), filter={"age": {"$gt": "1"}})) == []  # a str never compares with a number
    # with a query, the filter keeps its items and the query orders them
    assert keys(store.search(("ana",), query="greyhound", filter={"age": 10})) == ["tea"]
    store.put(("ana", "nested"), "n", {"meta": {"source": "chat", "n": 1}})
    assert keys(store.search(("ana",), filter={"meta": {"source": "chat"}})) == ["n"]


def test_one_users_namespaces_never_return_another_users_items(store: MemagentStore, memory: Memory) -> None:
    assert store.get(("ana", "memories"), "dog").value == DOG  # type: ignore[union-attr]
    assert store.get(("bob", "memories"), "dog").value["text"].startswith("Bob")  # type: ignore[union-attr]
    for found in (store.search(("ana",), query="beagle Pepper chews shoes", limit=10), store.search(("ana",))):
        assert all(i.namespace[0] == "ana" for i in found) and "Pepper" not in str([i.value for i in found])
    assert store.list_namespaces(prefix=("ana",)) == [("ana", "memories"), ("ana", "prefs", "ui")]
    assert store.list_namespaces(prefix=("bob",)) == [("bob", "memories")]
    store.delete(("ana", "memories"), "dog")
    assert store.get(("bob", "memories"), "dog") is not None
    assert len(memory.get_all(user_id="bob")) == 1


def test_namespaces_are_memagent_scopes_and_conversations_stay_out(store: MemagentStore, memory: Memory) -> None:
    memory.add(exchange("My greyhound Pixel loves the beach"), user_id="ana", session_id="chat-1")
    # the store's items are the user's memories: memagent's own search of the agent scope finds them
    scoped = memory.search("greyhound", user_id="ana", agent_id="memories", k=5)
    assert {h.record.metadata.get("langgraph_key") for h in scoped} == {"dog", "tea"}
    assert {r.agent_id for r in memory.get_all(user_id="ana")} == {"memories", "prefs", None}
    # but a conversation's records are never items
    found = store.search(("ana",), query="Pixel loves the beach", limit=10)
    assert keys(found) and "chat-1" not in str(found) and all(i.key in {"dog", "tea", "theme"} for i in found)


def test_list_namespaces_by_prefix_suffix_depth_and_page(store: MemagentStore) -> None:
    store.put(("ana", "prefs", "sound"), "volume", {"level": 3})
    assert store.list_namespaces(prefix=("ana",)) == [
        ("ana", "memories"),
        ("ana", "prefs", "sound"),
        ("ana", "prefs", "ui"),
    ]
    assert store.list_namespaces(prefix=("ana",), max_depth=2) == [("ana", "memories"), ("ana", "prefs")]
    assert store.list_namespaces(prefix=("ana", "prefs")) == [("ana", "prefs", "sound"), ("ana", "prefs", "ui")]
    assert store.list_namespaces(prefix=("ana", "*", "ui")) == [("ana", "prefs", "ui")]
    assert store.list_namespaces(prefix=("ana",), suffix=("ui",)) == [("ana", "prefs", "ui")]
    assert store.list_namespaces(prefix=("ana",), limit=1, offset=1) == [("ana", "prefs", "sound")]


def test_the_async_api_reads_and_writes_the_same_items(store: MemagentStore) -> None:
    async def run() -> tuple[Any, ...]:
        await store.aput(("ana", "memories"), "bike", {"text": "Ana rides a red bicycle to work"})
        got = await store.aget(("ana", "memories"), "bike")
        found = await store.asearch(("ana",), query="how does Ana get to work?", limit=1)
        spaces = await store.alist_namespaces(prefix=("ana",), max_depth=2)
        await store.adelete(("ana", "memories"), "bike")
        return got, found, spaces, await store.aget(("ana", "memories"), "bike")

    got, found, spaces, gone = asyncio.run(run())
    assert got.value == {"text": "Ana rides a red bicycle to work"}
    assert keys(found) == ["bike"] and spaces == [("ana", "memories"), ("ana", "prefs")] and gone is None
    assert store.get(("ana", "memories"), "bike") is None


def test_a_batch_runs_its_ops_in_order(store: MemagentStore) -> None:
    results = store.batch(
        [
            PutOp(("ana", "memories"), "car", {"text": "a blue hatchback"}),
            GetOp(("ana", "memories"), "car"),
            PutOp(("ana", "memories"), "car", None),
            GetOp(("ana", "memories"), "car"),
            SearchOp(("ana", "prefs")),
        ]
    )
    assert results[0] is None and results[1].value == {"text": "a blue hatchback"}  # type: ignore[union-attr]
    assert results[2] is None and results[3] is None and keys(results[4]) == ["theme"]  # type: ignore[arg-type]


def test_items_put_with_index_false_are_listed_but_never_ranked_by_a_query(memory: Memory) -> None:
    store = MemagentStore(memory, fields=["text"])
    store.put(("ana",), "secret", {"text": "the locker code is 4417"}, index=False)
    store.put(("ana",), "no-text", {"number": 4417})  # no "text" field: nothing to rank it by
    store.put(("ana",), "note", {"text": "buy milk", "other": "locker code 4417"})  # only "text" is indexed
    store.put(("ana",), "tagged", {"tags": ["locker", "gym"]}, index=["tags[*]"])
    assert keys(store.search(("ana",))) == ["secret", "no-text", "note", "tagged"]
    # ranked: only the items with text at their index fields, by that text ("note" by "buy milk")
    assert keys(store.search(("ana",), query="locker code 4417", limit=10)) == ["tagged", "note"]


@dataclass(frozen=True)
class Context:
    user_id: str


class State(TypedDict):
    said: str
    recalled: list[str]


def test_a_compiled_state_graph_reads_and_writes_through_its_runtime_store(memory: Memory) -> None:
    def remember(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        assert runtime.store is not None
        namespace = (runtime.context.user_id, "memories")
        runtime.store.put(namespace, f"m{len(runtime.store.search(namespace))}", {"text": state["said"]})
        return {}

    def recall(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        assert runtime.store is not None
        found = runtime.store.search((runtime.context.user_id,), query=state["said"], limit=2)
        return {"recalled": [item.value["text"] for item in found]}

    graph = StateGraph(State, context_schema=Context)
    graph.add_node("remember", remember)
    graph.add_node("recall", recall)
    graph.add_edge(START, "recall")  # what was said before, then remember this
    graph.add_edge("recall", "remember")
    graph.add_edge("remember", END)
    store = MemagentStore(memory)
    app = graph.compile(store=store)

    app.invoke({"said": "my sister lives in Lyon", "recalled": []}, context=Context("ana"))
    app.invoke({"said": "I am learning the cello", "recalled": []}, context=Context("ana"))
    bob = app.invoke({"said": "my sister lives in Oslo", "recalled": []}, context=Context("bob"))
    ana = app.invoke({"said": "where does my sister live?", "recalled": []}, context=Context("ana"))
    assert ana["recalled"][0] == "my sister lives in Lyon" and "Oslo" not in str(ana["recalled"])
    assert bob["recalled"] == []  # bob had said nothing before: ana's Lyon is not his
    assert [i.key for i in store.search(("ana", "memories"))] == ["m0", "m1", "m2"]  # persisted across runs
    assert len(memory.get_all(user_id="ana", agent_id="memories")) == 3

    async def arun() -> Any:
        return await app.ainvoke({"said": "what instrument do I play?", "recalled": []}, context=Context("ana"))

    assert asyncio.run(arun())["recalled"][0] == "I am learning the cello"


BAD_CALLS = [
    (lambda s: s.put(("ana", "m"), "", {"x": 1}), "key"),
    (lambda s: s.put(("ana", "m"), "k", {"x": float("nan")}), "value"),
    (lambda s: s.put(("ana", "m"), "k", {"x": object()}), "value"),
    (lambda s: s.put(("ana", "m"), "k", {1: "x"}), "value"),
    (lambda s: s.put(("ana", "m"), "k", ["a", "list"]), "value"),
    (lambda s: s.put(("ana", "m"), "k", {"x": "\ud800"}), "value"),
    (lambda s: s.put(("ana", "m"), "k", {"x": 1}, index="x"), "index"),
    (lambda s: s.put(("a" * 300, "m"), "k", {"x": 1}), r"namespace\[0\]"),
    (lambda s: s.put(("ana", "bad\x01"), "k", {"x": 1}), r"namespace\[1\]"),
    (lambda s: s.put(("ana", "m", " "), "k", {"x": 1}), r"namespace\[2\]"),
    (lambda s: s.get(("ana\x02",), "dog"), r"namespace\[0\]"),
    (lambda s: s.search((), query="dog"), "namespace_prefix"),
    (lambda s: s.search(("ana",), query="   "), "query"),
    (lambda s: s.search(("ana",), query="x" * 5000), "query"),
    (lambda s: s.search(("ana",), limit=0), "limit"),
    (lambda s: s.search(("ana",), offset=-1), "offset"),
    (lambda s: s.search(("ana",), filter={"age": {"$regex": "3"}}), r"filter\.age"),
    (lambda s: s.search(("ana",), filter=["kind"]), "filter"),  # type: ignore[arg-type]
    (lambda s: s.list_namespaces(), "prefix"),
    (lambda s: s.list_namespaces(prefix=("*", "memories")), "prefix"),
    (lambda s: s.list_namespaces(suffix=("memories",)), "prefix"),
    (lambda s: s.list_namespaces(prefix=("ana",), max_depth=0), "max_depth"),
    (lambda s: s.batch([PutOp(("ana", "m"), "k", {"x": 1}, ttl=5.0)]), "ttl"),
    # the first op is good, the second bad: the batch changes nothing
    (lambda s: s.batch([PutOp(("ana", "m"), "new", {"x": 1}), PutOp(("ana", "m"), "k", {"x": float("inf")})]), "value"),
    (lambda s: s.batch([PutOp(("ana", "memories"), "dog", None), "delete everything"]), r"ops\[1\]"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("call", "field"), BAD_CALLS)
def test_bad_input_names_the_field_and_changes_nothing(store: MemagentStore, memory: Memory, call, field) -> None:
    before = snapshot(memory)
    with pytest.raises(InputError, match=f"^{field}"):
        call(store)
    assert snapshot(memory) == before


def test_the_async_batch_checks_every_op_before_running_any(store: MemagentStore, memory: Memory) -> None:
    before = snapshot(memory)
    ops = [PutOp(("ana", "memories"), "dog", None), PutOp(("ana", "m"), "k", {"x": float("nan")})]
    with pytest.raises(InputError, match="^value"):
        asyncio.run(store.abatch(ops))
    assert snapshot(memory) == before


def test_an_async_memory_serves_the_store_too(tmp_path, embedder) -> None:
    store = MemagentStore(AsyncMemory(path=tmp_path / "async", embedder=embedder))
    store.put(("ana",), "k", {"text": "kept"})
    assert asyncio.run(store.aget(("ana",), "k")).value == {"text": "kept"}  # type: ignore[union-attr]


def test_the_constructor_refuses_bad_index_fields(memory: Memory) -> None:
    with pytest.raises(InputError, match="^fields"):
        MemagentStore(memory, fields="text")
    with pytest.raises(InputError, match="^fields"):
        MemagentStore(memory, fields=[])
    with pytest.raises(InputError, match="^memory"):
        MemagentStore("./memagent_data")  # type: ignore[arg-type]
