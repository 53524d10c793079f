"""The reader: prompt construction, reply parsing, refusal and confidence, through Memory.answer."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pytest

from memagent import LLMError, ScriptedLLM
from memagent.answer.confidence import answer_confidence
from memagent.answer.reader import Passage, read, reader_messages
from tests.conftest import exchange

WHEN = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)


def passage(i: str, day: int, text: str) -> Passage:
    return Passage(i, datetime(2024, 2, day, 12, 0, tzinfo=timezone.utc), text)


def memories_in(messages) -> list[dict]:
    prompt = messages[-1]["content"]
    return json.loads(prompt[prompt.index("[") : prompt.rindex("]") + 1])


def test_prompt_lists_memories_as_json_oldest_first_with_dates_and_the_question_date() -> None:
    messages = reader_messages("Where do I live?", [passage("b", 20, "moved to Bristol"), passage("a", 3, "x" * 50)],
                               WHEN, max_chars=20)
    memories = memories_in(messages)
    assert [m["date"] for m in memories] == ["2024/02/03 (Sat) 12:00", "2024/02/20 (Tue) 12:00"]
    assert memories[0]["content"] == "x" * 19 + "…"  # cut to max_chars
    assert "Today is 2024/03/01 (Fri) 09:00." in messages[-1]["content"]
    assert "My question: Where do I live?" in messages[-1]["content"]


@pytest.mark.parametrize("prompt", ["notes-first", "direct-first"])
def test_fixed_first_prompts_open_with_the_instructions_and_keep_the_memories_after(prompt: str) -> None:
    from memagent.answer.reader import PROMPTS

    one = reader_messages("Where do I live?", [passage("a", 3, "moved to Bristol")], WHEN, 100, prompt)
    other = reader_messages("What is my job?", [passage("b", 9, "I teach maths")], WHEN, 100, prompt)
    assert one[0] == other[0] and one[0]["content"].endswith(PROMPTS[prompt].instructions)  # shared, cacheable
    assert PROMPTS[prompt].instructions not in one[-1]["content"]
    assert memories_in(one)[0]["content"] == "moved to Bristol"
    notes = reader_messages("Where do I live?", [passage("a", 3, "moved to Bristol")], WHEN, 100, "notes")
    assert notes[-1]["content"].endswith(PROMPTS["notes"].instructions)  # the original layout
    with pytest.raises(ValueError, match="prompt: 'terse' is not one of"):
        reader_messages("Where do I live?", [], WHEN, 100, "terse")


def test_a_direct_reply_without_labels_is_the_answer() -> None:
    answer = read(ScriptedLLM("Bristol"), "Where do I live?", [passage("a", 3, "moved to Bristol")], WHEN,
                  prompt="direct-first")
    assert answer.text == "Bristol" and not answer.refused and answer.notes == ""


def test_reply_is_split_into_notes_answer_and_citations() -> None:
    llm = ScriptedLLM("NOTES:\nm2: she moved to Bristol in June\nANSWER: Bristol", logprob=math.log(0.5))
    answer = read(llm, "Where do I live?", [passage("rec-late", 20, "moved"), passage("rec-early", 3, "Leeds")], WHEN)
    assert answer.text == "Bristol" and not answer.refused
    assert answer.citations == ["rec-late"]  # m2 is the later memory once sorted by time
    assert answer.confidence == pytest.approx(0.5)


def test_notes_cut_off_by_the_token_limit_are_followed_by_a_request_for_the_answer() -> None:
    long_notes = "NOTES:\nm1: " + "we talked about the move " * 20
    llm = ScriptedLLM([long_notes, "ANSWER: Bristol"], logprob=math.log(0.5))
    answer = read(llm, "Where do I live?", [passage("rec", 20, "moved to Bristol")], WHEN, max_new_tokens=30)
    assert answer.text == "Bristol" and not answer.refused and answer.citations == ["rec"]
    assert len(llm.calls) == 2 and llm.calls[1][-2]["role"] == "assistant"  # the notes so far stay in the chat
    finished = read(ScriptedLLM("NOTES: m1: moved\nANSWER: Bristol"), "q", [passage("rec", 20, "moved")], WHEN)
    assert finished.text == "Bristol"  # a reply that reached its answer costs one call


@pytest.mark.parametrize("reply", ["NOTES: none\nANSWER: I don't know.", "ANSWER: I do not know", "ANSWER:"])
def test_saying_the_memories_lack_the_answer_is_a_refusal(reply: str) -> None:
    answer = read(ScriptedLLM(reply), "What is my blood type?", [passage("a", 3, "I like tea")], WHEN)
    assert answer.refused and answer.citations == []


def test_a_low_confidence_answer_is_refused_only_when_asked_to() -> None:
    unsure = ScriptedLLM("ANSWER: Bristol", logprob=math.log(0.2))
    assert not read(unsure, "q", [], WHEN).refused
    assert read(unsure, "q", [], WHEN, refuse_below=0.5).refused


def test_confidence_averages_the_answers_tokens_only() -> None:
    # notes tokens at p=0.01 are ignored; the last 2 tokens at p=0.8 and 0.2 -> sqrt(0.16) = 0.4
    logprobs = [math.log(0.01)] * 5 + [math.log(0.8), math.log(0.2)]
    assert answer_confidence(logprobs, 2) == pytest.approx(0.4)
    assert answer_confidence([], 3) == 0.0


def test_memory_answer_reads_the_users_own_memories(memory) -> None:
    memory.add(exchange("I adopted a greyhound called Pixel"), user_id="ana", session_id="s1", timestamp="2024-01-05")
    memory.add(exchange("My dog is a poodle named Rex"), user_id="bob", session_id="s1", timestamp="2024-01-05")

    def reply(messages) -> str:
        seen = " ".join(m["content"] for m in memories_in(messages))
        assert "Rex" not in seen  # bob's memory never reaches ana's reader
        return "NOTES:\nm1: the dog is Pixel\nANSWER: Pixel" if "Pixel" in seen else "ANSWER: I don't know."

    answer = memory.answer("What is my dog's name?", user_id="ana", llm=ScriptedLLM(reply), question_date="2024-02-01")
    assert answer.text == "Pixel" and not answer.refused
    assert answer.citations == [memory.get_all(user_id="ana")[0].id]


def test_memory_answer_asks_each_packaged_reader_with_its_best_prompt(memory) -> None:
    from memagent.answer.reader import PROMPTS

    memory.add(exchange("I adopted a greyhound called Pixel"), user_id="ana", session_id="s1", timestamp="2024-01-05")
    for name, prompt in (("qwen2.5-coder-1.5b-instruct", "direct-first"), ("some-other-model", "notes")):
        reader = ScriptedLLM("Pixel", name=name)
        memory.answer("What is my dog's name?", user_id="ana", llm=reader, question_date="2024-02-01")
        instructions = PROMPTS[prompt].instructions
        where = 0 if PROMPTS[prompt].fixed_first else -1
        assert reader.calls[0][where]["content"].endswith(instructions), name
    memory.config.reader.prompt = "notes-first"  # a configured prompt wins
    reader = ScriptedLLM("Pixel", name="qwen2.5-coder-1.5b-instruct")
    memory.answer("What is my dog's name?", user_id="ana", llm=reader, question_date="2024-02-01")
    assert reader.calls[0][0]["content"].endswith(PROMPTS["notes-first"].instructions)


def test_a_model_failure_raises_and_is_never_a_refusal(memory) -> None:
    memory.add(exchange("I adopted a greyhound"), user_id="ana", session_id="s1")

    def broken(messages) -> str:
        raise LLMError("reader: the server closed the connection")

    with pytest.raises(LLMError, match="closed the connection"):
        memory.answer("What pet do I have?", user_id="ana", llm=ScriptedLLM(broken))
