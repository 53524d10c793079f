"""R-Tuning's refusal-aware data from a judged training run, and a LoRA adapter trained on it.

    python -m memagent_evals.refusal.tune --data ../shared/data/locomo/locomo_dev6.json \\
        --cache /tmp/evalcache_locomo --run evals/results/refusal_locomo_train_qwen0.5b \\
        --name rtuning-qwen0.5b-locomo-v1

The run (``memagent eval locomo --qa --refusal --contexts memagent ...`` on the training conversations)
holds the reader's own answers and the judge's labels; each question's prompt is rebuilt exactly as
the reader saw it (memagent's top-k records within the run's budget, the run's prompt). The examples
go to ``evals/cache/rtuning/<name>.jsonl`` (benchmark text: never committed); the adapter to
``memagent.answer.rtuning.adapters_dir() / <name>`` with ``training.json`` naming that file's sha256.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from memagent import MemoryConfig
from memagent._files import sha256_file
from memagent.answer.confidence import SURE_QUESTIONS
from memagent.answer.reader import reader_messages
from memagent.answer.rtuning import (
    TuningConfig,
    TuningExample,
    adapters_dir,
    balanced,
    refusal_aware_example,
    tune_reader,
)
from memagent.embedding import embedder_from_config
from memagent.llm.base import LLM
from memagent.llm.load import load_llm
from memagent.llm.local import LocalLLM
from memagent.schema import parse_timestamp

from ..longmemeval.load import Item
from ..longmemeval.qa import SESSION_CHARS, context_passages
from ..longmemeval.retrieval import RETRIEVERS, HaystackIndex


def judged_rows(run: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A QA run's setup and its memagent-context answers, each with the judge's label."""
    answers = [json.loads(line) for line in (run / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    judged = [json.loads(line) for line in (run / "judged.jsonl").read_text(encoding="utf-8").splitlines()]
    labels = {(r["question_id"], r["context"]): r["label"] for r in judged[1:]}
    rows = [{**r, "label": labels[(r["question_id"], r["context"])]} for r in answers[1:]
            if r["context"] == "memagent" and (r["question_id"], r["context"]) in labels]
    return answers[0]["setup"], rows


def build_examples(items: Sequence[Item], rows: Sequence[dict[str, Any]], setup: dict[str, Any], reader: LLM,
                   cache: Path, variant: str) -> list[TuningExample]:
    """One refusal-aware example per judged answer, its prompt rebuilt as the reader saw it."""
    by_id = {item.question_id: item for item in items}
    index = HaystackIndex("memagent", RETRIEVERS["memagent"], cache, embedder_from_config(MemoryConfig().embedder))
    examples = []
    for row in tqdm(rows, desc="examples", unit="question"):
        item = by_id[row["question_id"]]
        passages = context_passages("memagent", item, index, reader, setup["k"], setup["budget"])
        messages = reader_messages(item.question, passages, parse_timestamp(item.question_date), SESSION_CHARS,
                                   setup["prompt"])
        examples.append(refusal_aware_example(
            [dict(m) for m in messages], item.answer, bool(row["label"]), item.question_id.endswith("_abs"),
            variant,  # type: ignore[arg-type]
        ))
    return examples


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="python -m memagent_evals.refusal.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the LoCoMo file the run answered")
    parser.add_argument("--cache", type=Path, required=True, help="the run's store cache (--cache of the run)")
    parser.add_argument("--run", type=Path, required=True, help="a judged QA run with --refusal on training questions")
    parser.add_argument("--name", required=True, help="the adapter's name (a folder in the adapters dir)")
    parser.add_argument("--variant", choices=("unsure", "refuse"), default="unsure")
    parser.add_argument("--wording", choices=sorted(SURE_QUESTIONS), default="memories")
    parser.add_argument("--epochs", type=int, default=TuningConfig.epochs)
    parser.add_argument("--rank", type=int, default=TuningConfig.rank)
    parser.add_argument("--lr", type=float, default=TuningConfig.learning_rate)
    parser.add_argument("--max-tokens", type=int, default=TuningConfig.max_tokens)
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples (a quick check)")
    parser.add_argument("--only", nargs="+", default=None, metavar="CONVERSATION",
                        help="learn only from these conversations' questions (others can then fit the threshold)")
    parser.add_argument("--balance", type=float, default=None, metavar="RATIO",
                        help="keep at most RATIO unsure examples per sure one (memagent.answer.rtuning.balanced)")
    args = parser.parse_args(argv)

    from ..cli import load_benchmark

    setup, rows = judged_rows(args.run)
    if args.only:
        rows = [r for r in rows if r["question_id"].split("_q")[0] in args.only]
    items, _split = load_benchmark("locomo", args.data)
    reader = load_llm(setup["reader"], backend="transformers")  # trained in torch; also counts the budget
    assert isinstance(reader, LocalLLM)
    examples = build_examples(items, rows, setup, reader, args.cache, args.variant)
    if args.balance is not None:
        examples = balanced(examples, args.balance)
    examples = examples[: args.limit]
    data_file = Path("evals/cache/rtuning") / f"{args.name}.jsonl"
    data_file.parent.mkdir(parents=True, exist_ok=True)
    data_file.write_text("".join(json.dumps(e.__dict__) + "\n" for e in examples), encoding="utf-8")
    config = TuningConfig(rank=args.rank, learning_rate=args.lr, epochs=args.epochs, max_tokens=args.max_tokens,
                          wording=args.wording)
    data = {"file": str(data_file), "sha256": sha256_file(data_file), "run": str(args.run), "run_setup": setup,
            "benchmark": args.data.name, "variant": args.variant, "questions": len(examples),
            "conversations": args.only, "balance": args.balance,
            "sure": sum(e.sure is True for e in examples), "unsure": sum(e.sure is False for e in examples)}
    out = adapters_dir() / args.name
    report = tune_reader(reader, examples, out, config, data=data,
                         progress=lambda batch: tqdm(batch, desc="tune", unit="example"))
    first, last = report.losses[0], report.losses[-1]
    print(f"adapter {out}: {report.examples} examples ({report.skipped_too_long} too long, skipped), "
          f"{report.steps} steps, loss {first:.3f} -> {last:.3f}, {report.minutes:.1f} min, "
          f"peak memory {report.peak_memory_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
