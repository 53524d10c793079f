"""Keys: the text retrieval matches a value by (LongMemEval §5, key-value design).

``value`` indexes the whole value (K = V). ``user`` indexes only the user's own words, as the
official LongMemEval retrieval does: assistant replies are long and generic, and dilute a round's
embedding.
"""

from __future__ import annotations

from typing import Literal

from memagent.index.decompose import Round


def build_key(round_: Round, kind: Literal["value", "user"]) -> str:
    if kind == "user" and round_.user_text.strip():
        return round_.user_text
    return round_.value


def key_for_text(value: str, kind: Literal["value", "user"]) -> str:
    """The key of a value given as text (an update): its 'user: ' lines when only those are indexed."""
    if kind == "user":
        user_lines = [line[len("user: ") :] for line in value.splitlines() if line.startswith("user: ")]
        if user_lines:
            return "\n".join(user_lines)
    return value
