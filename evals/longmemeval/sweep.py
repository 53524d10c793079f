"""Offline sweep of ranking designs over a runner's cached store (issue 18).

The runner (``memagent eval``) scores a design only once the library implements it. This reads the
same stored rounds, keys, embeddings and BM25 (memagent's own ``BM25Index``) from a runner cache and
re-ranks them in numpy, so a variant scores in seconds: enough to find where the ceiling is before
building anything. ``library`` re-implements the default read path (dense, BM25, session votes, RRF,
time-aware) and gives the runner's official figures (LoCoMo dev6: 0.717 session, 0.558 turn
recall_all@5); evidence recall here counts chars/4, the runner the reader's tokens.

    python -m memagent_evals.longmemeval.sweep --benchmark locomo --data ../shared/data/locomo/locomo_dev6.json \
        --cache /tmp/evalcache_locomo [--embedder all-mpnet-base-v2 --embedder-cache /tmp/evalcache_locomo_mpnet]

Scores: official recall_all@5 (round rankings at session level by widening k, as the runner),
turn-level recall_all@5, and evidence recall within 512/1,024/2,048 tokens counted as chars/4.
The store must have been filled by a runner run on the same data (``--retriever memagent``).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memagent import MemoryConfig
from memagent._time import parse_timestamp, to_epoch
from memagent.embedding import Embedder, embedder_from_config
from memagent.retrieve.dense import without_common_names
from memagent.retrieve.lexical import BM25Index
from memagent.retrieve.rerank import rerank
from memagent.retrieve.temporal import read_time

from .metrics import score_ranking
from .retrieval import RETRIEVERS, HaystackIndex, build_corpus
from .run import has_user_evidence

BUDGETS = (512, 1024, 2048)


@dataclass
class Haystack:
    """One user's rounds as the store holds them, sorted by session and position."""

    values: list[str]
    session_of: np.ndarray  # session number of each round
    times: np.ndarray  # epoch seconds
    vectors: np.ndarray  # unit key embeddings
    bm25: BM25Index
    sessions: int


@dataclass
class Question:
    qtype: str
    text: str
    haystack: Haystack
    vector: np.ndarray  # of the question as the library embeds it: without the store's common names
    raw_vector: np.ndarray  # of the question as asked
    corpus_ids: list[str]
    positions: list[list[int]]  # corpus positions of each round
    asked: float
    window: tuple[float, float] | None  # the time range the question names (widened as the library does), if any
    cross: dict[int, float] | None = None  # cross-encoder logits of scored rounds (``--cross-encoder``)


def prepare(items: Sequence[Any], cache: Path, embedder: Embedder) -> list[Question]:
    """Every scored question with its haystack, read from the runner's cached store."""
    index = HaystackIndex("memagent", RETRIEVERS["memagent"], cache, embedder)
    memory = index.memory
    haystacks: dict[str, tuple[Haystack, list[tuple[str, str]]]] = {}
    questions = []
    for item in items:
        if item.is_abstention or not has_user_evidence(item):
            continue
        user = index.ensure_indexed(item)  # cached: nothing is embedded again
        if user not in haystacks:
            records = sorted(memory.get_all(user_id=user), key=lambda r: (r.session_id, r.round_index))
            names = sorted({r.session_id for r in records})
            bm25 = BM25Index()  # rows named by position
            bm25.add([str(n) for n in range(len(records))], [r.key for r in records], [r.session_id for r in records])
            haystack = Haystack(
                [r.value for r in records], np.array([names.index(r.session_id) for r in records]),
                np.array([to_epoch(r.timestamp) for r in records]),
                memory.embedder.embed_documents([r.key for r in records]), bm25, len(names))
            haystacks[user] = (haystack, [(r.session_id, r.value) for r in records])
        haystack, keys = haystacks[user]
        corpus = build_corpus(item, "round")
        asked = parse_timestamp(item.question_date)
        reading = read_time(item.question, asked, None)
        window = None
        if reading.range is not None:
            widened = reading.range.widened(memory.config.retrieval.time_window_days)
            window = (to_epoch(widened.start), to_epoch(widened.end))
        dense_query = without_common_names(item.question, haystack.bm25, memory.config.retrieval.common_names)
        vector, raw = memory.embedder.embed_queries([dense_query, item.question])
        questions.append(Question(
            item.question_type, item.question, haystack, vector, raw,
            corpus.ids, [corpus.indices_of_record.get(key, []) for key in keys], to_epoch(asked), window))
    return questions


