"""Scores of refusal over judged QA rows (``qa.run_qa``'s rows with the sure-probe asked).

A row's answer is *correct* when the judge said so; on an unanswerable question (LoCoMo's adversarial
category, ids ending ``_abs``) that means the reader refused. A method is a way to refuse:
- ``prompt only``: the reader refuses when its words say so (memagent before R-Tuning);
- ``likelihood``: also below a threshold of the answer's geometric-mean token probability;
- ``p(sure)``: also below a threshold of the sure-probe alone;
- ``r-tuning``: also below a threshold of R-Tuning's c = (likelihood + p(sure)) / 2.
Refusing is right on an unanswerable question and wrong on an answerable one; an answer that stands
keeps its judged label. Each threshold is fitted two ways: for the most right answers, and for the
most right answers among thresholds that cost answerable questions at most 3 points of accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memagent.answer.confidence import fit_threshold

from ..longmemeval.report import _save

# a confidence -> the row field that holds it
SCORES = {"likelihood": "prediction_confidence", "p(sure)": "sure_confidence", "r-tuning": "confidence"}
# how a threshold is fitted -> the most answerable accuracy it may cost (None: no limit)
OBJECTIVES = {"most right": None, "drop <= 3 pt": 0.03}
BINS = 10


def method_name(score: str, objective: str) -> str:
    return f"{score}, {objective}"


def _labels(rows: Sequence[dict[str, Any]]) -> tuple[list[bool], list[bool]]:
    return [bool(r["label"]) for r in rows], [r["question_id"].endswith("_abs") for r in rows]


def fit_thresholds(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per method (a confidence and an objective), the threshold fitted on these rows."""
    correct, unanswerable = _labels(rows)
    return {
        method_name(score, objective): fit_threshold([r[field] for r in rows], correct, unanswerable, drop)
        for score, field in SCORES.items() for objective, drop in OBJECTIVES.items()
    }


def refusal_scores(rows: Sequence[dict[str, Any]], thresholds: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per method: AP and AUROC of its score against correctness, then with its threshold the refusal
    rate, abstention accuracy (unanswerable questions refused), answerable and overall accuracy."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    correct, unanswerable = _labels(rows)
    both_kinds = 0 < sum(correct) < len(correct)  # AP and AUROC need right and wrong answers
    methods: dict[str, dict[str, Any]] = {}
    for name in ("prompt only", *thresholds):
        field, threshold = SCORES.get(name.partition(",")[0]), thresholds.get(name)
        scores = [r[field] for r in rows] if field else None
        refused = [
            bool(r["refused"]) or (scores is not None and threshold is not None and s < threshold)
            for r, s in zip(rows, scores or [None] * len(rows), strict=True)
        ]
        final = [
            (abstain if (no and not r["refused"]) else ok)
            for r, no, ok, abstain in zip(rows, refused, correct, unanswerable, strict=True)
        ]
        answerable = [f for f, u in zip(final, unanswerable, strict=True) if not u]
        abstained = [no for no, u in zip(refused, unanswerable, strict=True) if u]
        methods[name] = {
            "ap": float(average_precision_score(correct, scores)) if scores and both_kinds else None,
            "auroc": float(roc_auc_score(correct, scores)) if scores and both_kinds else None,
            "threshold": threshold,
            "refused": float(np.mean(refused)),
            "abstention": float(np.mean(abstained)) if abstained else None,
            "abstention_n": len(abstained),
            "answerable": float(np.mean(answerable)) if answerable else None,
            "answerable_n": len(answerable),
            "overall": float(np.mean(final)),
        }
    return methods


def reliability(rows: Sequence[dict[str, Any]], field: str, bins: int = BINS) -> dict[str, Any]:
    """Equal-width confidence bins: mean confidence, accuracy and count per bin, and the expected
    calibration error (the count-weighted gap between the two)."""
    values = np.array([r[field] for r in rows], dtype=float)
    correct = np.array([bool(r["label"]) for r in rows], dtype=float)
    which = np.minimum((values * bins).astype(int), bins - 1)
    table = [
        {"confidence": float(values[which == b].mean()), "accuracy": float(correct[which == b].mean()),
         "n": int((which == b).sum())}
        for b in range(bins) if (which == b).any()
    ]
    ece = sum(row["n"] * abs(row["confidence"] - row["accuracy"]) for row in table) / max(1, len(rows))
    return {"bins": table, "ece": float(ece)}


def refusal_markdown(methods: dict[str, dict[str, Any]], calibration: dict[str, dict[str, Any]]) -> str:
    def cell(value: float | None, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    head = ["method", "AP", "AUROC", "threshold", "refused", "abstention (unanswerable)", "answerable acc",
            "overall acc", "ECE"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, m in methods.items():
        score = name.partition(",")[0]
        ece = calibration[score]["ece"] if score in calibration else None
        lines.append(
            f"| {name} | {cell(m['ap'])} | {cell(m['auroc'])} | {cell(m['threshold'])} | {cell(m['refused'], 2)} | "
            f"{cell(m['abstention'])} ({m['abstention_n']}) | {cell(m['answerable'])} ({m['answerable_n']}) | "
            f"{cell(m['overall'])} | {cell(ece)} |"
        )
    return "\n".join(lines) + "\n"


def plot_reliability(calibration: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy against confidence per bin, one line per score, the diagonal for a calibrated one;
    marker size shows how many answers a bin holds."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="calibrated")
    for name, found in calibration.items():
        bins = found["bins"]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                label=f"{name} (ECE {found['ece']:.3f})")
        ax.scatter([b["confidence"] for b in bins], [b["accuracy"] for b in bins],
                   s=[8 + 4 * b["n"] for b in bins], alpha=0.25)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence (bin mean)", ylabel="judged accuracy in the bin")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    _save(fig, path, title)
