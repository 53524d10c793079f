"""``ScriptedLLM``: a real implementation of the LLM interface that answers from a script.

For tests and examples, passed in wherever an LLM goes (like httpx's MockTransport): no model,
no files, deterministic. ``reply`` maps the chat to the reply text; every call is recorded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from memagent.llm.base import LLM, ChatMessages, Generation


class ScriptedLLM(LLM):
    def __init__(
        self,
        reply: str | Sequence[str] | Callable[[ChatMessages], str],
        *,
        logprob: float = -0.1,
        name: str = "scripted",
        context_window: int = 8192,
    ) -> None:
        self._reply = reply
        self._next = 0
        self.logprob = logprob  # every token gets this log-probability
        self.name = name
        self.context_window = context_window
        self.calls: list[list[dict[str, str]]] = []

    def generate(
        self,
        messages: ChatMessages,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Generation:
        self.calls.append([dict(m) for m in messages])
        text = self._text(messages)
        for marker in stop or ():
            text = text.split(marker)[0]
        tokens = text.split()[:max_new_tokens]
        return Generation(
            text=" ".join(tokens) if len(tokens) < len(text.split()) else text,
            token_logprobs=[self.logprob] * len(tokens),
            prompt_tokens=sum(len(m["content"].split()) for m in messages),
            completion_tokens=len(tokens),
            finish_reason="length" if len(text.split()) > max_new_tokens else "stop",
        )

    def continuation_logprobs(self, messages: ChatMessages, continuation: str) -> list[float]:
        self.calls.append([dict(m) for m in messages] + [{"role": "assistant", "content": continuation}])
        return [self.logprob] * max(1, len(continuation.split()))

    def text_logprobs(self, text: str) -> list[tuple[str, float]]:
        """Whitespace-led words as tokens; a word's log-probability is minus its length (rarer = longer)."""
        return [(piece, -float(len(piece.strip()))) for piece in re.findall(r"\s*\S+|\s+$", text)]

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _text(self, messages: ChatMessages) -> str:
        if callable(self._reply):
            return self._reply(messages)
        if isinstance(self._reply, str):
            return self._reply
        text = self._reply[min(self._next, len(self._reply) - 1)]
        self._next += 1
        return text
