"""Summaries people compare: a Markdown table per level and question type, and recall@k curves."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .budget import BUDGETS
from .metrics import KS

TABLE_METRICS = ("recall_any@5", "recall_all@5", "ndcg_any@5", "recall_all@10", "recall_all@30")


def averages(rows: Sequence[dict[str, Any]], level: str) -> dict[str, dict[str, dict[str, float]]]:
    """retriever -> question type (and 'overall', 'task-averaged') -> metric -> mean over questions."""
    grouped: dict[str, dict[str, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if level in row["metrics"]:
            grouped[row["retriever"]][row["question_type"]].append(row["metrics"][level])
            grouped[row["retriever"]]["overall"].append(row["metrics"][level])
    result: dict[str, dict[str, dict[str, float]]] = {}
    for retriever, by_type in grouped.items():
        result[retriever] = {t: _mean(scores) for t, scores in by_type.items()}
        types = [t for t in by_type if t != "overall"]
        if len(types) > 1:  # the paper's headline averages types, so big types do not dominate
            result[retriever]["task-averaged"] = {
                m: float(np.mean([result[retriever][t][m] for t in types])) for m in result[retriever]["overall"]
            }
    return result


def _mean(scores: list[dict[str, float]]) -> dict[str, float]:
    return {m: float(np.mean([s[m] for s in scores])) for m in scores[0]}


def markdown_table(rows: Sequence[dict[str, Any]], level: str) -> str:
    table = averages(rows, level)
    if not table:
        return f"_no {level}-level scores_\n"
    lines = ["| retriever | question type | n | " + " | ".join(TABLE_METRICS) + " |",
             "|---|---|---:|" + "---:|" * len(TABLE_METRICS)]
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        if level in row["metrics"]:
            counts[row["retriever"], row["question_type"]] += 1
            counts[row["retriever"], "overall"] += 1
    for retriever, by_type in table.items():
        for qtype in sorted(by_type, key=lambda t: (t in ("overall", "task-averaged"), t)):
            n = counts.get((retriever, qtype), "")
            cells = " | ".join(f"{by_type[qtype][m]:.3f}" for m in TABLE_METRICS)
            lines.append(f"| {retriever} | {qtype} | {n} | {cells} |")
    return "\n".join(lines) + "\n"


def plot_recall_curves(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """recall_all@k against k, one line per retriever, one panel per level."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    levels = [lvl for lvl in ("session", "turn") if averages(rows, lvl)]
    fig, axes = plt.subplots(1, len(levels), figsize=(6 * len(levels), 4.2), squeeze=False)
    for ax, level in zip(axes[0], levels):
        for retriever, by_type in averages(rows, level).items():
            overall = by_type["overall"]
            ax.plot(KS, [overall[f"recall_all@{k}"] for k in KS], marker="o", label=retriever)
        ax.set(xscale="log", xticks=KS, xticklabels=[str(k) for k in KS], ylim=(0, 1.02),
               xlabel="k", ylabel="recall_all@k", title=f"{level} level")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path, title)