# --- signals ---------------------------------------------------------------------------------------


@dataclass
class Signals:
    visible: np.ndarray  # rounds dated no later than the question
    dense: np.ndarray  # cosine per round
    lexical: np.ndarray  # BM25 per round (0: no shared term)
    session_bm25: np.ndarray  # BM25 per session, each as one document
    inside: np.ndarray  # rounds dated in the range the question names


def signals(q: Question, common_names: bool = True) -> Signals:
    """``common_names``: the dense query without the store's common names, as the library does."""
    h = q.haystack
    lexical = np.zeros(len(h.values))
    for row, score in h.bm25.search(q.text, len(h.values)):
        lexical[int(row)] = score
    per_session = np.zeros(h.sessions)
    names = sorted(set(h.bm25.groups))
    for name, score in h.bm25.search_groups(q.text, h.sessions):
        per_session[names.index(name)] = score
    inside = np.zeros(len(h.values), dtype=bool)
    if q.window is not None:
        inside = (h.times >= q.window[0]) & (h.times < q.window[1])
    vector = q.vector if common_names else q.raw_vector
    return Signals(h.times <= q.asked + 1e-6, h.vectors @ vector, lexical, per_session, inside)


def best_first(scores: np.ndarray, allowed: np.ndarray, depth: int, positive: bool = False) -> list[int]:
    rows = np.flatnonzero(allowed & (scores > 0)) if positive else np.flatnonzero(allowed)
    return [int(r) for r in rows[np.argsort(-scores[rows], kind="stable")][:depth]]


def ranks(order: Sequence[int]) -> dict[int, int]:
    return {item: n for n, item in enumerate(order, 1)}


def rrf(rankings: dict[str, dict[int, int]], weights: dict[str, float], k: float) -> dict[int, float]:
    fused: dict[int, float] = defaultdict(float)
    for name, ranked in rankings.items():
        for item, rank in ranked.items():
            fused[item] += weights.get(name, 1.0) / (k + rank)
    return fused


def rounds_of_sessions(h: Haystack, sessions: Sequence[int], visible: np.ndarray) -> dict[int, int]:
    """Every visible round at its session's rank."""
    return {int(r): rank for rank, s in enumerate(sessions, 1) for r in np.flatnonzero((h.session_of == s) & visible)}


def time_first(fused: dict[int, float], s: Signals) -> list[int]:
    """Fused order, rounds inside the named time range first, then the unscored visible rounds."""
    order = sorted(fused, key=lambda r: -fused[r])
    scored = set(order)
    rest = [int(r) for r in np.flatnonzero(s.visible) if int(r) not in scored]
    return [r for r in order if s.inside[r]] + [r for r in order if not s.inside[r]] + rest


# --- designs: each maps a question to the rounds in reader order ------------------------------------


def library(q: Question, *, round_weight: float = 0.5, k: float = 20, depth: int | None = None,
            common_names: bool = True) -> list[int]:
    """memagent's default read path: dense and BM25 over rounds, BM25 over sessions, each round ranking's
    sessions by best round; a round's own ranks weigh ``round_weight``; then time-aware. ``depth``: how
    deep each ranking goes, all rounds by default, as in the runner, which asks for the whole corpus
    (``search(k=len(corpus))``, so ``candidates`` = 50 never binds there; at depth 50 LoCoMo's figure
    is 1.4 points lower)."""
    h, s = q.haystack, signals(q, common_names)
    depth = len(h.values) if depth is None else depth
    dense, lexical = best_first(s.dense, s.visible, depth), best_first(s.lexical, s.visible, depth, positive=True)
    sessions = [int(g) for g in np.argsort(-s.session_bm25, kind="stable") if s.session_bm25[g] > 0]
    rankings = {"dense": ranks(dense), "lexical": ranks(lexical), "session": rounds_of_sessions(h, sessions, s.visible)}
    for name, order in (("dense", dense), ("lexical", lexical)):
        rankings[f"{name}@session"] = rounds_of_sessions(h, list(dict.fromkeys(int(h.session_of[r]) for r in order)),
                                                         s.visible)
    return time_first(rrf(rankings, {"dense": round_weight, "lexical": round_weight}, k), s)


