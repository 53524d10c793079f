"""The judge-check set: hand-labelled (question, reference, response) triples, and a scorer that says how often a
judge model agrees with the labels. ``python -m memagent_evals.judge_check --judge MODEL`` runs it."""

from .score import (
    TRUSTED_AGREEMENT,
    CheckTriple,
    JudgeCheck,
    check_judge,
    judge_agreement,
    load_check_set,
    warn_untrusted_judge,
)

__all__ = ["TRUSTED_AGREEMENT", "CheckTriple", "JudgeCheck", "check_judge", "judge_agreement", "load_check_set",
           "warn_untrusted_judge"]
