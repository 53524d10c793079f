"""``memagent serve`` over real HTTP on loopback: a uvicorn thread around a ``ScriptedLLM``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from memagent.llm.base import ChatMessages, LLMError
from memagent.llm.scripted import ScriptedLLM
from memagent.serve.app import create_app
from tests.serve.loopback import serving

MODEL = "scripted-test"
KEY = "sk-test-key"
REPLY = "Your greyhound is called Pixel."
LOGPROB = -0.25
MAX_BYTES = 20_000


class Probe:
    """Script for the served ScriptedLLM: 'fail' raises, 'slow' sleeps and counts concurrent calls."""

    def __init__(self) -> None:
        self.active = self.most_active = 0
        self.guard = threading.Lock()

    def __call__(self, messages: ChatMessages) -> str:
        last = messages[-1]["content"]
        if last == "fail":
            raise LLMError("scripted failure")
        if last == "slow":
            with self.guard:
                self.active += 1
                self.most_active = max(self.most_active, self.active)
            time.sleep(0.05)
            with self.guard:
                self.active -= 1
        return REPLY


class FakeMemory:
    """Stands in for ``Memory``: ``answer`` returns a real ``Answer`` and records its arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def answer(self, question: str, /, *, user_id: str, llm: object = None, **_: object) -> object:
        from memagent.schema import Answer

        self.calls.append((question, user_id))
        return Answer(text="Pixel.", refused=False, confidence=0.8, citations=["rec-1"])


@pytest.fixture(scope="module")
def probe() -> Probe:
    return Probe()


@pytest.fixture(scope="module")
def fake_memory() -> FakeMemory:
    return FakeMemory()


@pytest.fixture(scope="module")
def url(probe: Probe, fake_memory: FakeMemory) -> Iterator[str]:
    llm = ScriptedLLM(probe, logprob=LOGPROB)
    app = create_app(llm, model_name=MODEL, max_request_bytes=MAX_BYTES, memory=fake_memory)  # type: ignore[arg-type]
    with serving(app) as root:
        yield f"{root}/v1"


@pytest.fixture(scope="module")
def keyed_url() -> Iterator[str]:
    with serving(create_app(ScriptedLLM(REPLY), model_name=MODEL, api_key=KEY)) as root:
        yield f"{root}/v1"


@pytest.fixture
def client(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=10) as c:
        yield c


def chat(text: str = "What is my dog called?", **fields: object) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **fields}


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]


def test_chat_round_trip_returns_text_usage_and_finish_reason(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Dog?"}])
    choice = response.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", REPLY, "stop")
    # ScriptedLLM counts words: "Dog?" is 1 prompt word, the reply 5 words
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == (1, 5, 6)
    assert choice.logprobs is None  # not asked for


def test_max_tokens_and_stop_reach_the_model(client: openai.OpenAI) -> None:
    cut = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Dog?"}], max_tokens=2)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("Your greyhound", "length")
    stopped = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Dog?"}], stop="called")
    assert stopped.choices[0].message.content == "Your greyhound is "


def test_logprobs_are_returned_per_token(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Dog?"}], logprobs=True, top_logprobs=0
    )
    assert [t.logprob for t in response.choices[0].logprobs.content] == [LOGPROB] * 5


def test_stream_chunks_concatenate_to_the_reply(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Dog?"}]
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_is_server_sent_events_ending_with_done(url: str) -> None:
    body = chat(stream=True, stream_options={"include_usage": True})
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 5


def test_model_calls_never_overlap(url: str, probe: Probe) -> None:
    def ask(_: int) -> int:
        return httpx.post(f"{url}/chat/completions", json=chat("slow"), timeout=10).status_code

    with ThreadPoolExecutor(max_workers=3) as pool:
        assert list(pool.map(ask, range(3))) == [200, 200, 200]
    assert probe.most_active == 1


def test_model_failure_is_a_500_in_openai_shape(url: str) -> None:
    response = httpx.post(f"{url}/chat/completions", json=chat("fail"), timeout=10)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert "scripted failure" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong"}, 401), ({"Authorization": f"Bearer {KEY}"}, 200)],
    ids=["no key", "wrong key", "right key"],
)
def test_api_key_is_required_when_set(keyed_url: str, headers: dict[str, str], status: int) -> None:
    response = httpx.post(f"{keyed_url}/chat/completions", json=chat(), headers=headers, timeout=10)
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{keyed_url}/models", headers=headers, timeout=10).status_code == 401


def test_openai_client_with_the_key_is_accepted(keyed_url: str) -> None:
    with openai.OpenAI(base_url=keyed_url, api_key=KEY, max_retries=0, timeout=10) as c:
        assert c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}]).choices


def test_oversized_request_is_413(url: str) -> None:
    big = json.dumps(chat("x" * MAX_BYTES)).encode()
    declared = httpx.post(f"{url}/chat/completions", content=big, timeout=10)
    assert declared.status_code == 413 and "max_request_bytes" in declared.json()["error"]["message"]
    # chunked: no Content-Length, so the limit is enforced while reading
    chunked = httpx.post(f"{url}/chat/completions", content=iter([big[:10_000], big[10_000:]]), timeout=10)
    assert chunked.status_code == 413


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"model": MODEL, "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": MODEL, "messages": []}, "messages"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(temperature="hot"), "temperature"),
        (chat(continue_final_message=True, add_generation_prompt=False, prompt_logprobs=0), "continue_final_message"),
    ],
)
def test_bad_body_is_400_naming_the_field(url: str, body: dict[str, object], param: str) -> None:
    response = httpx.post(f"{url}/chat/completions", json=body, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    assert error["message"].startswith(f"{param}: ")


def test_body_that_is_not_json_is_400(url: str) -> None:
    response = httpx.post(f"{url}/chat/completions", content=b"{not json", timeout=10)
    assert response.status_code == 400 and response.json()["error"]["message"].startswith("request body: ")


def test_unknown_model_is_404(url: str) -> None:
    response = httpx.post(f"{url}/chat/completions", json={**chat(), "model": "gpt-x"}, timeout=10)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "model_not_found")


def test_request_with_user_is_answered_from_memory(client: openai.OpenAI, fake_memory: FakeMemory) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "What is my dog called?"},
        ],
        user="ana",
    )
    assert response.choices[0].message.content == "Pixel."
    assert response.model_extra["memagent"] == {"refused": False, "confidence": 0.8, "citations": ["rec-1"]}
    assert fake_memory.calls[-1] == ("What is my dog called?", "ana")


def test_request_without_user_does_not_touch_memory(client: openai.OpenAI, fake_memory: FakeMemory) -> None:
    before = len(fake_memory.calls)
    response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Dog?"}])
    assert "memagent" not in (response.model_extra or {})
    assert len(fake_memory.calls) == before


def test_streamed_memory_answer_carries_the_memagent_field(url: str) -> None:
    body = chat("What is my dog called?", user="ana", stream=True)
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=10) as response:
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert lines[-1] == "[DONE]"
    events = [json.loads(line) for line in lines[:-1]]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == "Pixel."
    assert events[-1]["memagent"]["citations"] == ["rec-1"]
