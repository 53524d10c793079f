"""Index a question's haystack into memagent and rank the official corpus with it.

Each haystack is stored as its own user (id = hash of its content), so questions that share a
haystack (LoCoMo) index it once, and a second run finds everything already stored. Records map
back to the official corpus ids: a session record to its session id, a round to the id of the
user turn that opens it (``{session}_{turn number}``), with the official 'noans' relabelling of
non-evidence parts of evidence sessions.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from memagent import Embedder, Memory, MemoryConfig, MemoryRecord
from memagent.index.decompose import split_rounds
from memagent.index.keys import prompt_version
from memagent.schema import Message

from .budget import Unit
from .load import Item


def _baseline(granularity: str, key: str, retriever: str) -> dict[str, Any]:
    """A baseline pins every design switch off, so a change of default never changes a baseline."""
    return {"granularity": granularity, "key": key, "expansion": {"kind": "none"},
            "retrieval": {"retrievers": [retriever], "time_aware": False}}


# Retrievers compared side by side. Each is a MemoryConfig override; "memagent" is the library default.
RETRIEVERS: dict[str, dict[str, Any]] = {
    "bm25-session": _baseline("session", "user", "lexical"),
    "dense-session-kv": _baseline("session", "value", "dense"),
    "dense-round": _baseline("round", "value", "dense"),
    "memagent": {},
    # SirLLM's salience as a prior (issue 15): the found records ranked by salience, fused at half weight
    "memagent+salience": {"retrieval": {"salience_weight": 0.5}},
    # a cross-encoder (ms-marco-MiniLM-L-12-v2, int8 ONNX) reorders the fused top 30 (issue 18)
    "memagent+rerank": {"retrieval": {"rerank": "cross-encoder"}},
}


# What a CPU can afford: facts from the small Qwen (the 1.5B reader takes ~3x longer per value),
# keyphrases from SmolLM2-135M's token surprisal.
EXPANSION_MODELS = {"none": None, "keyphrases": "smollm2-135m-instruct", "facts": "qwen2.5-coder-0.5b-instruct"}


def ablation_grid() -> dict[str, dict[str, Any]]:
    """LongMemEval §5's designs, one switch at a time: value unit x key expansion x time-aware expansion.

    Names read ``unit/key[/time]``: ``round+ctx`` is rounds with session votes fused in (BM25 over whole
    sessions, and each round ranking's sessions by their best round);
    ``session-bm25`` ranks sessions by BM25 alone (the paper's baseline, plus our switches).
    """
    units = {
        "round": {"granularity": "round", "retrievers": ["dense", "lexical"]},
        "round+ctx": {"granularity": "round", "retrievers": ["dense", "lexical", "session"]},
        "session": {"granularity": "session", "retrievers": ["dense", "lexical"]},
        "session-bm25": {"granularity": "session", "retrievers": ["lexical"]},
    }
    grid = {}
    for unit, spec in units.items():
        for expansion in ("none", "keyphrases", "facts"):
            for time_aware in (False, True):
                key = "K=V" if expansion == "none" else f"K=V+{expansion}"
                grid[f"{unit}/{key}" + ("/time" if time_aware else "")] = {
                    "granularity": spec["granularity"],
                    "expansion": {"kind": expansion, "model": EXPANSION_MODELS[expansion]},
                    "retrieval": {"retrievers": spec["retrievers"], "time_aware": time_aware},
                }
    return grid


RETRIEVERS.update(ablation_grid())


@dataclass(frozen=True)
class Corpus:
    """The official retrieval corpus of one item, and where each memagent record lands in it."""

    ids: list[str]
    # (session, round value) or (session, "") for a session record -> corpus positions; a repeated
    # round is one record for several turns
    indices_of_record: dict[tuple[str, str], list[int]]
    level: str  # 'session' or 'turn'


def record_key(record: MemoryRecord, corpus: Corpus) -> tuple[str, str]:
    """Where a stored record sits in ``corpus``: by its session and value, as memagent stored it."""
    return (record.session_id, "" if corpus.level == "session" else record.value)


def haystack_user(item: Item) -> str:
    content = [item.haystack_dates, [[(t.role, t.content) for t in s] for s in item.haystack_sessions]]
    return "haystack-" + hashlib.sha256(json.dumps(content).encode()).hexdigest()[:24]


def session_key(position: int) -> str:
    return f"s{position:04d}"


def messages_of(session: list[Any]) -> list[Message]:
    """The session's user and assistant turns; blank turns (memagent refuses a blank user message)
    carry nothing to remember and are left out."""
    return [Message(role=t.role, content=t.content) for t in session if _kept(t)]


def _kept(turn: Any) -> bool:
    return turn.role in ("user", "assistant") and bool(turn.content.strip())


def build_corpus(item: Item, granularity: str) -> Corpus:
    ids: list[str] = []
    indices_of_record: dict[tuple[str, str], list[int]] = {}
    for position, (sid, session) in enumerate(zip(item.haystack_session_ids, item.haystack_sessions)):
        user_turns = [t for t in session if t.role == "user"]
        if granularity == "session":
            evidence = any(t.has_answer for t in user_turns)
            indices_of_record[(session_key(position), "")] = [len(ids)]
            ids.append(sid if "answer" not in sid or evidence else sid.replace("answer", "noans"))
            continue
        turn_id_of: dict[int, str] = {}  # index of the user turn in the session -> official id
        for n, turn in enumerate(session):
            if turn.role == "user":
                tid = f"{sid}_{n + 1}"
                turn_id_of[n] = tid if "answer" not in sid or turn.has_answer else tid.replace("answer", "noans")
        opening = [n for n, t in enumerate(session) if _kept(t)]
        cursor = 0
        for round_ in split_rounds(messages_of(session)):
            first = opening[cursor]
            cursor += len(round_.messages)
            if first in turn_id_of:  # a round opened by a reply has no user turn in the corpus
                indices_of_record.setdefault((session_key(position), round_.value), []).append(len(ids))
                ids.append(turn_id_of[first])
    return Corpus(ids, indices_of_record, "session" if granularity == "session" else "turn")


def _expansion_part(config: MemoryConfig) -> dict[str, Any]:
    """What of the expansion settings changes stored keys (nothing when expansion is off)."""
    if config.expansion.kind == "none":
        return {}
    prompt = prompt_version(config.expansion.kind)  # a changed prompt makes new keys: a new store
    return {"expansion": config.expansion.model_dump(), **({"prompt": prompt} if prompt else {})}


class HaystackIndex:
    """One memagent store per retriever configuration, all in one cache folder."""

    def __init__(self, name: str, overrides: dict[str, Any], cache: Path, embedder: Embedder) -> None:
        config = MemoryConfig.model_validate({**overrides, "embedder": {"cache_path": cache / "embeddings.sqlite"}})
        # configurations that store the same records share a store: search-time switches need no re-index
        stored = {"granularity": config.granularity, "key": config.key, **_expansion_part(config)}
        digest = hashlib.sha256(json.dumps(stored, sort_keys=True).encode()).hexdigest()[:10]
        config = config.model_copy(update={"store": config.store.model_copy(
            update={"path": cache / "chroma", "collection": f"eval-{digest}"})})
        self.name, self.overrides = name, overrides
        self.memory = Memory(config, embedder=embedder)
        self._indexed: set[str] = set()
        self.index_seconds = 0.0  # time spent storing haystacks (embedding and key expansion included)
        self.records_indexed = 0

    def ensure_indexed(self, item: Item) -> str:
        """Store the item's haystack (a no-op when already stored); returns its user id."""
        user = haystack_user(item)
        if user not in self._indexed:  # questions sharing a haystack (LoCoMo) index it once
            started = time.perf_counter()
            sessions = list(enumerate(zip(item.haystack_dates, item.haystack_sessions)))
            # key expansion makes a first indexing take minutes: show it apart from the question bar
            for position, (date, session) in tqdm(sessions, desc=f"index {self.name}", unit="session", leave=False):
                messages = [m.model_dump() for m in messages_of(session)]
                if messages:
                    added = self.memory.add(messages, user_id=user, session_id=session_key(position), timestamp=date)
                    self.records_indexed += len(added)
            self.index_seconds += time.perf_counter() - started
            self._indexed.add(user)
        return user

    def rank(self, item: Item) -> tuple[Corpus, list[int]]:
        """Index the item's haystack and rank its whole corpus."""
        corpus, ranking, _units = self.rank_units(item)
        return corpus, ranking

    def rank_units(self, item: Item) -> tuple[Corpus, list[int], list[Unit]]:
        """``rank``, and the same full ranking as the reader gets it: the records in order, each
        with its value and the corpus positions it stands for (see budget.py)."""
        user = self.ensure_indexed(item)
        corpus = build_corpus(item, self.memory.config.granularity)
        # No question_date filter: the official retrieval ranks the whole haystack, and a few official
        # items date evidence minutes after the question. Time-aware expansion needs the date to read
        # "last week", so those configurations get it (and with it, the filter).
        asked = item.question_date if self.memory.config.retrieval.time_aware else None
        hits = self.memory.search(item.question, user_id=user, k=len(corpus.ids) + len(item.haystack_sessions),
                                  question_date=asked)
        units = [Unit(h.record.value, tuple(corpus.indices_of_record.get(record_key(h.record, corpus), [])))
                 for h in hits]
        ranking = list(dict.fromkeys(i for unit in units for i in unit.positions))
        # records no retriever scored (BM25 without a shared word) tie for last, in corpus order
        seen = set(ranking)
        unscored = [i for i in range(len(corpus.ids)) if i not in seen]
        ranking += unscored
        units += self._unscored_units(user, corpus, unscored)
        return corpus, ranking, units

    def _unscored_units(self, user: str, corpus: Corpus, unscored: list[int]) -> list[Unit]:
        """The records behind the unscored positions, in corpus order, each once."""
        if not unscored:
            return []
        key_of = {i: key for key, indices in corpus.indices_of_record.items() for i in indices}
        # a round's key is its value; a session record's value is read from the store
        values = {} if corpus.level == "turn" else {
            record_key(r, corpus): r.value for r in self.memory.get_all(user_id=user)}
        units, done = [], set()
        for i in unscored:
            key = key_of[i]
            if key not in done:
                done.add(key)
                units.append(Unit(key[1] if corpus.level == "turn" else values.get(key, ""),
                                  tuple(corpus.indices_of_record[key])))
        return units
