"""Summaries people compare: a Markdown table per level and question type, and recall@k curves."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
