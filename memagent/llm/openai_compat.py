"""``OpenAICompatibleLLM``: any OpenAI-compatible server through the official ``openai`` client.

One class for all of them (``memagent serve``, vLLM, Ollama, llama.cpp server, LM Studio, OpenAI):
only ``base_url`` changes.

Continuation scoring (``continuation_logprobs``) is not part of the OpenAI API. We use vLLM's
chat-completion extensions, which ``memagent serve`` implements too:

1. ``messages`` with ``add_generation_prompt=true, prompt_logprobs=0, max_tokens=1``: the rendered
   prompt up to the assistant header; its ``prompt_logprobs`` list has one entry per prompt token.
2. ``messages + [assistant: continuation]`` with ``continue_final_message=true,
   add_generation_prompt=false, prompt_logprobs=0, max_tokens=1``: the same prompt followed by the
   open-ended reply.

The continuation's log-probabilities are the entries of (2) past the length of (1): the tokens of
(1) are a prefix of (2) whenever the template's assistant header ends in a newline or a special
token (Qwen, Llama, SmolLM, ...). The chat template is rendered by the server, so the client needs
no tokenizer; with vLLM's prefix caching, (2) re-reads little of what (1) read. Servers without these
extensions (OpenAI, Ollama, llama.cpp, LM Studio) reject or ignore them; either way we raise
``LLMError`` saying so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, cast

from memagent._extras import require

require("openai", "openai")

import openai  # noqa: E402

from memagent.llm.base import LLM, ChatMessages, Generation, LLMError  # noqa: E402

_SCORING_HINT = "continuation scoring needs vLLM's prompt_logprobs extension (vLLM or `memagent serve`)"


class OpenAICompatibleLLM(LLM):
    """A model behind an OpenAI-compatible HTTP API.

    >>> llm = OpenAICompatibleLLM("http://127.0.0.1:8000/v1", "qwen2.5-1.5b")   # doctest: +SKIP
    >>> llm.generate([{"role": "user", "content": "Hi"}]).text
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120,
        context_window: int = 8192,
        max_retries: int = 2,
    ) -> None:
        self.base_url = base_url
        self.name = model
        self.context_window = context_window
        # local servers need no key, but the client refuses to start without one
        key = api_key or os.environ.get("OPENAI_API_KEY") or "no-key"
        self._client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=max_retries)

    def __repr__(self) -> str:
        return f"OpenAICompatibleLLM(base_url={self.base_url!r}, model={self.name!r})"

    def close(self) -> None:
        self._client.close()

    # -- generation --------------------------------------------------------------------------
    def generate(
        self,
        messages: ChatMessages,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Generation:
        try:
            response = self._client.chat.completions.create(
                **self._request(messages, max_new_tokens, temperature, stop), logprobs=True
            )
        except openai.OpenAIError as exc:
            self._fail("chat completion", exc)
        choice = response.choices[0]
        content = choice.logprobs.content if choice.logprobs is not None else None
        usage = response.usage
        return Generation(
            text=choice.message.content or "",
            token_logprobs=[t.logprob for t in content or ()],
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason or "stop",
        )

    def generate_batch(self, conversations: Sequence[ChatMessages], **options: Any) -> list[Generation]:
        """Concurrent requests, so a batching server (vLLM) can batch them; order is kept."""
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(conversations)))) as pool:
            return list(pool.map(lambda messages: self.generate(messages, **options), conversations))

    def stream(self, messages: ChatMessages, **options: Any) -> Iterator[str]:
        request = self._request(
            messages,
            int(options.get("max_new_tokens", 256)),
            float(options.get("temperature", 0.0)),
            cast("Sequence[str] | None", options.get("stop")),
        )
        try:
            with self._client.chat.completions.create(**request, stream=True) as chunks:
                for chunk in chunks:
                    delta = chunk.choices[0].delta.content if chunk.choices else None
                    if delta:
                        yield delta
        except openai.OpenAIError as exc:
            self._fail("streamed chat completion", exc)

    # -- scoring -----------------------------------------------------------------------------
    def continuation_logprobs(self, messages: ChatMessages, continuation: str) -> list[float]:
        """Log-probability of each token of ``continuation``; see the module docstring for how."""
        if not continuation:
            return []  # nothing to score, and templates render an empty final message inconsistently
        prefix = self._prompt_logprobs(messages, add_generation_prompt=True)
        reply = [*messages, {"role": "assistant", "content": continuation}]
        full = self._prompt_logprobs(reply, add_generation_prompt=False)
        if len(full) <= len(prefix):
            raise LLMError(
                f"{self.base_url} ({self.name}): scoring gave {len(full)} prompt positions with the reply and "
                f"{len(prefix)} without it; {_SCORING_HINT}"
            )
        return [_entry_logprob(entry) for entry in full[len(prefix) :]]

    def _prompt_logprobs(self, messages: ChatMessages, *, add_generation_prompt: bool) -> list[Any]:
        extensions = {
            "prompt_logprobs": 0,  # only the prompt's own token at each position
            "add_generation_prompt": add_generation_prompt,
            "continue_final_message": not add_generation_prompt,
        }
        try:
            response = self._client.chat.completions.create(
                **self._request(messages, 1, 0.0, None), extra_body=extensions
            )
        except openai.OpenAIError as exc:
            self._fail(f"scoring ({_SCORING_HINT})", exc)
        found = (response.model_extra or {}).get("prompt_logprobs")
        if not isinstance(found, list):
            raise LLMError(f"{self.base_url} ({self.name}) returned no prompt_logprobs: {_SCORING_HINT}")
        return found

    # -- helpers -----------------------------------------------------------------------------
    def _request(
        self, messages: ChatMessages, max_new_tokens: int, temperature: float, stop: Sequence[str] | None
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.name,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": max_new_tokens,
            "temperature": temperature,
        }
        if stop:
            request["stop"] = list(stop)
        return request

    def _fail(self, what: str, exc: openai.OpenAIError) -> NoReturn:
        status = getattr(exc, "status_code", None)
        detail = f"HTTP {status}: {exc}" if status else f"{type(exc).__name__}: {exc}"
        raise LLMError(f"{what} failed at {self.base_url} (model {self.name!r}): {detail}") from exc


def _entry_logprob(entry: object) -> float:
    """One vLLM prompt_logprobs entry, ``{token_id: {"logprob": ..., ...}}``, to its log-probability."""
    if not isinstance(entry, Mapping) or len(entry) != 1:
        raise LLMError(f"unexpected prompt_logprobs entry {entry!r}: expected one token per position")
    (value,) = entry.values()
    if not isinstance(value, Mapping) or not isinstance(value.get("logprob"), (int, float)):
        raise LLMError(f"unexpected prompt_logprobs entry {entry!r}: no numeric 'logprob'")
    return float(value["logprob"])
