"""examples/memory_chat.py: the streamed reply both chat examples show, and the exchange it stores."""

from __future__ import annotations

import pytest
from memory_chat import NOTED, Delta, Done, Recalled, is_question, reply, split_reply

from memagent import InputError, ScriptedLLM
from memagent.answer.reader import FINISH
from tests.examples.scripted import FACT, StreamingLLM, reader_reply


def joined(events: list[object], part: str) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta) and e.part == part)


@pytest.mark.parametrize(
    ("text", "notes", "answer"),
    [
        ("", "", ""),
        ("NOT", "", ""),  # maybe the notes label: wait
        ("NOTES:\nm1: Lena lives in Porto", "m1: Lena lives in Porto", ""),
        ("NOTES:\nm1: Porto\nANS", "m1: Porto", ""),  # maybe the answer label: held back
        ("NOTES:\nm1: Porto\nANSWER: Por", "m1: Porto", "Por"),
        ("NOTES:\nANSWER: I don't know.", "", "I don't know."),
        ("ANSWER: Porto", "", "Porto"),  # no notes
        ("Porto, since 2019 ", "", "Porto, since 2019"),  # the direct prompts: all answer
    ],
)
def test_split_reply_separates_notes_from_answer_without_labels(text: str, notes: str, answer: str) -> None:
    assert split_reply(text) == (notes, answer)


def test_split_reply_only_grows_as_text_comes() -> None:
    """Shown text is never taken back: each prefix's parts are prefixes of the next one's."""
    reply_text = "NOTES:\nm1: an ANSWERS list; m2: Porto \nANSWER:  Porto, Portugal"
    views = [split_reply(reply_text[:n]) for n in range(len(reply_text) + 1)]
    for before, after in zip(views, views[1:]):
        assert after[0].startswith(before[0]) and after[1].startswith(before[1])
    assert views[-1] == ("m1: an ANSWERS list; m2: Porto", "Porto, Portugal")


@pytest.mark.parametrize("message", ["Where does my sister live?", "what's my dog called", "Tell me my plans"])
def test_questions_are_answered(message: str) -> None:
    assert is_question(message)


@pytest.mark.parametrize("message", [FACT, "I moved to Lisbon in May.", "Whatever happens, call me Ana."])
def test_statements_are_noted(message: str) -> None:
    assert not is_question(message)


def test_a_statement_is_noted_and_stored_in_its_session(make_memory) -> None:
    llm = StreamingLLM(reader_reply)
    memory = make_memory(llm=llm)
    events = list(reply(memory, FACT, user_id="ana", session_id="s1"))
    assert events == [Delta("answer", NOTED), Done(NOTED, None)]
    [record] = memory.get_all(user_id="ana")
    assert (record.session_id, record.value) == ("s1", f"user: {FACT}\nassistant: {NOTED}")
    assert llm.calls == []  # noting needs no model


def test_with_a_live_session_a_statement_gets_its_reply_and_both_are_stored(make_memory) -> None:
    from memagent.decay.chat import StreamingChat
    from memagent.decay.streaming import CachePolicy
    from tests.llm.tiny import tiny_model, tiny_tokenizer

    memory = make_memory(llm=StreamingLLM(reader_reply))
    live = StreamingChat(tiny_model().eval(), tiny_tokenizer(), CachePolicy("sirllm", budget=200), max_new_tokens=6)
    events = list(reply(memory, FACT, user_id="ana", session_id="s1", live=live))
    text = events[-1].text
    assert live.turn_count == 1 and live.cached_tokens > len(FACT)  # the statement went through the live session
    assert events == [Delta("answer", text), Done(text, None)]
    [record] = memory.get_all(user_id="ana")
    assert record.value == f"user: {FACT}\nassistant: {text}"


def test_a_question_streams_notes_and_answer_and_cites_the_memory(make_memory) -> None:
    memory = make_memory(llm=StreamingLLM(reader_reply))
    list(reply(memory, FACT, user_id="ana", session_id="s1"))
    [fact] = memory.get_all(user_id="ana")
    events = list(reply(memory, "Where does my sister live?", user_id="ana", session_id="s2"))

    assert isinstance(events[0], Recalled) and [r.id for r in events[0].memories] == [fact.id]
    assert len([e for e in events if isinstance(e, Delta)]) > 2  # streamed in pieces, not at once
    assert joined(events, "notes") == "m1: her sister Lena lives in Porto."
    assert joined(events, "answer") == "Porto"
    done = events[-1]
    assert isinstance(done, Done) and done.answer is not None
    assert (done.text, done.answer.refused, done.answer.citations) == ("Porto", False, [fact.id])
    stored = [r for r in memory.get_all(user_id="ana") if r.session_id == "s2"]
    assert [r.value for r in stored] == ["user: Where does my sister live?\nassistant: Porto"]


def test_the_streamed_answer_is_the_one_memory_answer_gives(make_memory) -> None:
    """Same search, prompt, parsing and confidence: only the delivery differs."""
    llm = StreamingLLM(reader_reply)
    memory = make_memory(llm=llm)
    list(reply(memory, FACT, user_id="ana", session_id="s1"))
    direct_llm = ScriptedLLM(reader_reply)
    direct = memory.answer("Where does my sister live?", user_id="ana", llm=direct_llm)
    streamed = list(reply(memory, "Where does my sister live?", user_id="ana", session_id="s2"))[-1]
    assert isinstance(streamed, Done) and streamed.answer == direct
    prompt, reference = llm.calls[0], direct_llm.calls[0]
    assert prompt[0] == reference[0]  # the system message
    assert prompt[1]["content"].split("Today is")[0] == reference[1]["content"].split("Today is")[0]


def test_a_question_the_memories_do_not_answer_is_refused(make_memory) -> None:
    memory = make_memory(llm=StreamingLLM(reader_reply))
    list(reply(memory, "I work from home on Fridays.", user_id="ana", session_id="s1"))
    [fridays] = memory.get_all(user_id="ana")
    done = list(reply(memory, "What is my blood type?", user_id="ana", session_id="s2"))[-1]
    assert isinstance(done, Done) and done.answer is not None
    assert (done.answer.refused, done.text) == (True, "I don't know.")
    assert done.answer.citations == [fridays.id]  # read, and found not to hold the answer


def test_notes_cut_off_are_followed_by_the_answer_as_the_reader_does(make_memory) -> None:
    long_notes = "NOTES:\nm1: " + "and her sister Lena lives in Porto " * 10
    llm = StreamingLLM([long_notes, "ANSWER: Porto"])
    memory = make_memory(llm=llm, reader={"max_new_tokens": 12})
    list(reply(memory, FACT, user_id="ana", session_id="s1"))
    events = list(reply(memory, "Where does my sister live?", user_id="ana", session_id="s2"))
    assert {"role": "user", "content": FINISH} in [call[-1] for call in llm.calls]  # asked after the notes
    assert joined(events, "answer") == "Porto"
    assert isinstance(events[-1], Done) and events[-1].text == "Porto"


def test_a_blank_message_is_refused_before_any_event(make_memory) -> None:
    memory = make_memory(llm=StreamingLLM(reader_reply))
    with pytest.raises(InputError, match="message: is empty"):
        next(reply(memory, "  ", user_id="ana", session_id="s1"))
    assert memory.get_all(user_id="ana") == []
