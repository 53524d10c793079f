"""``memagent eval sirllm``: full cache, StreamingLLM and SirLLM side by side on SirLLM's tasks.

    memagent eval sirllm --task grocery --data ../shared/data/sirllm/grocery_keys \\
        --model qwen2.5-coder-0.5b-instruct --budget 252 --episodes 100 --out evals/results/sirllm_grocery

Each policy's episodes go to ``<out>/<policy>.jsonl`` as they finish (a rerun resumes), then a table
(``summary.md``, ``summary.json``) and a plot (``sirllm.png``) of every policy journalled there with
the same setup; ``--report`` writes only those, loading no model.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from memagent.decay.chat import ChatTurns
from memagent.decay.streaming import CachePolicy, StreamingLM

from .tasks import TASKS, Step, counter_most_frequent, episodes, rps_outcome

# RPS without a model: how much a reader could win from the moves a cache holds (~20 rounds in 1,024 tokens)
RPS_WINDOWS = {"no model: beat the most frequent of the last 20 moves": 20,
               "no model: beat the most frequent of all moves so far": None}
# The paper's code, per task: entropy budget (start 4, recent 0) and decay ratio
PAPER = {"grocery": (1020, 1.0), "dailydialog": (508, 0.7), "rps": (1020, 0.9)}
POLICIES = {  # label: (cache policy kind, token scorer)
    "full": ("full", "paper"),
    "streaming": ("streaming", "paper"),
    "sirllm": ("sirllm", "paper"),
    "sirllm-reference": ("sirllm", "reference"),
}


def add_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--task", choices=TASKS, required=True)
    sub.add_argument("--data", type=Path, required=True, help="the task's folder or file (SirLLM's data/)")
    sub.add_argument("--model", default="qwen2.5-coder-0.5b-instruct",
                     help="a rotary decoder (packaged name or folder)")
    sub.add_argument("--policies", nargs="+", choices=sorted(POLICIES), default=sorted(POLICIES))
    sub.add_argument("--start", type=int, default=4, help="start (sink) tokens")
    sub.add_argument("--budget", type=int, default=None, help="entropy budget (default: the paper's for the task)")
    sub.add_argument("--recent", type=int, default=0,
                     help="tokens kept by recency on top of the budget (the paper's code: 0); SirLLM fills them last")
    sub.add_argument("--decay", type=float, default=None, help="decay ratio (default: the paper's for the task)")
    sub.add_argument("--episodes", type=int, default=None, help="only the first N episodes")
    sub.add_argument("--rounds", type=int, default=None, help="only the first N steps of each episode (rps)")
    sub.add_argument("--no-distractors", action="store_true",
                     help="grocery without the commonsense questions (the gate: can the model recall at all)")
    sub.add_argument("--dtype", default="float32",
                     help="the model's weights and cache (bfloat16: ~2.5x faster on a CPU with AMX; another setup)")
    sub.add_argument("--out", type=Path, required=True)
    sub.add_argument("--report", action="store_true",
                     help="only write the table and plot from the journals in --out (--model as they name it)")


def run_episode(stream: StreamingLM, turns: ChatTurns, steps: Sequence[Step], greedy_first: bool) -> dict[str, Any]:
    """Stream one episode from an empty cache; counts of right answers per kind of step."""
    stream.reset()
    counts: dict[str, list[int]] = {}
    outcome = {"win": 0, "tie": 0, "lose": 0}
    for n, step in enumerate(steps):
        prompt = torch.tensor(turns.user(step.question, first=n == 0))
        choices = [torch.tensor(turns.assistant(label)) for label in step.choices]
        pick = stream.choose(prompt, choices, greedy_first=greedy_first)
        right, total = counts.setdefault(step.kind, [0, 0])
        counts[step.kind] = [right + (pick == step.gold), total + 1]
        if step.user_move is not None:
            outcome[rps_outcome(pick, step)] += 1
    return {"counts": counts, **({"rps": outcome} if steps and steps[0].user_move is not None else {})}


def rps_rates(outcomes: Sequence[dict[str, int]]) -> dict[str, float]:
    """Win, tie and lose rates over episodes' outcome counts, and ``n``, the rounds."""
    rounds = sum(sum(o.values()) for o in outcomes)
    return {k: sum(o[k] for o in outcomes) / max(1, rounds) for k in ("win", "tie", "lose")} | {"n": rounds}


