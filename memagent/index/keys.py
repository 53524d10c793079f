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
