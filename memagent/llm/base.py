"""The LLM interface every stage uses: fact extraction, temporal fallback, reading, refusal, judging.

Two operations cover them all:
- ``generate``: a chat completion (greedy by default), with the log-probability of each generated
  token, so a caller can turn likelihood into confidence;
- ``continuation_logprobs``: the log-probability of each token of a given assistant reply, which
  scores a fixed answer ("I am sure") or measures token entropy without sampling.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from memagent.errors import MemagentError

ChatMessages = Sequence[Mapping[str, str]]  # [{"role": "system" | "user" | "assistant", "content": ...}]


class LLMError(MemagentError):
    """A model failed (load, request, generation). Never turned into a refusal or an empty answer."""


@dataclass(frozen=True)
class Generation:
    text: str
    token_logprobs: list[float] = field(default_factory=list)  # natural log, one per generated token
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # "stop" or "length"


class LLM(ABC):
    """A chat model. Implementations: ``LocalLLM`` (transformers, in-process) and ``OpenAICompatibleLLM``."""

    name: str
    context_window: int

    @abstractmethod
    def generate(
        self,
        messages: ChatMessages,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Generation: ...

    @abstractmethod
    def continuation_logprobs(self, messages: ChatMessages, continuation: str) -> list[float]:
        """Log-probability of each token of ``continuation`` as the assistant's reply to ``messages``."""

    def generate_batch(
        self,
        conversations: Sequence[ChatMessages],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """Several chats; implementations that can batch on the device override this."""
        return [
            self.generate(m, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop) for m in conversations
        ]

    def stream(
        self,
        messages: ChatMessages,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Iterator[str]:
        """Text pieces as they are generated; the default yields the whole reply at once."""
        yield self.generate(messages, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop).text

    def text_logprobs(self, text: str) -> list[tuple[str, float]]:
        """``text``'s tokens (their concatenation is ``text``) with the log-probability of each given the
        ones before it, as plain text, no chat template: token surprisal for key selection (SirLLM)."""
        raise LLMError(f"model {self.name!r}: text_logprobs is not available from this backend")

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in this model's tokenizer; the default is a rough 4 characters a token."""
        return max(1, len(text) // 4)


class LockedLLM(LLM):
    """Another ``LLM`` run by one caller at a time (an in-process model is not safe to drive from two
    threads); ``lock`` is shared by every wrapper of the same model."""

    def __init__(self, inner: LLM, lock: threading.Lock) -> None:
        self.inner, self.lock = inner, lock
        self.name, self.context_window = inner.name, inner.context_window

    def generate(
        self, messages: ChatMessages, *, max_new_tokens: int = 256, temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Generation:
        with self.lock:
            return self.inner.generate(messages, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop)

    def generate_batch(
        self, conversations: Sequence[ChatMessages], *, max_new_tokens: int = 256, temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        with self.lock:
            return self.inner.generate_batch(
                conversations, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop
            )

    def stream(
        self, messages: ChatMessages, *, max_new_tokens: int = 256, temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Iterator[str]:
        with self.lock:  # held until the stream is drained or closed
            yield from self.inner.stream(messages, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop)

    def continuation_logprobs(self, messages: ChatMessages, continuation: str) -> list[float]:
        with self.lock:
            return self.inner.continuation_logprobs(messages, continuation)

    def text_logprobs(self, text: str) -> list[tuple[str, float]]:
        with self.lock:
            return self.inner.text_logprobs(text)

    def count_tokens(self, text: str) -> int:
        with self.lock:
            return self.inner.count_tokens(text)


# --- helpers every backend shares ------------------------------------------------------------

def check_options(max_new_tokens: int, temperature: float, stop: Sequence[str] | None) -> None:
    if max_new_tokens < 1:
        raise LLMError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise LLMError(f"temperature must be 0 (greedy) or positive, got {temperature}")
    if isinstance(stop, str) or any(not s for s in stop or ()):
        raise LLMError(f"stop must be a list of non-empty strings, got {stop!r}")


def cut_at_stop(text: str, stop: Sequence[str]) -> str | None:
    """``text`` before the earliest stop string, or None when none occurs."""
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(found)] if found else None


def until_stop(pieces: Iterable[str], stop: Sequence[str]) -> Iterator[str]:
    """Pass pieces through up to the first stop string, holding back a tail that may begin one."""
    held = ""
    for piece in pieces:
        held += piece
        cut = cut_at_stop(held, stop)
        if cut is not None:
            if cut:
                yield cut
            return
        # the longest tail of `held` that is a proper prefix of some stop string (earliest possible start)
        tail = max((n for s in stop for n in range(1, len(s)) if held.endswith(s[:n])), default=0)
        if len(held) > tail:
            yield held[: len(held) - tail]
            held = held[len(held) - tail :]
    if held:
        yield held


def check_fits(model: LLM, prompt_tokens: int, extra: int, what: str) -> None:
    """Raise unless ``prompt_tokens + extra`` fit ``model``'s context window (prompts are never truncated)."""
    if prompt_tokens + extra > model.context_window:
        raise LLMError(
            f"prompt is {prompt_tokens} tokens and {what} is {extra} tokens: {prompt_tokens + extra} > "
            f"context window {model.context_window} of model {model.name!r} (the prompt is not truncated)"
        )


def tokens_covering(tokens: list[int], chars: int, decode: Callable[[list[int]], str]) -> list[int]:
    """The shortest prefix of ``tokens`` that decodes to at least ``chars`` characters.

    A stop string may begin inside a token; that token stays, so the logprobs cover the text.
    """
    for count in range(len(tokens) + 1):
        if len(decode(tokens[:count])) >= chars:
            return tokens[:count]
    return tokens