def with_next_round(q: Question, **options: Any) -> list[int]:
    """``library``, each hit followed by the round after it in its session (the reply to its reply)."""
    h, out, seen = q.haystack, [], set()
    for r in library(q, **options):
        for row in (r, r + 1):
            if row < len(h.values) and h.session_of[row] == h.session_of[r] and row not in seen:
                seen.add(row)
                out.append(row)
    return out


def fused_sessions(q: Question, *, k: float = 20, rocchio: float = 0.0,
                   use: Sequence[str] = ("bm25", "dense", "lexical")) -> list[int]:
    """Sessions ranked by RRF of BM25 over sessions and each session's best round by dense and by BM25
    (the rankings named in ``use``); ``rocchio`` > 0 adds a second dense ranking from the query moved
    toward the first pass's top rounds."""
    h, s = q.haystack, signals(q)

    def by_best(scores: np.ndarray) -> list[int]:
        best = np.full(h.sessions, -np.inf)
        np.maximum.at(best, h.session_of[s.visible], scores[s.visible])
        return [int(g) for g in np.argsort(-best, kind="stable") if np.isfinite(best[g])]

    shown = {int(g) for g in h.session_of[s.visible]}
    rankings = {"bm25": ranks([int(g) for g in np.argsort(-s.session_bm25, kind="stable")
                               if s.session_bm25[g] > 0 and int(g) in shown]),
                "dense": ranks(by_best(s.dense)), "lexical": ranks(by_best(s.lexical))}
    rankings = {name: ranked for name, ranked in rankings.items() if name in use}
    if rocchio > 0:
        first = rrf({"d": ranks(best_first(s.dense, s.visible, 50)),
                     "l": ranks(best_first(s.lexical, s.visible, 50, positive=True))}, {}, 20)
        top = sorted(first, key=lambda r: -first[r])[:10]
        moved = q.vector + rocchio * h.vectors[top].mean(axis=0)
        rankings["dense2"] = ranks(by_best(h.vectors @ (moved / np.linalg.norm(moved))))
    fused = rrf(rankings, {}, k)
    named = {int(g) for g in h.session_of[s.inside]}
    return sorted(fused, key=lambda g: (g not in named, -fused[g]))


def own_scores(q: Question, s: Signals) -> dict[int, float]:
    """RRF of the dense and BM25 round rankings alone: how rounds rank inside their session."""
    n = len(q.haystack.values)
    return rrf({"d": ranks(best_first(s.dense, s.visible, n)),
                "l": ranks(best_first(s.lexical, s.visible, n, positive=True))}, {}, 20)


def session_blocks(q: Question, *, per_session: int | None = None) -> list[int]:
    """Sessions by ``fused_sessions``; within each, rounds by RRF of dense and BM25. ``per_session``
    rounds of every session first (diversity), the rest after; None: whole sessions in turn."""
    h, s = q.haystack, signals(q)
    own = own_scores(q, s)
    first: list[int] = []
    rest: list[int] = []
    for g in fused_sessions(q):
        rows = sorted((int(r) for r in np.flatnonzero((h.session_of == g) & s.visible)), key=lambda r: -own.get(r, 0))
        cut = len(rows) if per_session is None else per_session
        first += rows[:cut]
        rest += rows[cut:]
    return first + sorted(rest, key=lambda r: -own.get(r, 0))


def session_head(q: Question, *, n: int = 5, **options: Any) -> list[int]:
    """The default's order with a head of ``n`` rounds from ``n`` sessions: the best round (by the
    default) of each of ``fused_sessions``' first ``n``, in that order."""
    h, order = q.haystack, library(q, **options)
    head: list[int] = []
    for g in fused_sessions(q)[:n]:
        best = next((r for r in order if h.session_of[r] == g), None)
        if best is not None:
            head.append(best)
    chosen = set(head)
    return head + [r for r in order if r not in chosen]


