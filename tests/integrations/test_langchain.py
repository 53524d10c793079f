"""The LangChain plugin through langchain-core's own types: Documents, messages, invoke/ainvoke,
tool schemas, on the real embedder and an embedded Chroma folder."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys

import pytest

pytest.importorskip("langchain_core", reason="the langchain extra is not installed")

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ValidationError

from memagent import AsyncMemory, InputError, Memory, RecordNotFound, ScriptedLLM, _extras
from memagent.errors import MissingExtra
from memagent.integrations.langchain import MemagentChatHistory, MemagentRetriever, inject_user, memory_tools
from tests.conftest import exchange
from tests.fakes import snapshot

MAY = "2023/05/20 (Sat) 02:21"


@pytest.fixture
def filled(memory: Memory) -> Memory:
    memory.add(
        exchange("I adopted a greyhound called Pixel", "Congratulations!"),
        user_id="ana",
        session_id="s1",
        timestamp=MAY,
    )
    memory.add(exchange("My sister works as a pharmacist in Lyon"), user_id="ana", session_id="s2", timestamp=MAY)
    memory.add(exchange("I booked flights to Tokyo for October"), user_id="ana", session_id="s3", timestamp=MAY)
    memory.add(exchange("My locker code is 4417 zebra"), user_id="bob", session_id="s1", timestamp=MAY)
    return memory


# -- retriever -------------------------------------------------------------------------------
def test_the_retriever_gives_documents_that_carry_the_record(filled: Memory) -> None:
    docs = MemagentRetriever(filled, user_id="ana", k=2).invoke("what is my dog's name?")
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    best = docs[0]
    record = filled.get(best.metadata["id"], user_id="ana")
    assert best.id == record.id and best.page_content == record.value and "Pixel" in best.page_content
    assert best.metadata["session_id"] == "s1" and best.metadata["user_id"] == "ana"
    assert best.metadata["timestamp"] == "2023-05-20T02:21:00+00:00"
    assert best.metadata["why"]["dense"] == 1 and best.metadata["score"] > docs[1].metadata["score"]
    json.dumps([d.metadata for d in docs])  # JSON-safe, so any LangChain tracer or cache can keep it


def test_ainvoke_gives_the_same_documents_as_invoke(filled: Memory) -> None:
    retriever = MemagentRetriever(filled, user_id="ana", k=3)
    assert asyncio.run(retriever.ainvoke("Tokyo flights")) == retriever.invoke("Tokyo flights")


def test_the_retriever_composes_as_a_runnable(filled: Memory) -> None:
    chain = MemagentRetriever(filled, user_id="ana", k=1) | RunnableLambda(lambda docs: docs[0].metadata["session_id"])
    assert chain.batch(["what is my dog's name?", "where does my sister work?"]) == ["s1", "s2"]


def test_the_retriever_reads_only_its_users_scope(filled: Memory) -> None:
    filled.add(exchange("Coach: run 5k on Tuesdays"), user_id="ana", agent_id="coach", session_id="c1")
    ana = MemagentRetriever(filled, user_id="ana", k=10).invoke("locker code 4417 zebra")
    assert ana and all(d.metadata["user_id"] == "ana" for d in ana) and "4417" not in str(ana)
    coach = MemagentRetriever(filled, user_id="ana", agent_id="coach", k=10).invoke("what do I do on Tuesdays?")
    assert [d.metadata["session_id"] for d in coach] == ["c1"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"user_id": ""}, "user_id"),
        ({"user_id": "ana", "agent_id": "a\x00b"}, "agent_id"),
        ({"user_id": "ana", "k": 0}, "k"),
        ({"user_id": "ana", "k": True}, "k"),
        ({"user_id": "ana", "filters": {"session_ids": []}}, r"filters\.session_ids"),
        ({"user_id": "ana", "filters": {"colour": "red"}}, r"filters\.colour"),
    ],
)
def test_a_bad_retriever_option_names_the_field(filled: Memory, options, field) -> None:
    with pytest.raises(InputError, match=f"^{field}"):
        MemagentRetriever(filled, **options)


def test_a_bad_query_names_the_field_and_changes_nothing(filled: Memory) -> None:
    before = snapshot(filled)
    retriever = MemagentRetriever(filled, user_id="ana")
    for query in ("", "   ", "x" * 5000):
        with pytest.raises(InputError, match="^query"):
            retriever.invoke(query)
        with pytest.raises(InputError, match="^query"):
            asyncio.run(retriever.ainvoke(query))
    with pytest.raises(InputError, match="^memory"):
        MemagentRetriever("./memagent_data", user_id="ana")  # type: ignore[arg-type]
    assert snapshot(filled) == before


# -- chat history ----------------------------------------------------------------------------
def test_an_exchange_is_remembered_once_its_reply_arrives(memory: Memory) -> None:
    history = MemagentChatHistory(memory, user_id="ana", session_id="s1")
    history.add_user_message("I adopted a greyhound called Pixel")
    assert memory.get_all(user_id="ana") == []  # held: the round is not whole yet
    history.add_ai_message("Congratulations!")
    history.add_messages([HumanMessage("She is two years old"), AIMessage("Lovely age.")])
    first, second = memory.get_all(user_id="ana")
    assert first.value == "user: I adopted a greyhound called Pixel\nassistant: Congratulations!"
    assert (first.session_id, first.round_index, second.round_index) == ("s1", 0, 1)
    assert [m.text for m in history.messages] == [
        "I adopted a greyhound called Pixel",
        "Congratulations!",
        "She is two years old",
        "Lovely age.",
    ]
    assert "Pixel" in MemagentRetriever(memory, user_id="ana", k=1).invoke("dog's name")[0].page_content


# langchain-core 1.x deprecates it for LangGraph's persistence, but it is still what drives a chat history
@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
def test_runnable_with_message_history_remembers_every_exchange(memory: Memory) -> None:
    histories: dict[str, MemagentChatHistory] = {}

    def history(session_id: str) -> MemagentChatHistory:
        return histories.setdefault(session_id, MemagentChatHistory(memory, user_id="ana", session_id=session_id))

    model = RunnableLambda(lambda messages: AIMessage(f"I have seen {len(messages)} messages"))
    chat = RunnableWithMessageHistory(model, history)
    config = {"configurable": {"session_id": "s9"}}
    assert chat.invoke([HumanMessage("I live in Porto")], config=config).text == "I have seen 1 messages"
    assert chat.invoke([HumanMessage("I work at a bakery")], config=config).text == "I have seen 3 messages"
    reply = asyncio.run(chat.ainvoke([HumanMessage("I cycle to work")], config=config))
    assert reply.text == "I have seen 5 messages"
    assert [r.value for r in memory.get_all(user_id="ana")] == [
        "user: I live in Porto\nassistant: I have seen 1 messages",
        "user: I work at a bakery\nassistant: I have seen 3 messages",
        "user: I cycle to work\nassistant: I have seen 5 messages",
    ]


def test_system_tool_and_silent_ai_messages_stay_live_but_are_not_remembered(memory: Memory) -> None:
    history = MemagentChatHistory(memory, user_id="ana", session_id="s1")
    call = {"name": "weather", "args": {"city": "Porto"}, "id": "call-1"}
    history.add_messages(
        [
            SystemMessage("Be brief."),
            HumanMessage("What's the weather in Porto?"),
            AIMessage("", tool_calls=[call]),
            ToolMessage("sunny, 24C", tool_call_id="call-1"),
            AIMessage("Sunny and 24C."),
        ]
    )
    assert len(history.messages) == 5
    assert [r.value for r in memory.get_all(user_id="ana")] == [
        "user: What's the weather in Porto?\nassistant: Sunny and 24C."
    ]


def test_clear_ends_the_live_session_and_memagent_keeps_what_was_said(memory: Memory) -> None:
    history = MemagentChatHistory(memory, user_id="ana")
    history.add_messages([HumanMessage("I play the cello"), AIMessage("Nice!"), HumanMessage("pending question")])
    history.clear()
    assert history.messages == []
    history.add_ai_message("A new session starts")  # the pending question went with the live session
    values = [r.value for r in memory.get_all(user_id="ana")]
    assert values == ["user: I play the cello\nassistant: Nice!", "assistant: A new session starts"]


def test_bad_messages_name_the_field_and_change_neither_the_session_nor_memory(memory: Memory) -> None:
    history = MemagentChatHistory(memory, user_id="ana", session_id="s1")
    history.add_user_message("held until its reply")
    live, before = history.messages, snapshot(memory)
    bad_calls = [
        (["plain text"], r"messages\[0\]"),
        ([AIMessage("fine"), {"role": "user", "content": "a dict"}], r"messages\[1\]"),
        ([AIMessage("fine"), HumanMessage("   ")], r"messages\[1\]\.content"),
        ([HumanMessage("x" * 100_001), AIMessage("too long")], r"messages\[0\]\.content"),
        ([HumanMessage("lone \ud800 surrogate"), AIMessage("ok")], r"messages\[0\]\.content"),
        (HumanMessage("not in a list"), "messages"),
    ]
    for messages, field in bad_calls:
        with pytest.raises(InputError, match=f"^{field}"):
            history.add_messages(messages)  # type: ignore[arg-type]
        with pytest.raises(InputError, match=f"^{field}"):
            asyncio.run(history.aadd_messages(messages))  # type: ignore[arg-type]
    assert history.messages == live and snapshot(memory) == before
    history.add_ai_message("the reply")  # the held question was kept, and is written with its reply
    assert [r.value for r in memory.get_all(user_id="ana")] == ["user: held until its reply\nassistant: the reply"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"user_id": ""}, "user_id"),
        ({"user_id": "ana", "session_id": "s\n1"}, "session_id"),
        ({"user_id": "ana", "run_id": " "}, "run_id"),
    ],
)
def test_a_bad_chat_history_option_names_the_field(memory: Memory, options, field) -> None:
    with pytest.raises(InputError, match=f"^{field}"):
        MemagentChatHistory(memory, **options)


# -- tools -----------------------------------------------------------------------------------
def test_the_model_never_sees_user_id_in_a_tool_schema(memory: Memory) -> None:
    tools = {t.name: t for t in memory_tools(memory)}
    assert set(tools) == {"save_memory", "search_memory", "answer_from_memory", "forget_memory"}
    model_args = {
        "save_memory": {"text"},
        "search_memory": {"query", "k"},
        "answer_from_memory": {"question"},
        "forget_memory": {"memory_id"},
    }
    for name, tool in tools.items():
        schema = tool.tool_call_schema.model_json_schema()  # type: ignore[union-attr]
        openai = convert_to_openai_tool(tool)["function"]
        assert set(schema["properties"]) == set(openai["parameters"]["properties"]) == model_args[name]
        assert "user_id" not in json.dumps(openai) and openai["description"]
        assert "user_id" in tool.get_input_schema().model_json_schema()["properties"]  # the application's to give


def test_the_tools_save_search_and_forget_for_the_user_the_application_names(memory: Memory) -> None:
    save, search, _, forget = memory_tools(memory)
    # the model tries to write as bob: inject_user puts the application's user in its place
    model_call = {
        "name": "save_memory",
        "args": {"text": "I am allergic to peanuts", "user_id": "bob"},
        "id": "c1",
        "type": "tool_call",
    }
    message = save.invoke(inject_user(model_call, "ana"))
    assert isinstance(message, ToolMessage) and message.tool_call_id == "c1"
    (saved,) = json.loads(message.text)["saved"]
    assert memory.get(saved, user_id="ana").value == "user: I am allergic to peanuts"
    assert memory.get_all(user_id="bob") == []
    found = json.loads(search.invoke({"query": "what am I allergic to?", "user_id": "ana", "k": 1}))
    assert [f["id"] for f in found] == [saved] and "peanuts" in found[0]["text"]
    assert json.loads(search.invoke({"query": "peanuts", "user_id": "bob"})) == []
    assert json.loads(forget.invoke({"memory_id": saved, "user_id": "ana"})) == {"forgot": saved}
    assert memory.get_all(user_id="ana") == []


def test_the_tools_run_async(memory: Memory) -> None:
    save, search, _, _ = memory_tools(memory, agent_id="coach")

    async def run() -> list[dict[str, str]]:
        await save.ainvoke({"text": "I run 5k on Tuesdays", "user_id": "ana"})
        return json.loads(await search.ainvoke({"query": "running", "user_id": "ana"}))

    (found,) = asyncio.run(run())
    assert "5k" in found["text"]
    assert memory.get(found["id"], user_id="ana").agent_id == "coach"  # the scope the application fixed


def test_answer_from_memory_answers_from_the_users_memories_or_refuses(make_memory) -> None:
    def reader(messages) -> str:
        said = str(messages)
        return (
            "NOTES:\nm1: the dog is Pixel\nANSWER: Pixel" if "Pixel" in said else "NOTES: none\nANSWER: I don't know."
        )

    memory = make_memory(llm=ScriptedLLM(reader))
    (record,) = memory.add(exchange("I adopted a greyhound called Pixel"), user_id="ana", session_id="s1")
    answer = next(t for t in memory_tools(memory) if t.name == "answer_from_memory")
    ana = json.loads(answer.invoke({"question": "What is my dog's name?", "user_id": "ana"}))
    assert (ana["answer"], ana["refused"], ana["citations"]) == ("Pixel", False, [record.id])
    assert json.loads(answer.invoke({"question": "What is my dog's name?", "user_id": "bob"}))["refused"] is True


@pytest.mark.parametrize(
    ("tool", "args", "error", "field"),
    [
        ("save_memory", {"text": "   ", "user_id": "ana"}, InputError, "^text"),
        ("save_memory", {"text": "x" * 100_001, "user_id": "ana"}, InputError, "^text"),
        ("save_memory", {"text": "I like tea"}, ValidationError, "user_id"),
        ("save_memory", {"text": "I like tea", "user_id": ""}, InputError, "^user_id"),
        ("search_memory", {"query": "", "user_id": "ana"}, InputError, "^query"),
        ("search_memory", {"query": "tea", "user_id": "ana", "k": 0}, ValidationError, "k"),
        ("search_memory", {"query": "tea", "user_id": "ana", "k": 500}, ValidationError, "k"),
        ("answer_from_memory", {"question": " ", "user_id": "ana"}, InputError, "^question"),
        ("forget_memory", {"memory_id": "", "user_id": "ana"}, InputError, "^memory_id"),
        ("forget_memory", {"memory_id": "no-such-id", "user_id": "ana"}, RecordNotFound, "no-such-id"),
    ],
)
def test_bad_tool_input_names_the_field_and_changes_nothing(filled: Memory, tool, args, error, field) -> None:
    chosen = next(t for t in memory_tools(filled) if t.name == tool)
    before = snapshot(filled)
    with pytest.raises(error, match=field):
        chosen.invoke(args)
    with pytest.raises(error, match=field):
        asyncio.run(chosen.ainvoke(args))
    assert snapshot(filled) == before


def test_forget_cannot_reach_another_users_memory(filled: Memory) -> None:
    bobs = filled.get_all(user_id="bob")[0].id
    forget = next(t for t in memory_tools(filled) if t.name == "forget_memory")
    before = snapshot(filled)
    with pytest.raises(RecordNotFound):
        forget.invoke({"memory_id": bobs, "user_id": "ana"})
    assert snapshot(filled) == before


def test_bad_scopes_for_the_tools_name_the_field(memory: Memory) -> None:
    with pytest.raises(InputError, match="^agent_id"):
        memory_tools(memory, agent_id="")
    with pytest.raises(InputError, match="^user_id"):
        inject_user({"name": "save_memory", "args": {"text": "x"}, "id": "c1"}, " ")


def test_an_async_memory_serves_every_langchain_object(tmp_path, embedder) -> None:
    memory = AsyncMemory(path=tmp_path / "async", embedder=embedder)
    history = MemagentChatHistory(memory, user_id="ana", session_id="s1")
    asyncio.run(history.aadd_messages([HumanMessage("I keep bees"), AIMessage("How sweet!")]))
    (doc,) = asyncio.run(MemagentRetriever(memory, user_id="ana", k=1).ainvoke("what animals do I keep?"))
    assert doc.page_content == "user: I keep bees\nassistant: How sweet!"
    search = next(t for t in memory_tools(memory) if t.name == "search_memory")
    assert json.loads(asyncio.run(search.ainvoke({"query": "bees", "user_id": "ana"})))[0]["id"] == doc.id


# -- the extra -------------------------------------------------------------------------------
@pytest.mark.parametrize(("module", "dependency"), [("langchain", "langchain_core"), ("langgraph", "langgraph")])
def test_without_the_extra_the_import_names_it(monkeypatch, module, dependency) -> None:
    real = _extras.find_spec
    monkeypatch.setattr(_extras, "find_spec", lambda name: None if name == dependency else real(name))
    monkeypatch.delitem(sys.modules, f"memagent.integrations.{module}", raising=False)
    with pytest.raises(MissingExtra, match=rf"'langchain' extra \(missing: {dependency}\)"):
        importlib.import_module(f"memagent.integrations.{module}")
