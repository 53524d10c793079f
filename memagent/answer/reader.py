"""The reader: answer a question from retrieved memories, or say the memories do not hold it.

Memories go in as JSON with their dates, oldest first (LongMemEval §5 finds time-sorted JSON the
best format), and the model reads them Chain-of-Note style (Yu et al. 2023): first a note on what
each useful memory says, then the answer. Notes keep a small model from answering from the one
memory that merely looks similar, and they name the memories used, which become citations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from memagent.answer.confidence import answer_confidence, combined_confidence, sure_confidence
from memagent.llm.base import LLM, ChatMessages, Generation
from memagent.schema import Answer

SYSTEM = "You are a helpful assistant with a memory of past conversations with the user."
# Tried on the demo with the 1.5B and 0.5B readers (evals/results/README.md): asking for a note on
# every memory made the 1.5B copy all five (2-3 minutes of decoding on a CPU), and stern "never
# guess" wording made both answer "I don't know" to questions their memories did answer. Copying
# at most three helpful memories keeps the notes short and the answers grounded.
INSTRUCTIONS = (
    "Answer my question from these memories. First write 'NOTES:' and copy only the memories that help "
    "answer it (at most three, one line each: 'mN: ...'); skip the others. Then write 'ANSWER:' and a "
    "short answer. If no memory answers it, write 'ANSWER: I don't know.'"
)
DIRECT = (
    "Answer my question from these memories in a few words, with no explanation. Work out dates from the "
    "memories' dates when the question needs it. If the memories do not say, answer: I don't know."
)

# LoCoMo's adversarial questions swap the person ("Caroline's son" for Melanie's): the memories look
# relevant but are about someone else.
CHECKED = DIRECT + " First check that the memories are about the very person and thing asked about."


@dataclass(frozen=True)
class ReaderPrompt:
    """How the reader is asked. ``fixed_first``: the instructions open the prompt (in the system message),
    so a backend that keeps its KV cache between calls (llama.cpp) computes them once for all questions;
    otherwise they follow the question, as first written."""

    name: str
    instructions: str
    fixed_first: bool


PROMPTS = {
    p.name: p
    for p in (
        ReaderPrompt("notes", INSTRUCTIONS, fixed_first=False),  # Chain-of-Note, the original wording
        ReaderPrompt("notes-first", INSTRUCTIONS, fixed_first=True),
        ReaderPrompt("direct-first", DIRECT, fixed_first=True),  # no notes: a few tokens to decode
        ReaderPrompt("checked-first", CHECKED, fixed_first=True),
    )
}
DEFAULT_PROMPT = "notes"
# The best prompt per reader on LoCoMo's training conversations (evals/results/qa_prompt_tuning: 30
# questions, memagent's context, judge rules+1.5B); other models get the default.
BEST_PROMPT = {"qwen2.5-coder-1.5b-instruct": "direct-first", "qwen2.5-coder-0.5b-instruct": "notes"}


def prompt_for(model_name: str) -> str:
    """The best prompt for a model, or for the base of a tuned one ("base+adapter")."""
    return BEST_PROMPT.get(model_name.partition("+")[0], DEFAULT_PROMPT)
# Notes on long memories can use up max_new_tokens before the answer: the notes so far stay in the
# chat and the model is asked for the answer alone (seen on LongMemEval with the 1.5B reader).
FINISH = "Stop the notes here. Write 'ANSWER:' and a short answer, or 'ANSWER: I don't know.'"
ANSWER_TOKENS = 48
NOTHING_REMEMBERED = "I don't know: I have no memories to answer this from."
# a refusal may follow a stray label ("ANSWER: NOTES: I don't know."), so it is searched, not matched
_REFUSAL = re.compile(
    r"\b(i\s+(do\s+not|don't|dont)\s+know|not\s+(mentioned|stated|known)|no\s+information)\b|^\W*unknown\b", re.I
)
_MEMORY_REF = re.compile(r"\bm(\d+)\b")


@dataclass(frozen=True)
class Passage:
    """One piece of memory as the reader sees it: a record, or a whole session for a baseline."""

    id: str
    date: datetime
    text: str


def reader_messages(
    question: str, passages: Sequence[Passage], question_date: datetime, max_chars: int,
    prompt: str = DEFAULT_PROMPT,
) -> ChatMessages:
    style = prompt_named(prompt)
    ordered = sorted(passages, key=lambda p: p.date)
    memories = [
        {"memory": f"m{n}", "date": f"{p.date:%Y/%m/%d (%a) %H:%M}", "content": _cut(p.text, max_chars)}
        for n, p in enumerate(ordered, start=1)
    ]
    asked = (
        "Memories of our past conversations, oldest first:\n"
        f"{json.dumps(memories, ensure_ascii=False, indent=1)}\n\n"
        f"Today is {question_date:%Y/%m/%d (%a) %H:%M}.\nMy question: {question}"
    )
    if style.fixed_first:
        return [{"role": "system", "content": f"{SYSTEM}\n\n{style.instructions}"}, {"role": "user", "content": asked}]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{asked}\n\n{style.instructions}"}]


def prompt_named(name: str) -> ReaderPrompt:
    if name not in PROMPTS:
        raise ValueError(f"prompt: {name!r} is not one of {sorted(PROMPTS)}")
    return PROMPTS[name]


def _cut(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def read(
    llm: LLM,
    question: str,
    passages: Sequence[Passage],
    question_date: datetime,
    *,
    max_new_tokens: int = 200,
    max_chars: int = 2000,
    refuse_below: float | None = None,
    prompt: str = DEFAULT_PROMPT,
    sure_probe: str | None = None,
) -> Answer:
    """``sure_probe`` (a wording of ``confidence.SURE_QUESTIONS``): also ask the reader whether it is
    sure, and make ``confidence`` R-Tuning's mean of that and the answer's likelihood."""
    ordered = sorted(passages, key=lambda p: p.date)
    messages = reader_messages(question, ordered, question_date, max_chars, prompt)
    generation = llm.generate(messages, max_new_tokens=max_new_tokens)
    if generation.finish_reason == "length" and "ANSWER:" not in generation.text:
        generation = _finish(llm, messages, generation)
    sure = None if sure_probe is None else sure_confidence(llm, messages, generation.text.strip(), sure_probe)
    return parse_reply(generation, ordered, llm, refuse_below, sure)


def _finish(llm: LLM, messages: ChatMessages, cut: Generation) -> Generation:
    """The answer to a reply cut off in its notes, asked for after them; one generation holding both."""
    ending = llm.generate(
        [*messages, {"role": "assistant", "content": cut.text}, {"role": "user", "content": FINISH}],
        max_new_tokens=ANSWER_TOKENS,
    )
    answer = ending.text.strip()
    return Generation(
        text=f"{cut.text}\n{answer if 'ANSWER:' in answer else 'ANSWER: ' + answer}",
        token_logprobs=ending.token_logprobs,  # confidence is read from the answer's tokens only
        prompt_tokens=cut.prompt_tokens + ending.prompt_tokens,
        completion_tokens=cut.completion_tokens + ending.completion_tokens,
        finish_reason=ending.finish_reason,
    )


def parse_reply(
    generation: Generation, ordered: Sequence[Passage], llm: LLM, refuse_below: float | None,
    sure: float | None = None,
) -> Answer:
    """Split notes from answer, map 'mN' back to record ids, and score the answer's likelihood (with
    the sure-probe's ``sure`` when it was asked)."""
    text = generation.text.strip()
    notes, _, answer = text.rpartition("ANSWER:")
    if not _:  # the model skipped the format: the whole reply is the answer
        notes, answer = "", text
    notes = notes.replace("NOTES:", "").strip()
    answer = answer.strip() or "I don't know."
    cited = {int(n) for n in _MEMORY_REF.findall(notes) if 1 <= int(n) <= len(ordered)}
    prediction = answer_confidence(generation.token_logprobs, llm.count_tokens(answer))
    confidence = prediction if sure is None else combined_confidence(prediction, sure)
    refused = bool(_REFUSAL.search(answer)) or (refuse_below is not None and confidence < refuse_below)
    return Answer(
        text=answer,
        refused=refused,
        confidence=confidence,
        prediction_confidence=prediction,
        sure_confidence=sure,
        citations=[ordered[n - 1].id for n in sorted(cited)],
        notes=notes,
    )

