"""Refusal, measured: does a confidence tell the reader's right answers from its wrong ones (average
precision, AUROC, a reliability diagram), and what does a threshold fitted on training conversations
do on test ones: abstention on unanswerable questions against accuracy on answerable ones (R-Tuning)."""

from .report import (
    SCORES,
    fit_thresholds,
    plot_reliability,
    refusal_markdown,
    refusal_scores,
    reliability,
)

__all__ = ["SCORES", "fit_thresholds", "plot_reliability", "refusal_markdown", "refusal_scores", "reliability"]
