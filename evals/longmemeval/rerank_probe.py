"""Probe for issue 18: the local reader as a pointwise session reranker, judged on a stratified sample.

Sessions are ranked by ``sweep.fused_sessions`` (BM25 over sessions and each session's best round by
dense and BM25). The reader reads each of the first ``--depth`` sessions' best three rounds with the
question and says Yes or No; its score is log P(Yes) − log P(No). Only questions whose gold sessions
are all within that depth but not all in the first five ("fixable") can gain, and only those already
all in the first five ("correct") can lose, so a seeded sample of each is judged and the dev figure
is estimated per stratum (the rest score 0 with any reordering of the first ``--depth``).

With ``--pick N`` a second stage follows: in each of the first N reranked sessions the reader picks
the line that answers, which the official metric rewards (it counts an evidence session's other
rounds as one more session, so a whole-session block costs two of its five ids and a right line
one). ``--pick-by letter`` shows the session whole, its lines lettered, and ranks the lines by the
log-probability of each letter; ``--pick-by yes-no`` asks the Yes/No question of each line alone,
and, being ~20x dearer, only in sessions that hold evidence: a diagnostic of how often the reader's
line is the evidence, not a design (it reads the labels).

    python -m memagent_evals.longmemeval.rerank_probe --data ../shared/data/locomo/locomo_dev6.json \\
        --cache /tmp/evalcache_locomo --fixable 40 --correct 30 --pick 5 --pick-questions 28 --pick-by letter \\
        --out evals/results/rerank_probe_locomo_dev6

Judgements go to ``<out>/judgements.jsonl`` and picks to ``<out>/picks-<by>.jsonl`` as they are made (a
rerun resumes); the table of the official round-ranking metric for each design, per stratum and
estimated over the dev set, to ``<out>/summary.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memagent import MemoryConfig
from memagent.embedding import embedder_from_config

from . import sweep as S

PROMPT = ("Lines from a conversation:\n{passage}\n\nQuestion: {question}\n"
          "Do these lines give information needed to answer the question? Answer Yes or No.")
PICK_PROMPT = ("Lines from a conversation, each with a letter:\n{lines}\n\nQuestion: {question}\n"
               "Which line gives the information needed to answer the question? Answer with its letter only.")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # one token each in the packaged readers


def rounds_by_session(q: S.Question) -> dict[int, list[int]]:
    """Each session's visible rounds, best first by ``sweep.own_scores`` (as ``sweep.session_blocks``)."""
    h, s = q.haystack, S.signals(q)
    own = S.own_scores(q, s)
    out: dict[int, list[int]] = {}
    for r in sorted((int(r) for r in np.flatnonzero(s.visible)), key=lambda r: -own.get(r, 0)):
        out.setdefault(int(h.session_of[r]), []).append(r)
    return out


class Judge:
    """The reader's Yes-over-No log-odds for a question and a passage (one forward pass each)."""

    def __init__(self, model: str, dtype: str) -> None:
        from memagent.llm.load import load_llm

        llm = load_llm(model, backend="transformers", dtype=dtype)
        self.tokenizer, self.model = llm.tokenizer, llm.model  # type: ignore[attr-defined]
        self.yes, self.no = self.tokenizer.encode("Yes")[0], self.tokenizer.encode("No")[0]

    @torch.inference_mode()
    def _next_token(self, message: str) -> tuple[torch.Tensor, int]:
        """Log-probabilities of the reply's first token, and the prompt's length."""
        ids = self.tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                                 return_tensors="pt")
        ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
        return torch.log_softmax(self.model(input_ids=ids).logits[0, -1].float(), dim=-1), int(ids.shape[1])

    def __call__(self, question: str, passage: str) -> tuple[float, int]:
        logp, length = self._next_token(PROMPT.format(passage=passage, question=question))
        return float(logp[self.yes] - logp[self.no]), length

    def pick(self, question: str, lines: Sequence[str]) -> tuple[list[float], int]:
        """Listwise: the log-probability of each line's letter as the line that answers (one pass)."""
        letters = LETTERS[: len(lines)]
        listed = "\n".join(f"({c}) {' / '.join(line.splitlines())}" for c, line in zip(letters, lines))
        logp, length = self._next_token(PICK_PROMPT.format(lines=listed, question=question))
        # the reply may start "C" or "(C" (one token each in Qwen's vocabulary): either names line C
        return [float(torch.logaddexp(logp[self.tokenizer.encode(c)[0]], logp[self.tokenizer.encode("(" + c)[0]]))
                for c in letters], length


