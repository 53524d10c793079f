"""``memagent mcp`` through the ``mcp`` package's own client: in-process, over streamable HTTP on
loopback (API keys decide the user), and over stdio (the real command in a subprocess)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from memagent import Memory
from memagent.llm.scripted import ScriptedLLM
from memagent.serve.auth import load_keys
from memagent.serve.mcp import USER_HEADER, create_mcp_server, http_app
from tests.conftest import exchange
from tests.fakes import HashEmbedder, snapshot
from tests.serve.loopback import serving

T = TypeVar("T")
TOOLS = {"add_memory", "search_memory", "answer_from_memory", "list_memories", "delete_memory"}
KEYS = {"sk-ana-1": ["ana"], "sk-pair-2": ["ana", "bo"], "sk-admin-3": "*"}


@pytest.fixture
def memory(tmp_path: Path) -> Memory:
    llm = ScriptedLLM("NOTES: m1 names the dog\nANSWER: Pixel")
    memory = Memory(path=tmp_path / "store", embedder=HashEmbedder(), llm=llm)
    memory.add(exchange("I collect stamps from Peru"), user_id="bo", session_id="s1")
    return memory


def session(server: Any, script: Callable[[Client], Awaitable[T]], **options: Any) -> T:
    """Run ``script`` in one client session with ``server`` (an MCPServer, a URL transport, stdio params)."""

    async def main() -> T:
        async with Client(server, **options) as client:
            return await script(client)

    return anyio.run(main)


def text(result: CallToolResult) -> str:
    assert isinstance(result.content[0], TextContent)
    return result.content[0].text


def records(result: CallToolResult) -> list[dict[str, Any]]:
    assert not result.is_error, text(result)
    assert result.structured_content is not None
    found: list[dict[str, Any]] = result.structured_content["result"]
    return found


def test_the_five_tools_are_listed_and_none_takes_a_user(memory: Memory) -> None:
    listed = session(create_mcp_server(memory, user_id="ana"), lambda c: c.list_tools()).tools
    assert {tool.name for tool in listed} == TOOLS
    for tool in listed:
        assert not {"user", "user_id"} & set(tool.input_schema["properties"]), tool.name
        assert tool.description


@pytest.mark.parametrize("mode", ["auto", "legacy"], ids=["direct", "json-rpc streams"])
def test_every_tool_acts_for_the_servers_user(memory: Memory, mode: str) -> None:
    bos = memory.get_all(user_id="bo")

    async def script(client: Client) -> dict[str, Any]:
        added = await client.call_tool(
            "add_memory", {"text": "My greyhound is called Pixel", "session_id": "s9", "timestamp": "2024-03-01"}
        )
        searched = await client.call_tool("search_memory", {"query": "greyhound", "k": 3})
        answered = await client.call_tool("answer_from_memory", {"question": "What is my dog called?"})
        listed = await client.call_tool("list_memories", {})
        deleted = await client.call_tool("delete_memory", {"memory_id": records(added)[0]["id"]})
        return {
            "added": added,
            "searched": searched,
            "answered": answered,
            "listed": listed,
            "deleted": deleted,
            "after": await client.call_tool("list_memories", {"limit": 10}),
        }

    out = session(create_mcp_server(memory, user_id="ana"), script, mode=mode)
    [record] = records(out["added"])
    assert (record["user_id"], record["session_id"], record["value"]) == (
        "ana",
        "s9",
        "user: My greyhound is called Pixel",
    )
    assert record["timestamp"].startswith("2024-03-01")
    assert [h["record"]["id"] for h in records(out["searched"])] == [record["id"]]
    assert out["answered"].structured_content["text"] == "Pixel"
    assert [r["id"] for r in records(out["listed"])] == [record["id"]]
    assert text(out["deleted"]) == f"deleted {record['id']}"
    assert records(out["after"]) == [] and memory.get_all(user_id="ana") == []
    assert memory.get_all(user_id="bo") == bos


def test_a_user_id_argument_from_the_model_changes_nothing(memory: Memory) -> None:
    bos = memory.get_all(user_id="bo")

    async def script(client: Client) -> tuple[CallToolResult, CallToolResult, CallToolResult]:
        added = await client.call_tool("add_memory", {"text": "I live in Lyon", "user_id": "bo"})
        found = await client.call_tool("search_memory", {"query": "stamps Peru", "user_id": "bo"})
        listed = await client.call_tool("list_memories", {"user_id": "bo"})
        return added, found, listed

    added, found, listed = session(create_mcp_server(memory, user_id="ana"), script)
    assert records(added)[0]["user_id"] == "ana"
    assert {h["record"]["user_id"] for h in records(found)} == {"ana"}
    assert {r["user_id"] for r in records(listed)} == {"ana"}
    assert memory.get_all(user_id="bo") == bos


# memagent's own rules: the error names the tool's argument ("text", not Memory's messages[0].content)
BAD = [
    ("add_memory", {"text": "   "}, "text"),
    ("add_memory", {"text": "hi", "session_id": ""}, "session_id"),
    ("add_memory", {"text": "hi", "timestamp": "soon"}, "timestamp"),
    ("search_memory", {"query": " "}, "query"),
    ("search_memory", {"query": "dog", "k": 0}, "k"),
    ("search_memory", {"query": "dog", "question_date": "later"}, "question_date"),
    ("answer_from_memory", {"question": ""}, "question"),
    ("answer_from_memory", {"question": "dog?", "question_date": "3000-01-01"}, "question_date"),
    ("list_memories", {"limit": 0}, "limit"),
    ("delete_memory", {"memory_id": "no-such-id"}, "memory_id"),
    ("delete_memory", {"memory_id": "BO_ID"}, "memory_id"),  # bo's record: exactly as an id no one has
]
# the tool's schema (the SDK validates it): the error names the argument on its own line
BAD_TYPES = [
    ("add_memory", {}, "text"),
    ("search_memory", {"query": "dog", "k": "many"}, "k"),
    ("answer_from_memory", {"question": ["dog?"]}, "question"),
    ("list_memories", {"limit": "all"}, "limit"),
    ("delete_memory", {}, "memory_id"),
]


def test_bad_input_to_every_tool_is_an_error_naming_the_argument_and_changes_nothing(memory: Memory) -> None:
    bo_id = memory.get_all(user_id="bo")[0].id
    memory.add(exchange("My greyhound is called Pixel"), user_id="ana", session_id="s1")
    before = snapshot(memory)

    async def script(client: Client) -> list[CallToolResult]:
        calls = [
            (tool, {k: bo_id if v == "BO_ID" else v for k, v in args.items()}) for tool, args, _ in BAD + BAD_TYPES
        ]
        return [await client.call_tool(tool, args) for tool, args in calls]

    results = session(create_mcp_server(memory, user_id="ana"), script)
    for (tool, args, field), result in zip(BAD, results[: len(BAD)]):
        assert result.is_error, (tool, args)
        assert text(result).startswith(f"Error executing tool {tool}: {field}: "), (tool, args, text(result))
    assert text(results[len(BAD) - 1]) == text(results[len(BAD) - 2]).replace("no-such-id", bo_id)
    for (tool, args, field), result in zip(BAD_TYPES, results[len(BAD) :]):
        assert result.is_error and f"validation error for {tool}Arguments\n{field}\n" in text(result), (tool, args)
    assert snapshot(memory) == before


def test_a_server_without_a_user_refuses_in_process_calls(memory: Memory) -> None:
    result = session(create_mcp_server(memory), lambda c: c.call_tool("list_memories", {}))
    assert result.is_error and "this session has no user" in text(result)


# -- streamable HTTP: the API key decides the user --------------------------------------------------------
def over_http(url: str, headers: dict[str, str], script: Callable[[Client], Awaitable[T]]) -> T:
    async def main() -> T:
        async with httpx2.AsyncClient(headers=headers) as http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                return await script(client)

    return anyio.run(main)


def add(note: str) -> Callable[[Client], Awaitable[CallToolResult]]:
    return lambda client: client.call_tool("add_memory", {"text": note})


def test_over_http_each_key_acts_for_the_user_it_grants(memory: Memory) -> None:
    app = http_app(memory, keys=load_keys(env_text=json.dumps(KEYS)))
    with serving(app, lifespan="on") as root:
        url = f"{root}/mcp"
        as_ana = over_http(url, {"Authorization": "Bearer sk-ana-1"}, add("ana's note"))
        as_bo = over_http(url, {"Authorization": "Bearer sk-pair-2", USER_HEADER: "bo"}, add("bo's note"))
        as_cy = over_http(url, {"Authorization": "Bearer sk-admin-3", USER_HEADER: "cy"}, add("cy's note"))
    assert [records(r)[0]["user_id"] for r in (as_ana, as_bo, as_cy)] == ["ana", "bo", "cy"]
    assert [r.value for r in memory.get_all(user_id="ana")] == ["user: ana's note"]
    assert [r.value for r in memory.get_all(user_id="cy")] == ["user: cy's note"]


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}},
}


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "missing or incorrect API key"),
        ({"Authorization": "Bearer sk-nope"}, 401, "missing or incorrect API key"),
        (
            {"Authorization": "Bearer sk-ana-1", USER_HEADER: "bo"},
            403,
            "X-Memagent-User: this API key may not touch the memories of 'bo'",
        ),
        ({"Authorization": "Bearer sk-pair-2"}, 400, "X-Memagent-User: name the user this session acts for"),
        ({"Authorization": "Bearer sk-admin-3", USER_HEADER: "u" * 300}, 400, "X-Memagent-User: has 300 characters"),
    ],
    ids=[
        "no key",
        "unknown key",
        "a user the key does not grant",
        "a key for two users, none named",
        "an invalid user",
    ],
)
def test_over_http_a_request_the_key_does_not_cover_is_refused_before_any_tool(
    memory: Memory, headers: dict[str, str], status: int, message: str
) -> None:
    before = snapshot(memory)
    accept = {"Accept": "application/json, text/event-stream"}
    with serving(http_app(memory, keys=load_keys(env_text=json.dumps(KEYS))), lifespan="on") as root:
        response = httpx.post(f"{root}/mcp", json=INITIALIZE, headers={**accept, **headers}, timeout=30)
        with pytest.raises(Exception):  # noqa: B017 - the client's own error type for a refused connection
            over_http(f"{root}/mcp", headers, add("never stored"))
    assert response.status_code == status
    assert response.json()["error"]["message"].startswith(message)
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    assert snapshot(memory) == before


def test_over_http_a_server_for_one_user_takes_only_that_user(memory: Memory) -> None:
    app = http_app(memory, user_id="ana", keys=load_keys(env_text=json.dumps(KEYS)))
    accept = {"Accept": "application/json, text/event-stream"}
    with serving(app, lifespan="on") as root:
        as_ana = over_http(f"{root}/mcp", {"Authorization": "Bearer sk-admin-3"}, add("admin, as ana"))
        other = httpx.post(
            f"{root}/mcp",
            json=INITIALIZE,
            timeout=30,
            headers={**accept, "Authorization": "Bearer sk-admin-3", USER_HEADER: "bo"},
        )
    assert records(as_ana)[0]["user_id"] == "ana"
    assert other.status_code == 403


# -- stdio: `memagent mcp` as a client starts it ------------------------------------------------------------
def test_memagent_mcp_over_stdio_serves_the_named_user(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MEMAGENT_EMBEDDER__CACHE_PATH": str(tmp_path / "cache.sqlite")}
    command = ["-m", "memagent.cli", "--path", str(tmp_path / "store"), "mcp", "--user", "ana"]
    server = StdioServerParameters(command=sys.executable, args=command, env=env, cwd=str(Path.cwd()))

    async def script(client: Client) -> tuple[CallToolResult, CallToolResult]:
        added = await client.call_tool("add_memory", {"text": "My greyhound is called Pixel"})
        return added, await client.call_tool("search_memory", {"query": "What is my dog called?", "k": 1})

    added, found = session(server, script)
    assert records(added)[0]["user_id"] == "ana"
    assert records(found)[0]["record"]["value"] == "user: My greyhound is called Pixel"
