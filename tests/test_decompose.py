from memagent.index.decompose import decompose, split_rounds
from memagent.index.keys import build_key
from memagent.schema import Message


def msgs(*pairs: tuple[str, str]) -> list[Message]:
    return [Message(role=r, content=c) for r, c in pairs]  # type: ignore[arg-type]


def test_each_user_turn_starts_a_round_and_replies_follow_it() -> None:
    rounds = split_rounds(
        msgs(("user", "hi"), ("assistant", "hello"), ("assistant", "how can I help?"), ("user", "bye"))
    )
    assert [r.value for r in rounds] == ["user: hi\nassistant: hello\nassistant: how can I help?", "user: bye"]


def test_system_messages_are_not_remembered_and_a_leading_reply_is_its_own_round() -> None:
    rounds = split_rounds(msgs(("system", "be nice"), ("assistant", "welcome"), ("user", "thanks")))
    assert [r.value for r in rounds] == ["assistant: welcome", "user: thanks"]


def test_session_granularity_keeps_the_whole_session_as_one_value() -> None:
    session = msgs(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))
    assert len(decompose(session, "round")) == 2
    (whole,) = decompose(session, "session")
    assert whole.value == "user: a\nassistant: b\nuser: c\nassistant: d"


def test_user_key_indexes_only_the_users_words_falling_back_to_the_value() -> None:
    rounds = split_rounds(msgs(("assistant", "welcome"), ("user", "my dog is Rex"), ("assistant", "ok")))
    user_round, reply_only = rounds[::-1]
    assert build_key(user_round, "user") == "my dog is Rex"
    assert build_key(user_round, "value") == "user: my dog is Rex\nassistant: ok"
    assert build_key(reply_only, "user") == "assistant: welcome"