def overview_table(rows: Sequence[dict[str, Any]], index_cost: dict[str, tuple[float, int, int]]) -> str:
    """One line per retriever: the ablation's columns (session level, turn level where it has one,
    the temporal category, and what indexing cost in this run)."""
    session, turn = averages(rows, "session"), averages(rows, "turn")
    head = ["retriever", "R_any@5", "R_all@5", "NDCG@5", "R_all@10", "temporal R_all@5", "turn R_all@5",
            "index s / 1k records", "values expanded"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for retriever, by_type in session.items():
        overall = by_type["overall"]
        temporal = by_type.get("temporal-reasoning", {}).get("recall_all@5")
        turn_all = turn.get(retriever, {}).get("overall", {}).get("recall_all@5")
        seconds, records, expanded = index_cost.get(retriever, (0.0, 0, 0))
        cells = [f"{overall[m]:.3f}" for m in ("recall_any@5", "recall_all@5", "ndcg_any@5", "recall_all@10")]
        cells += ["-" if temporal is None else f"{temporal:.3f}", "-" if turn_all is None else f"{turn_all:.3f}",
                  f"{1000 * seconds / records:.1f} ({records})" if records else "cached", str(expanded)]
        lines.append(f"| {retriever} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- evidence recall within a reader budget (budget.py) ----------------------------------------

def _budget_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if "budget" in row]


def budget_averages(rows: Sequence[dict[str, Any]], budgets: Sequence[int] = BUDGETS
                    ) -> dict[str, dict[str, dict[str, float]]]:
    """retriever -> question type (and 'overall', 'task-averaged') -> 'evidence_recall@B' -> mean."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in _budget_rows(rows):
        grouped[row["retriever"]][row["question_type"]].append(row["budget"])
        grouped[row["retriever"]]["overall"].append(row["budget"])
    names = [f"evidence_recall@{b}" for b in budgets]
    result: dict[str, dict[str, dict[str, float]]] = {}
    for retriever, by_type in grouped.items():
        result[retriever] = {t: {m: float(np.mean([s[m] for s in scores])) for m in names}
                             for t, scores in by_type.items()}
        types = [t for t in by_type if t != "overall"]
        if len(types) > 1:
            result[retriever]["task-averaged"] = {m: float(np.mean([result[retriever][t][m] for t in types]))
                                                  for m in names}
    return result


def _median(values: Sequence[int | None]) -> float | None:
    """Median with 'never covered' as infinity; None when the median itself is never covered."""
    middle = float(np.median([math.inf if v is None else v for v in values]))
    return None if math.isinf(middle) else middle


def budget_needs(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """retriever -> median tokens and units needed, and the share of questions the full ranking covers."""
    by_retriever: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in _budget_rows(rows):
        by_retriever[row["retriever"]].append(row["budget"])
    return {retriever: {"median_tokens_needed": _median([s["tokens_needed"] for s in scores]),
                        "median_units_needed": _median([s["units_needed"] for s in scores]),
                        "covered": float(np.mean([s["tokens_needed"] is not None for s in scores])),
                        "n": len(scores)}
            for retriever, scores in by_retriever.items()}


def budget_summary(rows: Sequence[dict[str, Any]], tokenizer: str) -> dict[str, Any]:
    """summary.json's 'budget' entry: aggregates only."""
    return {"tokenizer": tokenizer, "budgets": list(BUDGETS), "recall": budget_averages(rows),
            "needs": budget_needs(rows)}


def budget_markdown(rows: Sequence[dict[str, Any]], tokenizer: str) -> str:
    """A table per budget (retrievers x overall and question types), then tokens needed per retriever."""
    table = budget_averages(rows)
    if not table:
        return "_no budget scores_\n"
    questions: dict[str, set[str]] = defaultdict(set)
    for row in _budget_rows(rows):
        questions[row["question_type"]].add(row["question_id"])
        questions["overall"].add(row["question_id"])
    types = sorted(t for t in questions if t != "overall")
    columns = ["overall"] + (["task-averaged"] if len(types) > 1 else []) + types
    head = [f"{c} ({len(questions[c])})" if c in questions else c for c in columns]
    lines = [f"Tokens counted with: {tokenizer}. A question counts when every evidence unit of the official "
             "gold (ids holding 'answer') is in the shortest prefix of whole returned units, walked over the full "
             "ranking (not cut at 50), whose texts add up to at most B tokens (no prompt overhead counted).", ""]
    for budget in BUDGETS:
        metric = f"evidence_recall@{budget}"
        lines += [f"### evidence recall within {budget} tokens", "",
                  "| retriever | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
        for retriever, by_type in table.items():
            cells = [f"{by_type[c][metric]:.3f}" if c in by_type else "-" for c in columns]
            lines.append(f"| {retriever} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### tokens needed to hold all the evidence", "",
              "| retriever | median tokens needed | median units needed | covered by the full ranking |",
              "|---|---:|---:|---:|"]
    for retriever, needs in budget_needs(rows).items():
        tokens, units = needs["median_tokens_needed"], needs["median_units_needed"]
        lines.append(f"| {retriever} | {'never' if tokens is None else f'{tokens:.0f}'} | "
                     f"{'never' if units is None else f'{units:g}'} | {needs['covered']:.3f} |")
    return "\n".join(lines) + "\n"


def plot_budget_recall(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Overall evidence_recall@B against the budget B, one line per retriever."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for retriever, by_type in budget_averages(rows).items():
        ax.plot(BUDGETS, [by_type["overall"][f"evidence_recall@{b}"] for b in BUDGETS], marker="o", label=retriever)
    ax.set_xscale("log", base=2)
    ax.minorticks_off()
    ax.set(xticks=BUDGETS, xticklabels=[str(b) for b in BUDGETS], ylim=(0, 1.02),
           xlabel="reader budget B (tokens)", ylabel="evidence recall within B tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path, title)


def _save(fig: Any, path: Path, title: str) -> None:
    """Title, lay out, write and close a figure (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