def cross_encoded(q: Question, *, depth: int = 30, head_sessions: int = 3) -> list[int]:
    """The library's ``retrieval.rerank``: the default's top ``depth`` reordered by ``memagent.retrieve.rerank``
    from the cross-encoder's logits (``head_sessions`` leading sessions, as the library on short rounds)."""
    assert q.cross is not None
    order = library(q)
    head = order[:depth]
    reranked = rerank([str(r) for r in head], [str(q.haystack.session_of[r]) for r in head],
                      [q.cross[r] for r in head], head_sessions=head_sessions, k=20)
    return [int(r) for r in reranked] + order[depth:]


def cross_encoded_pool(q: Question) -> list[int]:
    """The cross-encoder over every round of the first 10 fused sessions and the default's top 50 (the
    pool ``score_cross_encoder`` journals for the first questions), fused with the default's order."""
    assert q.cross is not None
    order = library(q)
    by_score = sorted(q.cross, key=lambda r: -q.cross[r])  # type: ignore[index]
    fused = rrf({"default": ranks(order), "cross": ranks(by_score)}, {}, 20)
    return sorted(fused, key=lambda r: -fused[r])


def cross_encoded_sessions(q: Question) -> list[int]:
    """Sessions as units: ``fused_sessions`` fused with the sessions ranked by their best-scored round."""
    assert q.cross is not None
    best: dict[int, float] = {}
    for r, score in q.cross.items():
        g = int(q.haystack.session_of[r])
        best[g] = max(best.get(g, -np.inf), score)
    fused = rrf({"fused": ranks(fused_sessions(q)), "cross": ranks(sorted(best, key=lambda g: -best[g]))}, {}, 20)
    return sorted(fused, key=lambda g: -fused[g])


POOL_SESSIONS = 10  # the pool: every round of this many first fused sessions, and the default's top 50


def score_cross_encoder(questions: Sequence[Question], journal: Path, pool_questions: int, model: str) -> None:
    """Set each question's ``cross``: the cross-encoder's logits for the default's top 50 rounds, and for the
    first ``pool_questions`` every round of the first ``POOL_SESSIONS`` fused sessions too. Journalled to
    ``journal`` one question a line as scored (a rerun resumes; ~1.5 s a question for the top 50 on 2
    idle cores, ~4x that with the pool)."""
    from tqdm.auto import tqdm

    from memagent.retrieve.rerank import CrossEncoder

    done: dict[int, dict[int, float]] = {}
    if journal.exists():
        for line in journal.read_text().splitlines():
            entry = json.loads(line)
            done[entry["qi"]] = dict(zip(entry["rows"], entry["scores"], strict=True))
    scorer = None
    journal.parent.mkdir(parents=True, exist_ok=True)
    with journal.open("a") as out:
        for qi, q in enumerate(tqdm(questions, desc="cross-encoder", unit="q")):
            if qi not in done:
                scorer = scorer or CrossEncoder(model)
                h, s = q.haystack, signals(q)
                pool = set(library(q)[:50])
                for g in fused_sessions(q)[:POOL_SESSIONS] if qi < pool_questions else []:
                    pool |= {int(r) for r in np.flatnonzero((h.session_of == g) & s.visible)}
                rows = sorted(pool)
                scores = scorer.scores(q.text, [h.values[r] for r in rows])
                done[qi] = dict(zip(rows, (round(float(x), 4) for x in scores), strict=True))
                out.write(json.dumps({"qi": qi, "rows": rows, "scores": list(done[qi].values())}) + "\n")
                out.flush()
            q.cross = done[qi]


def has_pool(q: Question) -> bool:
    return q.cross is not None and len(q.cross) > 50


