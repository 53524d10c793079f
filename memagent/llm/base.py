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
from collections.abc import Iterator, Mapping, Sequence
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
