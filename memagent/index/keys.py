"""Keys: the text retrieval matches a value by (LongMemEval §5, key-value design).

``value`` indexes the whole value (K = V). ``user`` indexes only the user's own words, as the
official LongMemEval retrieval does: assistant replies are long and generic, and dilute a round's
embedding.

Key expansion adds what a value implies but does not say plainly, merged into one key text (the
paper's best: one merged key beats separate keys fused by rank):
- ``facts``: the user's facts, extracted by an LLM (slow on a CPU: seconds per value);
- ``summary``: a one-sentence LLM summary;
- ``keyphrases``: the value's most surprising words under a small LM (token surprisal, as
  SirLLM selects key tokens): one forward pass, no generation, so cheap enough for a CPU.
Expansions are cached by content hash, so a value seen in many histories is processed once. The
expansion goes first in the merged key, because the embedder reads only the first 256 word pieces
of a key and a long session would push it out of sight.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from memagent._text import STOPWORDS
from memagent.index.decompose import Round
from memagent.llm.base import LLM


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


def merge_key(key: str, expansion: str) -> str:
    """One key text: the expansion, then the key it expands (see the module note on order)."""
    return f"{expansion}\n{key}" if expansion.strip() else key


class Expander(ABC):
    """Turns values into expansion texts ("" when a value has nothing to add)."""

    name: str

    @abstractmethod
    def expand(self, values: Sequence[str]) -> list[str]: ...


# --- LLM facts and summaries ------------------------------------------------------------------

FACTS_SYSTEM = (
    "You extract facts about the user from a conversation. Keep names, places and dates as written. "
    "Reply with a JSON list of strings only."
)
# Our own examples: they show the shape (short, self-contained, about the user, dates kept) and an
# empty list for small talk, so the model does not invent facts to fill the list.
FACTS_EXAMPLES: list[tuple[str, list[str]]] = [
    (
        "user: We adopted a rescue greyhound last week, she's called Pixel.\n"
        "assistant: Congratulations! Greyhounds are gentle dogs.",
        ["The user adopted a rescue greyhound named Pixel.", "The user got the dog a week before this conversation."],
    ),
    (
        "user: Can you give me a recipe for a quick dinner? I'm vegetarian and my husband hates peppers.\n"
        "assistant: Try a chickpea curry without peppers.",
        ["The user is vegetarian.", "The user's husband dislikes peppers."],
    ),
    ("user: What's the capital of Australia?\nassistant: Canberra.", []),
]
SUMMARY_SYSTEM = "You summarise a conversation in one sentence about the user. Reply with the sentence only."
_EXAMPLE_FACTS = {fact for _, facts in FACTS_EXAMPLES for fact in facts}


class Facts(BaseModel):
    """What a fact extraction must return: a short list of short, non-empty statements."""

    facts: list[str] = Field(max_length=12)

    @field_validator("facts")
    @classmethod
    def _short_and_non_empty(cls, facts: list[str]) -> list[str]:
        cleaned = [" ".join(f.split()) for f in facts]
        if any(not f or len(f) > 300 for f in cleaned):
            raise ValueError("each fact must be a non-empty string of at most 300 characters")
        # small models loop ("The user ... The user ..."): a repeated fact adds nothing
        first: dict[str, str] = {}
        for fact in cleaned:
            first.setdefault(fact.lower(), fact)
        return list(first.values())


def parse_facts(reply: str) -> list[str]:
    """The facts in an extraction reply; raises ``ValueError`` naming what is wrong with it.

    Small models wrap JSON in prose or code fences, so the first JSON list in the reply is taken.
    """
    match = re.search(r"\[.*\]", reply, re.S)
    opened = reply.find("[")
    if match is None and opened >= 0:  # cut off by max_new_tokens: keep the facts that were finished
        finished = re.findall(r'"(?:[^"\\]|\\.)*"(?=\s*,)', reply[opened:])
        text = "[" + ",".join(finished) + "]"
    elif match is None:
        raise ValueError(f"facts: no JSON list in the reply {reply[:80]!r}")
    else:
        text = match.group(0)
    try:
        return Facts(facts=json.loads(text)).facts
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"facts: {exc}") from None


def facts_messages(value: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": FACTS_SYSTEM}]
    for example, facts in FACTS_EXAMPLES:
        messages += [{"role": "user", "content": example}, {"role": "assistant", "content": json.dumps(facts)}]
    return messages + [{"role": "user", "content": value}]


def prompt_version(kind: str) -> str:
    """A short hash of an expansion kind's prompt ("" without one): part of every cache key for its
    output, so a changed prompt is never served the old prompt's expansions."""
    prompt = {"facts": [FACTS_SYSTEM, FACTS_EXAMPLES], "summary": [SUMMARY_SYSTEM]}.get(kind)
    return hashlib.sha256(json.dumps(prompt).encode()).hexdigest()[:8] if prompt else ""


