"""Probe for issue 18: the local reader as a pointwise session reranker, judged on a stratified sample.

Sessions are ranked by ``sweep.fused_sessions`` (BM25 over sessions and each session's best round by
dense and BM25). The reader reads each of the first ``--depth`` sessions' best three rounds with the
question and says Yes or No; its score is log P(Yes) − log P(No). Only questions whose gold sessions
are all within that depth but not all in the first five ("fixable") can gain, and only those already
all in the first five ("correct") can lose, so a seeded sample of each is judged and the dev figure
is estimated per stratum (the rest score 0 with any reordering of the first ``--depth``).

    python -m memagent_evals.longmemeval.rerank_probe --data ../shared/data/locomo/locomo_dev6.json \\
        --cache /tmp/evalcache_locomo --fixable 40 --correct 30 --out evals/results/rerank_probe_locomo_dev6

Judgements go to ``<out>/judgements.jsonl`` as they are made (a rerun resumes); the table of the
official round-ranking metric for each design, per stratum and estimated over the dev set, to
``<out>/summary.md``.
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


def gold_sessions(q: S.Question) -> set[int]:
    h = q.haystack
    return {int(h.session_of[r]) for r, p in enumerate(q.positions) if any("answer" in q.corpus_ids[i] for i in p)}


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
    def __call__(self, question: str, passage: str) -> tuple[float, int]:
        message = PROMPT.format(passage=passage, question=question)
        ids = self.tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                                 return_tensors="pt")
        ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
        logp = torch.log_softmax(self.model(input_ids=ids).logits[0, -1].float(), dim=-1)
        return float(logp[self.yes] - logp[self.no]), int(ids.shape[1])


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
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    items, _split = load_benchmark("locomo", args.data)
    config = MemoryConfig.model_validate({"embedder": {"cache_path": args.cache / "embeddings.sqlite"}})
    questions = S.prepare(items, args.cache, embedder_from_config(config.embedder))
    strata: dict[str, list[int]] = {"fixable": [], "correct": [], "beyond depth": []}
    for n, q in enumerate(questions):
        order, gold = S.fused_sessions(q), gold_sessions(q)
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
    table = summarize(questions, strata, sample, judged)
    (args.out / "summary.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


def summarize(questions: Sequence[S.Question], strata: dict[str, list[int]], sample: dict[str, list[int]],
              judged: dict[int, dict[str, Any]]) -> str:
    def reranked(n: int) -> list[int]:
        scores = {int(g): v for g, v in judged[n]["scores"].items()}
        return sorted(scores, key=lambda g: -scores[g])

    def estimate(means: dict[str, float], beyond: float) -> float:
        """The dev figure: each stratum's size times its (sample) mean."""
        return (sum(means[s] * len(strata[s]) for s in means) + beyond * len(strata["beyond depth"])) / len(questions)

    rows = [f"{len(questions)} questions: " + ", ".join(f"{name} {len(ns)}" for name, ns in strata.items())
            + "; judged " + ", ".join(f"{len(ns)} {name}" for name, ns in sample.items())
            + f"; {np.mean([r['seconds'] for r in judged.values()]):.1f} s and "
            f"{np.mean([r['tokens'] for r in judged.values()]):.0f} prompt tokens a question", "",
            "| design | fixable (sample) | correct (sample) | dev set, estimated |", "|---|---:|---:|---:|"]
    for name, design in DESIGNS.items():
        means = {stratum: float(np.mean([S.score_rounds(questions[n], design(questions[n], reranked(n)))["R_all@5"]
                                         for n in ns])) for stratum, ns in sample.items()}
        # beyond the depth the reranked blocks put 10 sessions first: the gold ones come too late
        beyond = 0.0 if name == "session blocks, reranked" else float(np.mean(
            [S.score_rounds(questions[n], design(questions[n], []))["R_all@5"] for n in strata["beyond depth"]]))
        rows.append(f"| {name} | {means['fixable']:.3f} | {means['correct']:.3f} | {estimate(means, beyond):.3f} |")
    units = {stratum: float(np.mean([gold_sessions(questions[n]) <= set(reranked(n)[:5]) for n in ns]))
             for stratum, ns in sample.items()}
    rows.append(f"| sessions as units, reranked (not the round metric) | {units['fixable']:.3f} "
                f"| {units['correct']:.3f} | {estimate(units, 0.0):.3f} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