CROSS_DESIGNS: dict[str, tuple[str, Callable[[Question], list[int]]]] = {
    f"cross-encoder, the default's top {depth}, {name}": ("rounds", lambda q, d=depth, n=heads: cross_encoded(
        q, depth=d, head_sessions=n))
    for depth in (20, 30, 50) for heads, name in (
        (0, "fused with the default (the library on long rounds)"),
        (3, "3 leading sessions (the library on short rounds)"))
}
POOL_DESIGNS: dict[str, tuple[str, Callable[[Question], list[int]]]] = {
    "library default": ("rounds", library),
    "sessions, BM25 alone (bm25-session + time-aware)": ("sessions", lambda q: fused_sessions(q, use=("bm25",))),
    "sessions (BM25 + best round dense/BM25, RRF)": ("sessions", fused_sessions),
    "cross-encoder, the default's top 30, 3 leading sessions (the library on short rounds)": ("rounds", cross_encoded),
    f"cross-encoder over the first {POOL_SESSIONS} fused sessions' rounds, fused with the default": (
        "rounds", cross_encoded_pool),
    "sessions as units: fused + best round by the cross-encoder": ("sessions", cross_encoded_sessions),
}


# --- scoring ---------------------------------------------------------------------------------------


def evidence_rounds(q: Question) -> set[int]:
    """The rounds holding an evidence turn (the official rule: its id contains 'answer')."""
    return {r for r, p in enumerate(q.positions) if any("answer" in q.corpus_ids[i] for i in p)}


def gold_sessions(q: Question) -> set[int]:
    return {int(q.haystack.session_of[r]) for r in evidence_rounds(q)}


def score_rounds(q: Question, order: Sequence[int]) -> dict[str, float]:
    ranking = list(dict.fromkeys(p for r in order for p in q.positions[r]))
    ranked = set(ranking)
    ranking += [i for i in range(len(q.corpus_ids)) if i not in ranked]
    metrics = score_ranking(ranking, q.corpus_ids, "turn")
    gold = {i for i, c in enumerate(q.corpus_ids) if "answer" in c}
    scores = {"R_all@5": metrics["session"]["recall_all@5"], "turn R_all@5": metrics["turn"]["recall_all@5"]}
    scores.update(_within_budget(q, [(q.haystack.values[r], q.positions[r]) for r in order], gold))
    return scores


def score_sessions(q: Question, order: Sequence[int]) -> dict[str, float]:
    """A session ranking as the runner's session retrievers are scored: whole sessions as units."""
    h = q.haystack
    units = [("\n".join(h.values[r] for r in np.flatnonzero(h.session_of == g)),
              [i for r in np.flatnonzero(h.session_of == g) for i in q.positions[r]]) for g in order]
    gold = {i for i, c in enumerate(q.corpus_ids) if "answer" in c}
    return {"R_all@5": float(gold_sessions(q) <= set(order[:5])), "turn R_all@5": float("nan"),
            **_within_budget(q, units, gold)}


def _within_budget(q: Question, units: Sequence[tuple[str, Sequence[int]]], gold: set[int]) -> dict[str, float]:
    missing, used = set(gold), 0
    for text, positions in units:
        used += len(text) / 4
        missing -= set(positions)
        if not missing:
            break
    return {f"@{b}": float(not missing and used <= b) for b in BUDGETS}


DESIGNS: dict[str, tuple[str, Callable[[Question], list[int]]]] = {
    "library default (round weight 0.5, k 20, common names out of the dense query)": ("rounds", library),
    "the default before: names kept in the dense query": ("rounds", lambda q: library(q, common_names=False)),
    "round weight 0.25, k 10": ("rounds", lambda q: library(q, round_weight=0.25, k=10)),
    "round weight 0.1, k 10": ("rounds", lambda q: library(q, round_weight=0.1, k=10)),
    "default + next round": ("rounds", with_next_round),
    "sessions, BM25 alone (bm25-session + time-aware)": ("sessions", lambda q: fused_sessions(q, use=("bm25",))),
    "sessions, best round by dense alone": ("sessions", lambda q: fused_sessions(q, use=("dense",))),
    "sessions (BM25 + best round dense/BM25, RRF)": ("sessions", fused_sessions),
    "sessions, + Rocchio dense PRF 0.6": ("sessions", lambda q: fused_sessions(q, rocchio=0.6)),
    "session head: the best round of each of the first 5 fused sessions, then the default":
        ("rounds", session_head),
    "session head of 3": ("rounds", lambda q: session_head(q, n=3)),
    "session blocks (whole sessions in turn)": ("rounds", session_blocks),
    "session blocks, best 2 rounds of each first": ("rounds", lambda q: session_blocks(q, per_session=2)),
}


