"""How far can a judge be trusted? Run it on the hand-labelled check set and compare with the labels.

    python -m memagent_evals.judge_check --judge qwen2.5-coder-1.5b-instruct
    python -m memagent_evals.judge_check --judge rules+qwen2.5-coder-1.5b-instruct   # the rules first, then the model
    python -m memagent_evals.judge_check --judge http://localhost:8000/v1#Qwen/Qwen2.5-7B-Instruct
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from .score import DEFAULT_RESULTS, check_judge, load_check_set, markdown, write_results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m memagent_evals.judge_check", description=__doc__.splitlines()[0])
    parser.add_argument("--judge", required=True,
                        help="packaged name, folder, .gguf or URL#model; rules+SPEC applies the rules first")
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS, help=f"results folder (default {DEFAULT_RESULTS})")
    parser.add_argument("--check-set", type=Path, default=None, help="a JSONL check set (default: the packaged one)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    from ..longmemeval.judge import load_judge  # models load only when a judge is asked for

    triples = load_check_set(args.check_set)  # before the model: a broken set fails in a second, not after a load
    check = check_judge(load_judge(args.judge), triples, progress=not args.no_progress)
    json_path, md_path = write_results(check, args.out, triples)
    print(markdown(check, triples))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