def rps_references(all_episodes: Sequence[Sequence[Step]]) -> dict[str, Any]:
    """Win/tie/lose rates of the no-model players in ``RPS_WINDOWS`` over the same rounds."""
    return {label: {"rps": rps_rates([counter_most_frequent(steps, window) for steps in all_episodes]),
                    "episodes": len(all_episodes)} for label, window in RPS_WINDOWS.items()}


def _setup_line(path: Path) -> dict[str, Any] | None:
    with path.open(encoding="utf-8") as journal:
        first = journal.readline()
    return json.loads(first)["setup"] if first.strip() else None


def _journal(path: Path, setup: dict[str, Any]) -> dict[int, dict[str, Any]]:
    if path.exists() and path.stat().st_size:
        lines = path.read_text(encoding="utf-8").splitlines()
        if json.loads(lines[0])["setup"] != setup:
            raise ValueError(f"{path} was written with another setup: pass another --out")
        return {row["episode"]: row for row in map(json.loads, lines[1:])}
    path.write_text(json.dumps({"setup": setup}) + "\n", encoding="utf-8")
    return {}


def totals(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy per kind of step (and rps rates) over a policy's episodes."""
    kinds: dict[str, list[int]] = {}
    for row in rows:
        for kind, (right, total) in row["counts"].items():
            kinds[kind] = [kinds.get(kind, [0, 0])[0] + right, kinds.get(kind, [0, 0])[1] + total]
    out: dict[str, Any] = {kind: {"accuracy": right / total, "n": total} for kind, (right, total) in kinds.items()}
    if any("rps" in row for row in rows):
        out["rps"] = rps_rates([row["rps"] for row in rows])
    steps = sum(total for _right, total in kinds.values())
    out["seconds_per_step"] = sum(row["seconds"] for row in rows) / max(1, steps)
    out["evicted_per_episode"] = sum(row["evicted"] for row in rows) / max(1, len(rows))
    out["episodes"] = len(rows)
    return out


def _run(stream: StreamingLM, turns: ChatTurns, all_episodes: Sequence[Sequence[Step]], journal: Path,
         setup: dict[str, Any], label: str, *, greedy_first: bool) -> None:
    """Stream the episodes not yet in ``journal`` through one policy, each written as it ends."""
    done = _journal(journal, setup)
    todo = [(n, steps) for n, steps in enumerate(all_episodes) if n not in done]
    bar = tqdm(total=sum(len(s) for _n, s in todo), desc=label, unit="turn")
    with journal.open("a", encoding="utf-8") as sink:
        for n, steps in todo:
            started, evicted = time.perf_counter(), stream.evicted
            row = run_episode(stream, turns, steps, greedy_first=greedy_first)
            row |= {"episode": n, "seconds": time.perf_counter() - started, "evicted": stream.evicted - evicted}
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            bar.update(len(steps))
    bar.close()


def main(args: argparse.Namespace) -> int:
    from memagent.llm.load import load_llm
    from memagent.llm.local import LocalLLM

    budget, decay = args.budget or PAPER[args.task][0], args.decay or PAPER[args.task][1]
    all_episodes = [steps[: args.rounds] for steps in islice(episodes(args.task, args.data, not args.no_distractors),
                                                               args.episodes)]
    llm = None if args.report else load_llm(args.model, backend="transformers", dtype=args.dtype)
    torch.set_num_threads(torch.get_num_threads())
    model_name = args.model if llm is None else llm.name
    args.out.mkdir(parents=True, exist_ok=True)

    def setup_of(label: str) -> tuple[CachePolicy, str, dict[str, Any]]:
        kind, scorer = POLICIES[label]
        policy = CachePolicy(kind, start=args.start, budget=budget, recent=args.recent,  # type: ignore[arg-type]
                             decay=decay if kind == "sirllm" else 1.0)
        return policy, scorer, {"task": args.task, "data": args.data.name, "model": model_name, "dtype": args.dtype,
                                "policy": policy.__dict__, "scorer": scorer, "distractors": not args.no_distractors,
                                "rounds": args.rounds}

    if llm is not None:
        assert isinstance(llm, LocalLLM)
        for label in args.policies:
            policy, scorer, setup = setup_of(label)
            _run(StreamingLM(llm.model, policy, scorer), ChatTurns(llm.tokenizer), all_episodes,  # type: ignore[arg-type]
                 args.out / f"{label}.jsonl", setup, label, greedy_first=args.task != "rps")
    # the table shows every policy journalled in --out with this setup, this run's and earlier runs'
    results: dict[str, Any] = {}
    for label in POLICIES:
        path, setup = args.out / f"{label}.jsonl", setup_of(label)[2]
        if path.exists() and _setup_line(path) == setup:
            done = _journal(path, setup)
            results[label] = totals([done[n] for n in range(len(all_episodes)) if n in done])
    summary = {"task": args.task, "data": args.data.name, "model": model_name, "dtype": args.dtype,
               "start": args.start, "budget": budget,
               "recent": args.recent, "decay": decay, "episodes": len(all_episodes),
               "distractors": not args.no_distractors, "date": f"{datetime.now(tz=timezone.utc):%Y-%m-%d %H:%M} UTC",
               "results": results, "references": rps_references(all_episodes) if args.task == "rps" else {}}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    text = summary_markdown(summary)
    (args.out / "summary.md").write_text(text, encoding="utf-8")
    plot(summary, args.out / "sirllm.png")
    print(text)
    return 0


def _columns(task: str) -> list[tuple[str, str]]:
    if task == "grocery":
        return [("recall", "recall"), ("commonsense", "commonsense")]
    if task == "dailydialog":
        return [("dialogue", "accuracy")]
    return [("win", "win"), ("tie", "tie"), ("lose", "lose")]


def _value(result: dict[str, Any], key: str) -> float | None:
    if key in ("win", "tie", "lose"):
        return result.get("rps", {}).get(key)
    return result.get(key, {}).get("accuracy")


def _cache(summary: dict[str, Any]) -> str:
    recent = summary.get("recent", 0)
    return f"{summary['start']} + {summary['budget']}" + (f" + {recent} recent" if recent else "")


def summary_markdown(summary: dict[str, Any]) -> str:
    columns = _columns(summary["task"])
    head = ["policy", "episodes", *(name for _key, name in columns), "evicted / episode", "s / turn"]
    dtype = summary.get("dtype", "float32")
    lines = [f"# SirLLM {summary['task']}: {summary['model']}" + ("" if dtype == "float32" else f" ({dtype})")
             + f", cache {_cache(summary)}, "
             f"decay {summary['decay']}, {summary['episodes']} episodes"
             + ("" if summary["distractors"] else " (no distractors)"), "",
             "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, result in summary["results"].items():
        cells = [f"{v:.3f}" if (v := _value(result, key)) is not None else "-" for key, _name in columns]
        lines.append(f"| {label} | {result['episodes']} | " + " | ".join(cells)
                     + f" | {result['evicted_per_episode']:.0f} | {result['seconds_per_step']:.2f} |")
    for label, result in summary.get("references", {}).items():
        cells = [f"{_value(result, key):.3f}" for key, _name in columns]
        lines.append(f"| {label} | {result['episodes']} | " + " | ".join(cells) + " | - | - |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns, labels = _columns(summary["task"]), list(summary["results"])
    if not labels:  # no journal with this setup yet
        return
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(columns) * len(labels) / 2, 3.6))
    width = 0.8 / max(1, len(labels))
    for n, label in enumerate(labels):
        values = [_value(summary["results"][label], key) or 0.0 for key, _name in columns]
        ax.bar([c + n * width for c in range(len(columns))], values, width, label=label)
    ax.set_xticks([c + width * (len(labels) - 1) / 2 for c in range(len(columns))], [name for _k, name in columns])
    ax.set_ylim(0, 1)
    ax.set_ylabel("rate")
    ax.set_title(f"{summary['task']}: {summary['model']}, cache {_cache(summary)}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
