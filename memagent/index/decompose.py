"""Session decomposition (LongMemEval §5): a session becomes rounds, or stays one value.

A round is one user turn and the replies that follow it. Smaller values make retrieval more
precise; the paper finds rounds the better value unit for most readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from memagent.schema import Message


@dataclass(frozen=True)
class Round:
    """A piece of a session to store as one value."""

    messages: tuple[Message, ...]

    @property
    def value(self) -> str:
        return "\n".join(f"{m.role}: {m.content}" for m in self.messages)

    @property
    def user_text(self) -> str:
        return "\n".join(m.content for m in self.messages if m.role == "user")


def split_rounds(messages: Sequence[Message]) -> list[Round]:
    """Cut at each user message; replies stay with the user turn before them.

    System messages are instructions to the assistant, not things the user said: dropped.
    Replies before the first user turn (a greeting) form a round of their own.
    """
    rounds: list[list[Message]] = []
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "user" or not rounds:
            rounds.append([])
        rounds[-1].append(message)
    return [Round(tuple(r)) for r in rounds]


def decompose(messages: Sequence[Message], granularity: Literal["round", "session"]) -> list[Round]:
    rounds = split_rounds(messages)
    if granularity == "session" and rounds:
        return [Round(tuple(m for r in rounds for m in r.messages))]
    return rounds
