"""examples/terminal_chat.py: what each line typed does, on a real Memory with a scripted reader."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from terminal_chat import TerminalChat

from tests.examples.scripted import FACT, StreamingLLM, reader_reply


@pytest.fixture
def chat(make_memory) -> TerminalChat:
    memory = make_memory(llm=StreamingLLM(reader_reply))
    return TerminalChat(memory, Console(file=io.StringIO(), width=120), user_id="ana")


def said(chat: TerminalChat, line: str) -> str:
    """What the chat prints after ``line`` is typed."""
    out = chat.console.file
    start = out.tell()
    assert chat.handle(line)
    return out.getvalue()[start:]


def test_a_fact_told_is_remembered_and_a_later_session_answers_from_it(chat: TerminalChat) -> None:
    assert "Noted." in said(chat, FACT)
    first_session = chat.session_id
    said(chat, "/new")
    assert chat.session_id != first_session
    [fact] = chat.memory.get_all(user_id="ana")
    shown = said(chat, "Where does my sister live?")
    assert "assistant › Porto" in shown and "notes" in shown
    assert f"cited {fact.timestamp.astimezone():%Y-%m-%d %H:%M}  {fact.id[:8]}  {FACT}" in shown
    sessions = {r.session_id for r in chat.memory.get_all(user_id="ana")}
    assert sessions == {first_session, chat.session_id}  # each exchange stored in its own session


def test_a_refusal_is_shown_as_one(chat: TerminalChat) -> None:
    said(chat, "I work from home on Fridays.")
    shown = said(chat, "What is my blood type?")
    assert "refused I don't know. (my memories do not say)" in shown
    assert "  read " in shown and "I work from home on Fridays." in shown and "cited" not in shown
    said(chat, "/user bob")
    assert "no memory cited (0 searched)" in said(chat, "What is my blood type?")


def test_memories_lists_what_the_user_said(chat: TerminalChat) -> None:
    said(chat, FACT)
    said(chat, "I moved to Lisbon in May.")
    said(chat, "My locker code is [red]42[/red].")
    shown = said(chat, "/memories")
    assert "3 memories of ana" in shown
    assert "My locker code is [red]42[/red]." in shown  # shown as typed, not read as rich markup
    for record in chat.memory.get_all(user_id="ana"):
        assert record.id[:8] in shown
    assert FACT in shown and "I moved to Lisbon in May." in shown


def test_forget_deletes_the_memory_its_id_prefix_names(chat: TerminalChat) -> None:
    said(chat, FACT)
    said(chat, "I moved to Lisbon in May.")
    fact = next(r for r in chat.memory.get_all(user_id="ana") if "Lena" in r.value)
    assert f"Forgot {fact.id[:8]}: {FACT}" in said(chat, f"/forget {fact.id[:6]}")
    assert [r.value for r in chat.memory.get_all(user_id="ana")] == [
        "user: I moved to Lisbon in May.\nassistant: Noted. I'll remember that."
    ]


def test_forget_without_a_unique_match_deletes_nothing(chat: TerminalChat) -> None:
    for day in range(17):  # 17 ids in 16 hex digits: two of them begin alike
        said(chat, f"On day {day} I walked {day} km.")
    ids = [r.id for r in chat.memory.get_all(user_id="ana")]
    shared = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) > 1)
    many = sum(i.startswith(shared) for i in ids)
    assert f"whose id starts with '{shared}': {many} (type more of the id)" in said(chat, f"/forget {shared}")
    assert "whose id starts with 'zz': none" in said(chat, "/forget zz")
    assert "Usage: /forget <id>" in said(chat, "/forget")
    assert len(chat.memory.get_all(user_id="ana")) == 17


def test_compact_keeps_the_most_salient_memories_and_says_what_it_forgot(make_memory) -> None:
    from memagent.llm.scripted import ScriptedLLM

    memory = make_memory(llm=StreamingLLM(reader_reply), salience_llm=ScriptedLLM(""))  # salience: word length
    chat = TerminalChat(memory, Console(file=io.StringIO(), width=120), user_id="ana")
    said(chat, "My greyhound Pixel races at Wimbledon stadium")  # long words: salient to the scripted LM
    said(chat, "ok")
    shown = said(chat, "/compact 1")
    assert "Forgot 1 memories; 1 kept." in shown and "forgot" in shown and "  ok" in shown
    [kept] = chat.memory.get_all(user_id="ana")
    assert "Pixel" in kept.value
    assert "Usage: /compact" in said(chat, "/compact some")


def test_user_switches_whose_memories_are_used(chat: TerminalChat) -> None:
    said(chat, FACT)
    session = chat.session_id
    assert "Now talking with bob" in said(chat, "/user bob")
    assert (chat.user_id, chat.session_id != session) == ("bob", True)
    assert "0 memories of bob" in said(chat, "/memories")
    assert "refused" in said(chat, "Where does my sister live?")  # ana's sister is not bob's memory
    said(chat, "/user ana")
    assert "assistant › Porto" in said(chat, "Where does my sister live?")


def test_bad_input_is_reported_and_the_chat_goes_on(chat: TerminalChat) -> None:
    assert "user_id: must be a non-empty string" in said(chat, "/user   ")
    assert chat.user_id == "ana"
    assert "No command /remember" in said(chat, "/remember this")
    assert said(chat, "   ") == ""


def test_quit_ends_the_chat(chat: TerminalChat) -> None:
    assert chat.handle("/quit") is False
