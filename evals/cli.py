"""``memagent eval``: score retrieval on LongMemEval files or LoCoMo, write JSONL, tables and a plot.

    memagent eval longmemeval --data longmemeval_s_cleaned.json --retriever bm25-session memagent
    memagent eval locomo --data locomo10.json
    memagent eval sirllm --task grocery --data ../shared/data/sirllm/grocery_keys
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from memagent import Embedder
from memagent.answer.confidence import SURE_QUESTIONS
from memagent.answer.reader import PROMPTS, prompt_for
from memagent.llm.load import BACKENDS

from .judge_check.score import judge_agreement, warn_untrusted_judge
from .longmemeval.budget import load_counter
from .longmemeval.load import Item, check_item, load_items, sha256_of, split_name
from .longmemeval.qa import CONTEXTS, qa_scores, qa_table, run_qa
from .longmemeval.report import (
    averages,
    budget_markdown,
    budget_summary,
    markdown_table,
    overview_table,
    plot_budget_recall,
    plot_recall_curves,
)
from .longmemeval.retrieval import RETRIEVERS
from .longmemeval.run import RetrievalRun, run_retrieval

DEFAULT_RETRIEVERS = ["bm25-session", "dense-session-kv", "dense-round", "memagent"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memagent eval", description=__doc__.splitlines()[0])
    benchmarks = parser.add_subparsers(dest="benchmark", required=True)
    for name, data_help in (("longmemeval", "an official LongMemEval file (S, M, oracle), unchanged"),
                            ("locomo", "LoCoMo conversations (locomo10.json schema)")):
        sub = benchmarks.add_parser(name, help=f"retrieval metrics on {name}")
        sub.add_argument("--data", type=Path, required=True, help=data_help)
        sub.add_argument("--retriever", nargs="+", default=DEFAULT_RETRIEVERS, choices=sorted(RETRIEVERS))
        sub.add_argument("--limit", type=int, default=None, help="score only the first N questions")
        sub.add_argument("--types", nargs="+", default=None, help="only these question types")
        sub.add_argument("--only", nargs="+", default=None, metavar="PREFIX",
                         help="only questions whose id starts with one of these (conversations: conv-42 conv-43)")
        sub.add_argument("--out", type=Path, default=None, help="results folder (default evals/results/<data name>)")
        sub.add_argument("--cache", type=Path, default=Path("evals/cache"),
                         help="stores and embedding cache; a second run reuses them")
        sub.add_argument("--per-type", type=int, default=None,
                         help="a stratified sample: N questions of each type (seeded)")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--budget-tokenizer", default=None, metavar="MODEL",
                         help="counts the tokens of evidence recall within a reader budget: a packaged model name, "
                              "folder, .gguf or 'chars/4' (default: the packaged reader's if installed, else chars/4)")
        qa = sub.add_argument_group("question answering (instead of retrieval)")
        qa.add_argument("--qa", action="store_true", help="answer with a reader and score with a judge")
        qa.add_argument("--reader", default="qwen2.5-coder-1.5b-instruct", help="model name, folder, .gguf or URL")
        qa.add_argument("--judge", default="rules+qwen2.5-coder-1.5b-instruct",
                        help="judge model; rules+SPEC applies LongMemEval's rules by code first (default: the one "
                             "validated on the judge-check set, evals/results/judge_check)")
        qa.add_argument("--contexts", nargs="+", default=list(CONTEXTS), choices=CONTEXTS)
        qa.add_argument("--budget", type=int, default=1024,
                        help="reader tokens of memories, the same for every context (default 1024)")
        qa.add_argument("--k", type=int, default=5, help="memagent context: at most this many records")
        qa.add_argument("--prompt", default=None, choices=sorted(PROMPTS),
                        help="the reader's prompt (default: the best measured for the reader)")
        qa.add_argument("--backend", default="auto", choices=BACKENDS, help="what runs a GGUF reader or judge")
        qa.add_argument("--adapter", default=None,
                        help="a LoRA adapter for the reader (R-Tuning: python -m memagent_evals.refusal.tune), "
                             "by name or folder; the reader then runs on transformers")
        qa.add_argument("--refusal", nargs="?", const="memories", default=None, choices=sorted(SURE_QUESTIONS),
                        metavar="WORDING",
                        help="also ask the reader whether it is sure (R-Tuning) and score refusal: AP, AUROC, "
                             "abstention, a reliability diagram; WORDING 'memories' (default) or R-Tuning's "
                             "'internal'")
        qa.add_argument("--thresholds", type=Path, default=None,
                        help="with --refusal: refusal thresholds fitted on other questions (thresholds.json of a "
                             "training run); without it they are fitted on this run and written there")
    from .sirllm.run import add_arguments as sirllm_arguments

    sirllm_arguments(benchmarks.add_parser("sirllm", help="SirLLM's streaming tasks: full cache, StreamingLLM, SirLLM"))
    return parser


def select(items: list[Item], types: Sequence[str] | None, limit: int | None, per_type: int | None = None,
           seed: int = 0, only: Sequence[str] | str | None = None) -> list[Item]:
    prefixes = (only,) if isinstance(only, str) else tuple(only or ())
    chosen = [i for i in items if (types is None or i.question_type in types)
              and (not prefixes or i.question_id.startswith(prefixes))]
    if per_type is not None:
        rng = random.Random(seed)
        by_type: dict[str, list[Item]] = {}
        for item in chosen:
            by_type.setdefault(item.question_type, []).append(item)
        picked = {i.question_id for group in by_type.values() for i in rng.sample(group, min(per_type, len(group)))}
        chosen = [i for i in chosen if i.question_id in picked]
    return chosen[:limit] if limit is not None else chosen


def load_benchmark(name: str, path: Path) -> tuple[list[Item], str]:
    if name == "longmemeval":
        return load_items(path), split_name(path)
    from .locomo.convert import convert_locomo, load_locomo

    converted, _stats = convert_locomo(load_locomo(path))
    return [check_item(entry, n) for n, entry in enumerate(converted)], "LoCoMo, converted to the LongMemEval schema"


def summary(args: argparse.Namespace, split: str, run: RetrievalRun, items: int, embedder: str, cache: str) -> str:
    header = [
        f"# Retrieval on {args.data.name}",
        "",
        f"- data: `{args.data}` (sha256 `{sha256_of(args.data)}`), split: {split}",
        f"- date: {datetime.now(tz=timezone.utc):%Y-%m-%d %H:%M} UTC; embedder: {embedder}",
        f"- questions: {items} selected, {len({r['question_id'] for r in run.rows})} scored; skipped "
        f"{run.skipped_abstention} abstention and {run.skipped_no_user_evidence} without user-side evidence",
        f"- wall time: {run.seconds:.1f} s; texts embedded {run.texts_embedded}, served from the cache "
        f"{run.texts_cached} (`{cache}`)",
        "- retrievers (MemoryConfig overrides; `{}` is the library default):",
        *[f"  - `{name}`: `{json.dumps(RETRIEVERS[name])}`" for name in args.retriever],
        f"- under the overrides (defaults and `MEMAGENT_*` variables): `{_retrieval_settings()}`",
        "",
        "Metrics are LongMemEval's official definitions (recall_any, recall_all, ndcg_any; turn rankings "
        "scored at session level by widening k to k distinct sessions).",
        "",
    ]
    body = ["## overview (overall; indexing cost in this run: a cached store costs nothing)", "",
            overview_table(run.rows, run.index_cost)]
    for level in ("session", "turn"):
        body += [f"## {level} level", "", markdown_table(run.rows, level)]
    body += ["## evidence recall within a reader budget", "", budget_markdown(run.rows, run.budget_tokenizer)]
    return "\n".join(header + body)


def _retrieval_settings() -> str:
    from memagent import MemoryConfig

    config = MemoryConfig()
    return json.dumps({"granularity": config.granularity, "key": config.key,
                       "retrieval": config.retrieval.model_dump(), "expansion": config.expansion.kind})


def qa_main(args: argparse.Namespace, items: list[Item], split: str, embedder: Embedder, out: Path) -> int:
    from memagent.llm.load import load_llm

    from .longmemeval.judge import RULES_PREFIX, Judge, RuleFirstJudge, load_judge

    reader = load_llm(args.reader, backend=args.backend, adapter=args.adapter)
    judge_spec = args.judge or args.reader
    if judge_spec.removeprefix(RULES_PREFIX) == args.reader and args.adapter is None:  # one model for both
        judge_llm = RuleFirstJudge(reader) if judge_spec.startswith(RULES_PREFIX) else Judge(reader)
    else:
        judge_llm = load_judge(judge_spec, backend=args.backend)
    prompt = args.prompt or prompt_for(reader.name)
    warning = warn_untrusted_judge(judge_llm.name, spec=judge_spec)  # an unchecked judge guesses
    agreement = judge_agreement(judge_llm.name)
    run = run_qa(items, args.contexts, reader=reader, judge_llm=judge_llm, cache=args.cache, embedder=embedder,
                 out=out, k=args.k, budget=args.budget, prompt=prompt, sure_probe=args.refusal)
    types = sorted({i.question_type for i in items})
    text = "\n".join([
        f"# Question answering on {args.data.name}",
        "",
        f"- data: `{args.data}` (sha256 `{sha256_of(args.data)}`), split: {split}",
        f"- questions: {len(items)} ({', '.join(f'{t}: {sum(i.question_type == t for i in items)}' for t in types)})",
        f"- reader: `{run.reader}` (backend {args.backend}), prompt `{prompt}`; judge: `{run.judge}` "
        f"(LongMemEval's official judge prompts), agreement on the judge-check set: "
        f"{'not checked' if agreement is None else f'{agreement:.3f}'}{' (WARNING: below 0.9)' if warning else ''}",
        f"- embedder: {embedder.name}; memagent's configuration (the library default): `{_retrieval_settings()}`",
        f"- contexts, each within {args.budget} reader tokens: memagent's top-{args.k} records best first; "
        "full history newest session first; oracle evidence rounds (evidence sessions where no turn is marked)",
        f"- date: {datetime.now(tz=timezone.utc):%Y-%m-%d %H:%M} UTC; wall time {run.seconds:.0f} s"
        + (f" ({run.resumed} answers resumed from an earlier run)" if run.resumed else ""),
        "",
        qa_table(run.rows),
    ])
    (out / "qa_summary.md").write_text(text, encoding="utf-8")
    summary = {"data": args.data.name, "split": split, "questions": len(items), "reader": run.reader,
               "judge": run.judge, "judge_agreement": agreement, "budget": args.budget, "k": args.k,
               "prompt": prompt,
               "scores": qa_scores(run.rows)}  # aggregates only: no question ids, safe to commit
    (out / "qa_summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (out / "qa_rows.json").write_text(json.dumps(run.rows, indent=1), encoding="utf-8")
    print(text)
    if args.refusal:
        print(refusal_main(args, run.rows, out, f"{run.reader}, {args.data.name}"))
    return 0


def refusal_main(args: argparse.Namespace, rows: list[dict[str, Any]], out: Path, title: str) -> str:
    """Refusal scores per context; thresholds from ``--thresholds`` or fitted here (and written)."""
    from .refusal import SCORES, fit_thresholds, plot_reliability, refusal_markdown, refusal_scores, reliability

    parts, summary = [f"# Refusal (sure-probe wording: {args.refusal})", ""], {}
    for context in args.contexts:
        mine = [r for r in rows if r["context"] == context]
        if args.thresholds:
            thresholds, origin = json.loads(args.thresholds.read_text(encoding="utf-8"))[context], str(args.thresholds)
        else:
            thresholds, origin = fit_thresholds(mine), "these questions (a training run)"
        methods = refusal_scores(mine, thresholds)
        calibration = {name: reliability(mine, field) for name, field in SCORES.items()}
        plot_reliability(calibration, out / f"reliability_{context}.png", f"{title}: {context} ({len(mine)} answers)")
        parts += [f"## {context}: thresholds fitted on {origin}", "", refusal_markdown(methods, calibration)]
        summary[context] = {"thresholds": thresholds, "fitted_on": origin, "methods": methods,
                            "calibration": calibration}
    if not args.thresholds:
        (out / "thresholds.json").write_text(
            json.dumps({c: s["thresholds"] for c, s in summary.items()}, indent=1), encoding="utf-8"
        )
    (out / "refusal.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    text = "\n".join(parts)
    (out / "refusal.md").write_text(text, encoding="utf-8")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    if args.benchmark == "sirllm":
        from .sirllm.run import main as sirllm_main

        return sirllm_main(args)
    from memagent import MemoryConfig
    from memagent.embedding import embedder_from_config

    items, split = load_benchmark(args.benchmark, args.data)
    items = select(items, args.types, args.limit, args.per_type, args.seed, args.only)
    out = args.out or Path("evals/results") / args.data.stem
    out.mkdir(parents=True, exist_ok=True)
    embedder = embedder_from_config(MemoryConfig().embedder)  # MEMAGENT_EMBEDDER__* (backend, model) apply
    if args.qa:
        return qa_main(args, items, split, embedder, out)
    run = run_retrieval(items, args.retriever, cache=args.cache, embedder=embedder, out=out / "per_question.jsonl",
                        counter=load_counter(args.budget_tokenizer))
    text = summary(args, split, run, len(items), embedder.name, str(args.cache))
    (out / "summary.md").write_text(text, encoding="utf-8")
    (out / "summary.json").write_text(
        json.dumps({**{level: averages(run.rows, level) for level in ("session", "turn")},
                    "budget": budget_summary(run.rows, run.budget_tokenizer)}, indent=2), encoding="utf-8"
    )
    plot_recall_curves(run.rows, out / "recall.png", f"{args.data.name} ({split})")
    tokens = run.budget_tokenizer.split(" (")[0]
    plot_budget_recall(run.rows, out / "budget_recall.png", f"{args.data.name} ({split}): {tokens} tokens")
    print(text)
    print(f"wrote {out}/summary.md, summary.json, recall.png, budget_recall.png, per_question.jsonl")
    return 0
