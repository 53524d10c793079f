"""The memories REST API over real HTTP on loopback: every route, per-user keys, bad input.

The store is a real embedded Chroma folder with ``HashEmbedder`` (no model to load); answers come
from a ``ScriptedLLM``. Each refused request is checked to leave the store exactly as it was.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from memagent import Memory
from memagent.answer.reader import NOTHING_REMEMBERED
from memagent.errors import InputError
from memagent.llm.scripted import ScriptedLLM
from memagent.serve.app import create_app
from memagent.serve.auth import load_keys
from tests.conftest import exchange
from tests.fakes import HashEmbedder, snapshot
from tests.serve.loopback import serving

MODEL = "scripted"
ANA, PAIR, CY, ADMIN = "sk-ana-0001", "sk-ana-bo-0002", "sk-cy-0003", "sk-admin-0004"
KEYS = {ANA: ["ana"], PAIR: ["ana", "bo"], CY: ["cy"], ADMIN: "*"}
MAX_BYTES = 50_000


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory) -> Memory:
    llm = ScriptedLLM("NOTES: m1 names the dog\nANSWER: Pixel")
    memory = Memory(path=tmp_path_factory.mktemp("rest") / "store", embedder=HashEmbedder(), llm=llm)
    memory.add(exchange("My greyhound is called Pixel"), user_id="ana", session_id="s1", timestamp="2024-01-05")
    memory.add(exchange("I collect stamps from Peru"), user_id="bo", session_id="s1", timestamp="2024-01-06")
    return memory


@pytest.fixture(scope="module")
def url(memory: Memory) -> Iterator[str]:
    keys = load_keys(env_text=json.dumps(KEYS))
    app = create_app(memory.llm, model_name=MODEL, keys=keys, memory=memory, max_request_bytes=MAX_BYTES)
    with serving(app) as root:
        yield root


@pytest.fixture(scope="module")
def bo_id(memory: Memory) -> str:
    return memory.get_all(user_id="bo")[0].id


def call(url: str, method: str, path: str, key: str | None = ANA, **kwargs: Any) -> httpx.Response:
    headers = auth(key) if key else {}
    return httpx.request(method, f"{url}{path}", headers=headers, timeout=30, **kwargs)


def error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


# -- a caller's own memories, every route ------------------------------------------------------------------
def test_every_verb_round_trips_for_the_keys_own_user(url: str) -> None:
    said = exchange("Last week I adopted a tabby called Miso")
    added = call(
        url,
        "POST",
        "/v1/memories",
        CY,
        json={
            "user_id": "cy",
            "messages": said,
            "session_id": "s1",
            "timestamp": "2024-02-01T10:00:00",
            "metadata": {"mood": 3},
        },
    )
    assert added.status_code == 201
    [record] = added.json()
    assert (record["user_id"], record["session_id"], record["metadata"]) == ("cy", "s1", {"mood": 3})
    assert record["timestamp"].startswith("2024-02-01T10:00:00")

    listed = call(url, "GET", "/v1/memories", CY, params={"user_id": "cy"}).json()
    assert [r["id"] for r in listed] == [record["id"]]
    hits = call(url, "POST", "/v1/memories/search", CY, json={"user_id": "cy", "query": "tabby Miso", "k": 3}).json()
    assert [h["record"]["id"] for h in hits] == [record["id"]]
    answer = call(url, "POST", "/v1/memories/answer", CY, json={"user_id": "cy", "question": "My cat's name?"})
    assert (answer.status_code, answer.json()["text"], answer.json()["refused"]) == (200, "Pixel", False)

    path = f"/v1/memories/{record['id']}"
    assert call(url, "GET", path, CY, params={"user_id": "cy"}).json() == record
    assert call(url, "GET", f"{path}/history", CY, params={"user_id": "cy"}).json() == []  # never changed
    updated = call(url, "PUT", path, CY, json={"user_id": "cy", "value": "My tabby is called Miso"}).json()
    assert (updated["id"], updated["value"]) == (record["id"], "My tabby is called Miso")
    history = call(url, "GET", f"{path}/history", CY, params={"user_id": "cy"}).json()
    assert [(h["event"], h["previous"]["value"]) for h in history] == [("update", record["value"])]

    assert call(url, "DELETE", path, CY, params={"user_id": "cy"}).json() == {"deleted": 1}
    assert call(url, "GET", path, CY, params={"user_id": "cy"}).status_code == 404
    assert [h["event"] for h in call(url, "GET", f"{path}/history", CY, params={"user_id": "cy"}).json()] == [
        "update",
        "delete",
    ]
    call(url, "POST", "/v1/memories", CY, json={"user_id": "cy", "messages": exchange("I like tea")})
    assert call(url, "DELETE", "/v1/users/cy/memories", CY).json() == {"deleted": 1}
    assert call(url, "GET", "/v1/memories", CY, params={"user_id": "cy"}).json() == []


def test_openapi_documents_every_route(url: str) -> None:
    paths = httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"]
    routes = {(method.upper(), path) for path, methods in paths.items() for method in methods}
    assert {
        ("POST", "/v1/memories"),
        ("GET", "/v1/memories"),
        ("POST", "/v1/memories/search"),
        ("POST", "/v1/memories/answer"),
        ("GET", "/v1/memories/{id}"),
        ("PUT", "/v1/memories/{id}"),
        ("DELETE", "/v1/memories/{id}"),
        ("GET", "/v1/memories/{id}/history"),
        ("DELETE", "/v1/users/{user_id}/memories"),
    } <= routes
    add_body = paths["/v1/memories"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert add_body == {"$ref": "#/components/schemas/AddRequest"}
    assert httpx.get(f"{url}/docs", timeout=10).status_code == 200


# -- authorisation: ana's key and bo's data ---------------------------------------------------------------
def naming_bo(bo_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every route, each request naming user bo."""
    bo = {"user_id": "bo"}
    return [
        ("POST", "/v1/memories", {"json": {**bo, "messages": exchange("I moved to Oslo")}}),
        ("GET", "/v1/memories", {"params": bo}),
        ("POST", "/v1/memories/search", {"json": {**bo, "query": "stamps"}}),
        ("POST", "/v1/memories/answer", {"json": {**bo, "question": "What do I collect?"}}),
        ("GET", f"/v1/memories/{bo_id}", {"params": bo}),
        ("PUT", f"/v1/memories/{bo_id}", {"json": {**bo, "value": "I collect coins"}}),
        ("DELETE", f"/v1/memories/{bo_id}", {"params": bo}),
        ("GET", f"/v1/memories/{bo_id}/history", {"params": bo}),
        ("DELETE", "/v1/users/bo/memories", {}),
        (
            "POST",
            "/v1/chat/completions",
            {"json": {"model": MODEL, "user": "bo", "messages": [{"role": "user", "content": "What do I collect?"}]}},
        ),
    ]