def reranked(row: dict[str, Any]) -> list[int]:
    """The judged sessions, the reader's most confident Yes first."""
    scores = {int(g): v for g, v in row["scores"].items()}
    return sorted(scores, key=lambda g: -scores[g])


def pick_lines(questions: Sequence[S.Question], sample: Sequence[int], judged: dict[int, dict[str, Any]],
               args: argparse.Namespace) -> dict[int, dict[str, Any]]:
    """Second stage: in each of the first ``args.pick`` reranked sessions (``yes-no``: those holding
    evidence) the reader scores every visible round (at most 52, the best by ``own_scores``) as the
    line that answers; journalled."""
    journal = args.out / f"picks-{args.pick_by}.jsonl"
    picks = {row["n"]: row for row in map(json.loads, journal.read_text().splitlines())} if journal.exists() else {}
    todo = [n for n in sample if n not in picks]
    judge = Judge(args.model, args.dtype) if todo else None
    with journal.open("a", encoding="utf-8") as sink:
        for done, n in enumerate(todo, 1):
            q, started, tokens, rounds = questions[n], time.perf_counter(), 0, rounds_by_session(questions[n])
            gold = S.gold_sessions(q)
            lines: dict[str, dict[str, float]] = {}
            for g in reranked(judged[n])[:args.pick]:
                shown = sorted(rounds.get(g, [])[:len(LETTERS)])
                texts = [q.haystack.values[r] for r in shown]
                if args.pick_by == "letter":
                    scores, used = judge.pick(q.text, texts)  # type: ignore[union-attr]
                elif g in gold:
                    each = [judge(q.text, text) for text in texts]  # type: ignore[misc]
                    scores, used = [score for score, _ in each], sum(length for _, length in each)
                else:
                    continue
                lines[str(g)], tokens = {str(r): v for r, v in zip(shown, scores)}, tokens + used
            picks[n] = {"n": n, "lines": lines, "seconds": time.perf_counter() - started, "tokens": tokens}
            sink.write(json.dumps(picks[n]) + "\n")
            sink.flush()
            print(f"{done}/{len(todo)} picked, {picks[n]['seconds']:.1f} s", flush=True)
    return picks


def line_accuracy(questions: Sequence[S.Question], picks: dict[int, dict[str, Any]], by: str,
                  judged: dict[int, dict[str, Any]]) -> str:
    """How often, in a session holding evidence, the reader's top line is an evidence round, against
    the session's best round by ``own_scores`` (the retrieval signals alone)."""
    reader = own = 0
    sessions = []
    for n, pick in picks.items():
        q = questions[n]
        evidence, gold, best = S.evidence_rounds(q), S.gold_sessions(q), rounds_by_session(q)
        for g, lines in pick["lines"].items():
            if lines and int(g) in gold:
                sessions.append(g)
                reader += int(max(lines, key=lambda r: lines[r])) in evidence
                own += best[int(g)][0] in evidence
    text = (f"\nPicking by {by}, {len(picks)} questions, {len(sessions)} sessions holding evidence: the reader's "
            f"line is evidence in {reader} ({reader / max(1, len(sessions)):.2f}), the best round by the retrieval "
            f"signals in {own} ({own / max(1, len(sessions)):.2f}); "
            f"{np.mean([r['seconds'] for r in picks.values()]):.1f} s a question")
    if by == "letter":  # every first session picked: the design can be scored on these questions
        def recall(order: Callable[[int], list[int]]) -> float:
            return float(np.mean([S.score_rounds(questions[n], order(n))["R_all@5"] for n in picks]))

        text += ("; R_all@5 on these questions with the reader's line of each first: "
                 f"{recall(lambda n: picked_first(questions[n], judged[n], picks[n])):.3f}, reranked blocks: "
                 f"{recall(lambda n: blocks(questions[n], reranked(judged[n]))):.3f}")
    return text + "\n"


