"""A scripted reader for the chat examples: it answers from the memories in its prompt, piece by piece."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence

from memagent import ScriptedLLM
from memagent.llm.base import ChatMessages

FACT = "My sister Lena lives in Porto."


def reader_reply(messages: ChatMessages) -> str:
    """Cites the memory that mentions Lena and answers from it; asked about a blood type, reads the first
    memory and says it does not know, as does a question with no memory about Lena."""
    listed = re.search(r"\[.*\]", messages[-1]["content"], re.S)
    memories = json.loads(listed.group(0)) if listed else []
    question = messages[-1]["content"].rpartition("My question:")[2]
    if "blood type" in question and memories:
        return f"NOTES:\n{memories[0]['memory']}: nothing about blood.\nANSWER: I don't know."
    for memory in memories:
        if "Lena" in memory["content"]:
            return f"NOTES:\n{memory['memory']}: her sister Lena lives in Porto.\nANSWER: Porto"
    return "NOTES:\nANSWER: I don't know."


class StreamingLLM(ScriptedLLM):
    """``ScriptedLLM`` whose stream yields a few characters at a time, so labels arrive split."""

    def stream(
        self,
        messages: ChatMessages,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Iterator[str]:
        text = self.generate(messages, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop).text
        for start in range(0, len(text), 3):
            yield text[start : start + 3]
