"""``OpenAICompatibleLLM`` against our own server on loopback, and against servers that fail."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fastapi import FastAPI

from memagent.llm.base import LLMError
from memagent.llm.openai_compat import OpenAICompatibleLLM
from memagent.llm.scripted import ScriptedLLM
from memagent.serve.app import create_app
from tests.serve.loopback import serving
from tests.serve.test_app import LOGPROB, MODEL, REPLY, Probe

QUESTION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is my dog called?"}]


@pytest.fixture(scope="module")
def scripted() -> ScriptedLLM:
    return ScriptedLLM(Probe(), logprob=LOGPROB)


@pytest.fixture(scope="module")
def llm(scripted: ScriptedLLM) -> Iterator[OpenAICompatibleLLM]:
    with serving(create_app(scripted, model_name=MODEL)) as url:
        remote = OpenAICompatibleLLM(f"{url}/v1", MODEL, max_retries=0, timeout=10)
        yield remote
        remote.close()


def test_generate_round_trip(llm: OpenAICompatibleLLM) -> None:
    generation = llm.generate(QUESTION)
    assert generation.text == REPLY
    assert generation.token_logprobs == [LOGPROB] * 5  # 5 words, ScriptedLLM's tokens
    # "Be brief." + "What is my dog called?" = 2 + 5 words
    assert (generation.prompt_tokens, generation.completion_tokens, generation.finish_reason) == (7, 5, "stop")


def test_generate_passes_max_tokens_and_stop(llm: OpenAICompatibleLLM) -> None:
    cut = llm.generate(QUESTION, max_new_tokens=2)
    assert (cut.text, cut.finish_reason, cut.completion_tokens) == ("Your greyhound", "length", 2)
    assert llm.generate(QUESTION, stop=["is"]).text == "Your greyhound "


def test_generate_batch_keeps_order(llm: OpenAICompatibleLLM) -> None:
    generations = llm.generate_batch([QUESTION, QUESTION[1:]], max_new_tokens=1)
    assert [g.prompt_tokens for g in generations] == [7, 5]


def test_stream_concatenates_to_the_reply(llm: OpenAICompatibleLLM) -> None:
    pieces = list(llm.stream(QUESTION))
    assert pieces and "".join(pieces) == REPLY


def test_continuation_logprobs_round_trip(llm: OpenAICompatibleLLM, scripted: ScriptedLLM) -> None:
    assert llm.continuation_logprobs(QUESTION, "I am sure") == [LOGPROB] * 3
    # the model scored the reply as the assistant's turn after exactly these messages
    assert scripted.calls[-1] == [*QUESTION, {"role": "assistant", "content": "I am sure"}]


def test_model_failure_raises_llm_error_with_cause(llm: OpenAICompatibleLLM) -> None:
    with pytest.raises(LLMError, match="HTTP 500") as raised:
        llm.generate([{"role": "user", "content": "fail"}])
    assert isinstance(raised.value.__cause__, openai.InternalServerError)
    # a stream has sent its 200 headers before the model fails: the error arrives as an event
    with pytest.raises(LLMError, match="model failed: scripted failure") as raised:
        list(llm.stream([{"role": "user", "content": "fail"}]))
    assert isinstance(raised.value.__cause__, openai.APIError)


def test_server_down_raises_llm_error_with_cause() -> None:
    """Regression: a request that never reaches a server is an LLMError, never an empty answer."""
    with socket.socket() as sock:  # a port that was free a moment ago and has nothing listening now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = OpenAICompatibleLLM(f"http://127.0.0.1:{port}/v1", MODEL, max_retries=0, timeout=5)
    try:
        for call in (lambda: down.generate(QUESTION), lambda: list(down.stream(QUESTION)),
                     lambda: down.continuation_logprobs(QUESTION, "yes")):
            with pytest.raises(LLMError, match=f"127.0.0.1:{port}") as raised:
                call()
            assert isinstance(raised.value.__cause__, openai.APIConnectionError)
    finally:
        down.close()


def plain_server() -> FastAPI:
    """A server that ignores vLLM's extensions, as Ollama or llama.cpp do: no prompt_logprobs."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any]) -> dict[str, Any]:
        message = {"role": "assistant", "content": "ok"}
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    return app


def test_scoring_on_a_server_without_the_extension_says_so() -> None:
    with serving(plain_server()) as url:
        plain = OpenAICompatibleLLM(f"{url}/v1", MODEL, max_retries=0, timeout=10)
        try:
            assert plain.generate(QUESTION).token_logprobs == []  # no logprobs returned: empty, not an error
            with pytest.raises(LLMError, match="returned no prompt_logprobs: continuation scoring needs"):
                plain.continuation_logprobs(QUESTION, "yes")
        finally:
            plain.close()