class LLMFacts(Expander):
    """Facts about the user, one LLM call per value; a reply that fails validation adds nothing."""

    def __init__(self, llm: LLM, max_new_tokens: int = 96) -> None:
        self.llm, self.max_new_tokens = llm, max_new_tokens
        self.name = f"facts:{llm.name}:{prompt_version('facts')}"
        self.rejected = 0  # replies that failed validation: reported by benchmarks

    def expand(self, values: Sequence[str]) -> list[str]:
        out = []
        for value in values:
            reply = self.llm.generate(facts_messages(value), max_new_tokens=self.max_new_tokens).text
            try:
                facts = parse_facts(reply)
            except ValueError:
                self.rejected += 1
                facts = []
            # a small model sometimes copies the few-shot examples' facts: they are never about this value
            out.append(" ".join(f for f in facts if f not in _EXAMPLE_FACTS))
        return out


class LLMSummary(Expander):
    def __init__(self, llm: LLM, max_new_tokens: int = 60) -> None:
        self.llm, self.max_new_tokens = llm, max_new_tokens
        self.name = f"summary:{llm.name}:{prompt_version('summary')}"

    def expand(self, values: Sequence[str]) -> list[str]:
        return [
            self.llm.generate(
                [{"role": "system", "content": SUMMARY_SYSTEM}, {"role": "user", "content": value}],
                max_new_tokens=self.max_new_tokens,
            ).text.strip()
            for value in values
        ]


# --- cheap keyphrases: token surprisal --------------------------------------------------------

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")
_ROLE_PREFIX = re.compile(r"^(user|assistant):", re.M)


def surprising_words(pieces: Sequence[tuple[str, float]], n: int) -> list[str]:
    """The ``n`` content words with the highest surprisal (sum of -log p over their tokens).

    ``pieces`` are a text's tokens with their log-probabilities, in order; their concatenation is
    the text. A word's surprisal sums its tokens, so rare names split into many tokens count fully.
    Stopwords and role labels never count; each word counts once, at its most surprising.
    """
    text = "".join(p for p, _ in pieces)
    cost = [0.0] * len(text)  # surprisal charged to the first character of each token
    position = 0
    for piece, logprob in pieces:
        if piece:
            cost[position] = -logprob
        position += len(piece)
    roles = {m.start() for m in _ROLE_PREFIX.finditer(text)}
    best: dict[str, float] = {}
    for match in _WORD.finditer(text):
        word = match.group(0)
        if match.start() in roles or word.lower() in STOPWORDS or len(word) < 3:
            continue
        # tokens often start with the space before a word: charge it to the word
        start = match.start() - 1 if match.start() > 0 and text[match.start() - 1] == " " else match.start()
        score = sum(cost[start : match.end()])
        if score > best.get(word.lower(), -1.0):
            best[word.lower()] = score
    return sorted(best, key=lambda w: -best[w])[:n]


class Keyphrases(Expander):
    """The value's most surprising words under a small LM: one forward pass per value."""

    def __init__(self, llm: LLM, n: int = 12, max_chars: int = 2000) -> None:
        # the opening of a long value is where the user says what it is about; the cap bounds the
        # cost of a forward pass on a CPU (~2 s for 2,000 characters with SmolLM2-135M on 2 cores)
        self.llm, self.n, self.max_chars = llm, n, max_chars
        self.name = f"keyphrases:{llm.name}:{n}:{max_chars}"

    def expand(self, values: Sequence[str]) -> list[str]:
        return [", ".join(surprising_words(self.llm.text_logprobs(v[: self.max_chars]), self.n)) for v in values]


def make_expander(kind: Literal["keyphrases", "facts", "summary"], llm: LLM, keyphrases: int = 12) -> Expander:
    """The expander of ``kind`` on ``llm`` (see ``ExpansionConfig``)."""
    if kind == "keyphrases":
        return Keyphrases(llm, keyphrases)
    return LLMFacts(llm) if kind == "facts" else LLMSummary(llm)


# --- cache ------------------------------------------------------------------------------------


class CachedExpander(Expander):
    """Wraps an expander with a sqlite cache keyed by sha256(expander name, value)."""

    def __init__(self, inner: Expander, path: Path) -> None:
        self.inner, self.name = inner, inner.name
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS expansions (hash TEXT PRIMARY KEY, text TEXT NOT NULL)")
        self.computed = 0  # values the inner expander processed (cache misses)

    def expand(self, values: Sequence[str]) -> list[str]:
        hashes = [hashlib.sha256(f"{self.name}\0{v}".encode()).hexdigest() for v in values]
        with self._lock:
            found = {
                h: t
                for h in set(hashes)
                for (t,) in self._db.execute("SELECT text FROM expansions WHERE hash = ?", (h,))
            }
        missing = list(dict.fromkeys(h for h in hashes if h not in found))
        if missing:
            value_of = dict(zip(hashes, values))
            fresh = self.inner.expand([value_of[h] for h in missing])
            self.computed += len(missing)
            with self._lock, self._db:
                self._db.executemany("INSERT OR REPLACE INTO expansions VALUES (?, ?)", zip(missing, fresh))
            found.update(zip(missing, fresh))
        return [found[h] for h in hashes]