def bo_record_as_ana(record_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every route that takes a record id, asking for ``record_id`` as ana."""
    ana = {"user_id": "ana"}
    return [
        ("GET", f"/v1/memories/{record_id}", {"params": ana}),
        ("PUT", f"/v1/memories/{record_id}", {"json": {**ana, "value": "I collect coins"}}),
        ("DELETE", f"/v1/memories/{record_id}", {"params": ana}),
        ("GET", f"/v1/memories/{record_id}/history", {"params": ana}),
    ]


def test_anas_key_is_403_on_every_route_naming_bo(url: str, memory: Memory, bo_id: str) -> None:
    before = snapshot(memory)
    for method, path, kwargs in naming_bo(bo_id):
        response = call(url, method, path, ANA, **kwargs)
        assert response.status_code == 403, (method, path, response.text)
        field = "user" if path == "/v1/chat/completions" else "user_id"
        assert (error(response)["param"], error(response)["code"]) == (field, "forbidden_user")
        assert error(response)["message"] == f"{field}: this API key may not touch the memories of 'bo'"
    assert snapshot(memory) == before


def test_anas_key_is_404_for_bos_record_exactly_as_for_a_missing_id(url: str, memory: Memory, bo_id: str) -> None:
    before = snapshot(memory)
    missing = "0" * 32
    for (method, path, kwargs), (_, other, other_kwargs) in zip(bo_record_as_ana(bo_id), bo_record_as_ana(missing)):
        response, absent = call(url, method, path, ANA, **kwargs), call(url, method, other, ANA, **other_kwargs)
        assert (response.status_code, absent.status_code) == (404, 404), (method, path)
        # the same answer as for an id no one has, so ana cannot tell that bo's record exists
        assert error(response) == {**error(absent), "message": error(absent)["message"].replace(missing, bo_id)}
        assert (error(response)["param"], error(response)["code"]) == ("id", "not_found")
    assert snapshot(memory) == before


def test_a_key_for_two_users_touches_both_and_no_third(url: str, memory: Memory, bo_id: str) -> None:
    assert call(url, "GET", f"/v1/memories/{bo_id}", PAIR, params={"user_id": "bo"}).status_code == 200
    assert call(url, "GET", "/v1/memories", PAIR, params={"user_id": "ana"}).status_code == 200
    assert call(url, "GET", "/v1/memories", PAIR, params={"user_id": "cy"}).status_code == 403


def test_the_admin_key_touches_any_user_on_every_route(url: str, memory: Memory) -> None:
    added = call(url, "POST", "/v1/memories", ADMIN, json={"user_id": "dan", "messages": exchange("I ski")})
    assert added.status_code == 201
    record_id, dan = added.json()[0]["id"], {"user_id": "dan"}
    expected = [
        ("GET", "/v1/memories", {"params": dan}, 200),
        ("POST", "/v1/memories/search", {"json": {**dan, "query": "ski"}}, 200),
        ("POST", "/v1/memories/answer", {"json": {**dan, "question": "Do I ski?"}}, 200),
        ("GET", f"/v1/memories/{record_id}", {"params": dan}, 200),
        ("PUT", f"/v1/memories/{record_id}", {"json": {**dan, "value": "I snowboard"}}, 200),
        ("GET", f"/v1/memories/{record_id}/history", {"params": dan}, 200),
        ("DELETE", f"/v1/memories/{record_id}", {"params": dan}, 200),
        ("DELETE", "/v1/users/dan/memories", {}, 200),
        (
            "POST",
            "/v1/chat/completions",
            {"json": {"model": MODEL, "user": "dan", "messages": [{"role": "user", "content": "Do I ski?"}]}},
            200,
        ),
    ]
    for method, path, kwargs, status in expected:
        assert call(url, method, path, ADMIN, **kwargs).status_code == status, (method, path)
    assert memory.get_all(user_id="dan") == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": f"Basic {ANA}"}, {"Authorization": f"Bearer {ANA}x"}],
    ids=["no key", "unknown key", "not bearer", "key plus a character"],
)
def test_a_request_without_a_known_key_is_401_on_every_route(
    url: str, memory: Memory, bo_id: str, headers: dict[str, str]
) -> None:
    before = snapshot(memory)
    for method, path, kwargs in naming_bo(bo_id):
        kwargs = {**kwargs, **({"params": {"user_id": "ana"}} if "params" in kwargs else {})}
        response = httpx.request(method, f"{url}{path}", headers=headers, timeout=30, **kwargs)
        assert (response.status_code, error(response)["code"]) == (401, "invalid_api_key"), (method, path)
    assert snapshot(memory) == before


# -- bad input: a 400 naming the field, and nothing stored changes -----------------------------------------
ANA_MSG = exchange("I run on Sundays")
BAD = [
    (
        "POST",
        "/v1/memories",
        {"json": {"user_id": "ana", "messages": [{"role": "robot", "content": "hi"}]}},
        "messages[0].role",
    ),
    (
        "POST",
        "/v1/memories",
        {"json": {"user_id": "ana", "messages": [{"role": "user", "content": "  "}]}},
        "messages[0].content",
    ),
    ("POST", "/v1/memories", {"json": {"user_id": "ana", "messages": []}}, "messages"),
    ("POST", "/v1/memories", {"json": {"messages": ANA_MSG}}, "user_id"),
    ("POST", "/v1/memories", {"json": {"user_id": "", "messages": ANA_MSG}}, "user_id"),
    ("POST", "/v1/memories", {"json": {"user": "ana", "user_id": "ana", "messages": ANA_MSG}}, "user"),
    ("POST", "/v1/memories", {"json": {"user_id": "ana", "messages": ANA_MSG, "session_id": ""}}, "session_id"),
    ("POST", "/v1/memories", {"json": {"user_id": "ana", "messages": ANA_MSG, "timestamp": "soon"}}, "timestamp"),
    (
        "POST",
        "/v1/memories",
        {"json": {"user_id": "ana", "messages": ANA_MSG, "metadata": {"x": {"y": 1}}}},
        "metadata.x",
    ),
    ("POST", "/v1/memories", {"json": {"user_id": "ana", "agent_id": "", "messages": ANA_MSG}}, "agent_id"),
    ("GET", "/v1/memories", {}, "user_id"),
    ("GET", "/v1/memories", {"params": {"user_id": "ana", "run_id": " "}}, "run_id"),
    ("POST", "/v1/memories/search", {"json": {"user_id": "ana"}}, "query"),
    ("POST", "/v1/memories/search", {"json": {"user_id": "ana", "query": " "}}, "query"),
    ("POST", "/v1/memories/search", {"json": {"user_id": "ana", "query": "dog", "k": 0}}, "k"),
    ("POST", "/v1/memories/search", {"json": {"user_id": "ana", "query": "dog", "k": 2.5}}, "k"),
    (
        "POST",
        "/v1/memories/search",
        {"json": {"user_id": "ana", "query": "dog", "filters": {"session_ids": []}}},
        "filters.session_ids",
    ),
    (
        "POST",
        "/v1/memories/search",
        {"json": {"user_id": "ana", "query": "dog", "question_date": "later"}},
        "question_date",
    ),
    ("POST", "/v1/memories/answer", {"json": {"user_id": "ana", "question": ""}}, "question"),
    ("POST", "/v1/memories/answer", {"json": {"user_id": "ana", "question": "dog?", "k": -1}}, "k"),
    ("GET", "/v1/memories/ANA_ID", {}, "user_id"),
    ("PUT", "/v1/memories/ANA_ID", {"json": {"user_id": "ana", "value": " "}}, "value"),
    ("PUT", "/v1/memories/ANA_ID", {"json": {"user_id": "ana", "metadata": {"n": float("inf")}}}, "metadata.n"),
    ("PUT", "/v1/memories/ANA_ID", {"json": {"value": "I walk"}}, "user_id"),
    ("PUT", "/v1/memories/ANA_ID", {"json": {"user_id": "ana", "text": "I walk"}}, "text"),
    ("DELETE", "/v1/memories/ANA_ID", {"params": {"user_id": ""}}, "user_id"),
    ("GET", "/v1/memories/ANA_ID/history", {}, "user_id"),
    ("DELETE", "/v1/users/%20/memories", {}, "user_id"),
    ("DELETE", "/v1/users/ana/memories", {"params": {"agent_id": "a\x01"}}, "agent_id"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"), BAD, ids=[f"{m} {p.replace('/v1/', '')} {f}" for m, p, _, f in BAD]
)
def test_bad_input_is_400_naming_the_field_and_changes_nothing(
    url: str, memory: Memory, method: str, path: str, kwargs: dict[str, Any], field: str
) -> None:
    path = path.replace("ANA_ID", memory.get_all(user_id="ana")[0].id)
    before = snapshot(memory)
    if "json" in kwargs:  # json.dumps, not httpx's encoder: inf must reach the server as JSON's Infinity
        kwargs = {"content": json.dumps(kwargs["json"]), "headers": {"content-type": "application/json", **auth(ANA)}}
        response = httpx.request(method, f"{url}{path}", timeout=30, **kwargs)
    else:
        response = call(url, method, path, ANA, **kwargs)
    assert response.status_code == 400, response.text
    assert (error(response)["param"], error(response)["type"]) == (field, "invalid_request_error")
    assert error(response)["message"].startswith(f"{field}: ")
    assert snapshot(memory) == before


def test_a_body_that_is_not_json_or_too_large_is_refused_before_parsing(url: str, memory: Memory) -> None:
    before = snapshot(memory)
    headers = {"content-type": "application/json", **auth(ANA)}
    broken = httpx.post(f"{url}/v1/memories", content=b'{"user_id": "ana", "messages": [', headers=headers)
    assert broken.status_code == 400 and error(broken)["message"].startswith("request body: ")
    big = json.dumps({"user_id": "ana", "messages": exchange("x" * MAX_BYTES)}).encode()
    assert httpx.post(f"{url}/v1/memories", content=big, headers=headers).status_code == 413
    chunked = httpx.post(f"{url}/v1/memories", content=iter([big[:30_000], big[30_000:]]), headers=headers)
    assert chunked.status_code == 413
    assert snapshot(memory) == before


def test_a_body_sent_in_chunks_within_the_limit_is_read_whole(url: str) -> None:
    body = json.dumps({"user_id": "ana", "query": "greyhound"}).encode()
    headers = {"content-type": "application/json", **auth(ANA)}
    response = httpx.post(f"{url}/v1/memories/search", content=iter([body[:10], body[10:]]), headers=headers)
    assert response.status_code == 200 and response.json()[0]["record"]["user_id"] == "ana"


def test_concurrent_searches_all_succeed(url: str) -> None:
    async def searches() -> list[int]:
        async with httpx.AsyncClient(base_url=url, headers=auth(ANA), timeout=60) as client:
            replies = await asyncio.gather(
                *(client.post("/v1/memories/search", json={"user_id": "ana", "query": f"dog {i}"}) for i in range(40))
            )
        return [r.status_code for r in replies]

    assert asyncio.run(searches()) == [200] * 40


# -- the chat endpoint stores exchanges ---------------------------------------------------------------------
@pytest.fixture
def chat_memory(tmp_path: Path) -> Memory:
    return Memory(path=tmp_path / "store", embedder=HashEmbedder())


def test_store_exchanges_adds_each_answered_exchange_to_its_session(chat_memory: Memory) -> None:
    llm = ScriptedLLM("ANSWER: You said Pixel")
    keys = load_keys(env_text=json.dumps(KEYS))
    app = create_app(llm, model_name=MODEL, keys=keys, memory=chat_memory, store_exchanges=True)

    def ask(root: str, text: str, user: str = "ana", **extra: Any) -> httpx.Response:
        body = {"model": MODEL, "user": user, "messages": [{"role": "user", "content": text}], **extra}
        return httpx.post(f"{root}/v1/chat/completions", json=body, headers=auth(ANA), timeout=30)

    with serving(app) as root:
        assert ask(root, "My dog is Pixel", metadata={"session_id": "chat-1"}).status_code == 200
        assert ask(root, "What is my dog called?", metadata={"session_id": "chat-1"}).status_code == 200
        assert ask(root, "Hello", metadata={}).status_code == 200
        calls = len(llm.calls)
        refused = [ask(root, "Hi", user="bo"), ask(root, "Hi", metadata={"session_id": ""})]
    assert [r.status_code for r in refused] == [403, 400]
    assert error(refused[1])["param"] == "metadata.session_id"
    assert len(llm.calls) == calls  # refused before the model ran

    records = chat_memory.get_all(user_id="ana")
    in_chat = [(r.round_index, r.value) for r in records if r.session_id == "chat-1"]
    assert in_chat == [  # the first question met an empty memory: refused without asking the model
        (0, f"user: My dog is Pixel\nassistant: {NOTHING_REMEMBERED}"),
        (1, "user: What is my dog called?\nassistant: You said Pixel"),
    ]
    assert [r.value for r in records if r.session_id != "chat-1"] == ["user: Hello\nassistant: You said Pixel"]
    assert chat_memory.get_all(user_id="bo") == []


def test_store_exchanges_needs_a_memory() -> None:
    with pytest.raises(InputError, match="store_exchanges: needs a memory"):
        create_app(ScriptedLLM("hi"), model_name=MODEL, store_exchanges=True)