def picked_first(q: S.Question, row: dict[str, Any], pick: dict[str, Any]) -> list[int]:
    """The reader's line of each picked session in the reranked order, then the reranked blocks:
    a right pick costs one id of the official metric's five, a whole session block two."""
    head = [int(max(lines, key=lambda r: lines[r])) for lines in
            (pick["lines"][str(g)] for g in reranked(row) if str(g) in pick["lines"]) if lines]
    chosen = set(head)
    return head + [r for r in blocks(q, reranked(row)) if r not in chosen]


def blocks(q: S.Question, sessions: Sequence[int]) -> list[int]:
    """Whole sessions in the given order (then the rest, fused), each best round first."""
    rest, rounds = [g for g in S.fused_sessions(q) if g not in set(sessions)], rounds_by_session(q)
    return [r for g in [*sessions, *rest] for r in rounds.get(g, [])]


DESIGNS: dict[str, Callable[[S.Question, list[int]], list[int]]] = {
    "library default": lambda q, _reranked: S.library(q),
    "session blocks, fused order": lambda q, _reranked: S.session_blocks(q),
    "session blocks, reranked": blocks,
}


def main(argv: Sequence[str] | None = None) -> int:
    from ..cli import load_benchmark

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="LoCoMo in LongMemEval's form")
    parser.add_argument("--cache", type=Path, required=True, help="a runner cache holding the default's store")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--fixable", type=int, default=40)
    parser.add_argument("--correct", type=int, default=30)
    parser.add_argument("--pick", type=int, default=0,
                        help="then, in each of the first N reranked sessions, the reader picks the line that answers")
    parser.add_argument("--pick-questions", type=int, default=None,
                        help="pick lines for only the first M judged questions (the fixable ones come first)")
    parser.add_argument("--pick-by", choices=("letter", "yes-no"), default="letter",
                        help="letter: one listwise pass a session; yes-no: a pass a line, evidence sessions only")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    items, _split = load_benchmark("locomo", args.data)
    config = MemoryConfig.model_validate({"embedder": {"cache_path": args.cache / "embeddings.sqlite"}})
    questions = S.prepare(items, args.cache, embedder_from_config(config.embedder))
    strata: dict[str, list[int]] = {"fixable": [], "correct": [], "beyond depth": []}
    for n, q in enumerate(questions):
        order, gold = S.fused_sessions(q), S.gold_sessions(q)
        strata["correct" if gold <= set(order[:5]) else "fixable" if gold <= set(order[:args.depth])
               else "beyond depth"].append(n)
    rng = random.Random(0)
    sample = {name: sorted(rng.sample(strata[name], min(size, len(strata[name]))))
              for name, size in (("fixable", args.fixable), ("correct", args.correct))}
    args.out.mkdir(parents=True, exist_ok=True)
    journal = args.out / "judgements.jsonl"
    judged = {row["n"]: row for row in map(json.loads, journal.read_text().splitlines())} if journal.exists() else {}
    todo = [n for names in sample.values() for n in names if n not in judged]
    judge = Judge(args.model, args.dtype) if todo else None
    with journal.open("a", encoding="utf-8") as sink:
        for done, n in enumerate(todo, 1):
            q, started = questions[n], time.perf_counter()
            scores, tokens, rounds = {}, 0, rounds_by_session(q)
            for g in S.fused_sessions(q)[:args.depth]:
                passage = "\n".join(q.haystack.values[r] for r in sorted(rounds.get(g, [])[:3]))
                scores[g], used = judge(q.text, passage)  # type: ignore[misc]
                tokens += used
            judged[n] = {"n": n, "qtype": q.qtype, "scores": {str(g): v for g, v in scores.items()},
                         "seconds": time.perf_counter() - started, "tokens": tokens}
            sink.write(json.dumps(judged[n]) + "\n")
            sink.flush()
            print(f"{done}/{len(todo)} judged, {judged[n]['seconds']:.1f} s", flush=True)
    picked = [n for ns in sample.values() for n in ns][:args.pick_questions]
    picks = pick_lines(questions, picked, judged, args) if args.pick else {}
    table = summarize(questions, strata, sample, judged, picks if args.pick_by == "letter" else {})
    for by in ("letter", "yes-no"):  # this run's picks, and the other way's if journalled here
        journal = args.out / f"picks-{by}.jsonl"
        if journal.exists():
            rows = [json.loads(line) for line in journal.read_text().splitlines()]
            table += line_accuracy(questions, {row["n"]: row for row in rows if row["n"] in set(picked)}, by, judged)
    (args.out / "summary.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


def summarize(questions: Sequence[S.Question], strata: dict[str, list[int]], sample: dict[str, list[int]],
              judged: dict[int, dict[str, Any]], picks: dict[int, dict[str, Any]] | None = None) -> str:
    def estimate(means: dict[str, float], beyond: float) -> float:
        """The dev figure: each stratum's size times its (sample) mean."""
        return (sum(means[s] * len(strata[s]) for s in means) + beyond * len(strata["beyond depth"])) / len(questions)

    def row(name: str, per_question: Callable[[int], float], beyond: float) -> str:
        means = {stratum: float(np.mean([per_question(n) for n in ns])) for stratum, ns in sample.items()}
        return f"| {name} | {means['fixable']:.3f} | {means['correct']:.3f} | {estimate(means, beyond):.3f} |"

    rows = [f"{len(questions)} questions: " + ", ".join(f"{name} {len(ns)}" for name, ns in strata.items())
            + "; judged " + ", ".join(f"{len(ns)} {name}" for name, ns in sample.items())
            + f"; {np.mean([r['seconds'] for r in judged.values()]):.1f} s and "
            f"{np.mean([r['tokens'] for r in judged.values()]):.0f} prompt tokens a question", "",
            "| design | fixable (sample) | correct (sample) | dev set, estimated |", "|---|---:|---:|---:|"]
    for name, design in DESIGNS.items():
        # beyond the depth the reranked blocks put 10 sessions first: the gold ones come too late
        beyond = 0.0 if name == "session blocks, reranked" else float(np.mean(
            [S.score_rounds(questions[n], design(questions[n], []))["R_all@5"] for n in strata["beyond depth"]]))
        rows.append(row(name, lambda n, design=design: S.score_rounds(  # type: ignore[misc]
            questions[n], design(questions[n], reranked(judged[n])))["R_all@5"], beyond))
    if picks and all(n in picks for ns in sample.values() for n in ns):
        rows.append(row("reranked, the reader's line of each of the first sessions first",
                        lambda n: S.score_rounds(questions[n], picked_first(questions[n], judged[n], picks[n]))[
                            "R_all@5"], 0.0))
    rows.append(row("sessions as units, reranked (not the round metric)",
                    lambda n: float(S.gold_sessions(questions[n]) <= set(reranked(judged[n])[:5])), 0.0))
    if picks:
        rows[0] += (f"; picking lines: {np.mean([r['seconds'] for r in picks.values()]):.1f} s and "
                    f"{np.mean([r['tokens'] for r in picks.values()]):.0f} prompt tokens more")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