def best_in_session(questions: Sequence[Question]) -> str:
    """How often an evidence session's evidence round is its best round, by dense, BM25 and their RRF."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for q in questions:
        h, s = q.haystack, signals(q)
        scorers = {"dense": s.dense, "BM25": s.lexical, "RRF": own_scores(q, s)}
        evidence = evidence_rounds(q)
        for g in {int(h.session_of[r]) for r in evidence}:
            rows = [int(r) for r in np.flatnonzero((h.session_of == g) & s.visible)]
            if has_pool(q) and all(r in q.cross for r in rows):  # type: ignore[operator]
                hits["cross-encoder"].append(max(rows, key=lambda r: (q.cross[r], -r)) in evidence)  # type: ignore[index]
            for name, scores in scorers.items():
                score = scores.get if isinstance(scores, dict) else scores.__getitem__
                best = max(rows, key=lambda r: (score(r) or 0.0, -r))
                hits[name].append(best in evidence)
    return "evidence round is its session's best: " + ", ".join(
        f"{name} {np.mean(v):.3f} (of {len(v)})" for name, v in hits.items()) + " evidence sessions"


def sweep(questions: Sequence[Question], designs: dict[str, tuple[str, Callable[[Question], list[int]]]]) -> str:
    columns = ["R_all@5", "multi-hop R_all@5", "turn R_all@5", "@512", "@1024", "@2048", "multi-hop @1024",
               "multi-hop @2048"]
    lines = ["| design | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, (unit, design) in designs.items():
        per: dict[str, list[float]] = defaultdict(list)
        for q in questions:
            scores = (score_rounds if unit == "rounds" else score_sessions)(q, design(q))
            for metric, value in scores.items():
                per[metric].append(value)
                if q.qtype == "multi-hop":
                    per[f"multi-hop {metric}"].append(value)
        cells = [np.nanmean(per[c]) if per[c] and not np.all(np.isnan(per[c])) else float("nan") for c in columns]
        lines.append(f"| {name} | " + " | ".join("-" if np.isnan(v) else f"{v:.3f}" for v in cells) + " |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from ..cli import load_benchmark

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", choices=("longmemeval", "locomo"), required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True, help="a runner cache holding the default's store")
    parser.add_argument("--embedder", default=None, help="embedder.model the cache's store was built with")
    parser.add_argument("--out", type=Path, default=None, help="write the table here too")
    parser.add_argument("--cross-encoder", type=Path, default=None, metavar="JOURNAL",
                        help="also the cross-encoder designs (issue 18), its logits journalled here (resumes)")
    parser.add_argument("--pool-questions", type=int, default=0,
                        help=f"with --cross-encoder: for this many first questions, score every round of the first "
                        f"{POOL_SESSIONS} fused sessions too, and add a table of the designs that need them")
    parser.add_argument("--rerank-model", default="ms-marco-minilm-l12-v2")
    args = parser.parse_args(argv)
    items, _split = load_benchmark(args.benchmark, args.data)
    config = MemoryConfig.model_validate({"embedder": {"cache_path": args.cache / "embeddings.sqlite",
                                                       **({"model": args.embedder} if args.embedder else {})}})
    questions = prepare(items, args.cache, embedder_from_config(config.embedder))
    print(f"{len(questions)} questions", flush=True)
    designs = dict(DESIGNS)
    if args.cross_encoder:
        score_cross_encoder(questions, args.cross_encoder, args.pool_questions, args.rerank_model)
        designs.update(CROSS_DESIGNS)
    within = best_in_session(questions)
    print(within, flush=True)
    table = within + "\n\n" + sweep(questions, designs)
    pooled = [q for q in questions if has_pool(q)]
    if pooled:
        table += f"\n\nThe first {len(pooled)} questions, where the pool was scored:\n\n" + sweep(pooled, POOL_DESIGNS)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
