"""Refusal scores over judged rows: thresholds, abstention against answerable accuracy, AP, reliability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from memagent_evals.refusal import fit_thresholds, plot_reliability, refusal_markdown, refusal_scores, reliability


def row(qid: str, label: bool, likelihood: float, c: float, refused: bool = False) -> dict:
    return {"question_id": qid, "context": "memagent", "label": label, "refused": refused,
            "prediction_confidence": likelihood, "sure_confidence": 2 * c - likelihood, "confidence": c}


ROWS = [
    row("q1", True, 0.9, 0.9),
    row("q2", True, 0.3, 0.8),  # right but unlikely: only c keeps it
    row("q3", False, 0.8, 0.2),  # wrong and likely: only c refuses it
    row("q4_abs", False, 0.7, 0.3),  # unanswerable, answered anyway
    row("q5_abs", True, 0.1, 0.1, refused=True),  # unanswerable, refused in words
]


def test_thresholds_and_final_answers_by_hand() -> None:
    thresholds = fit_thresholds(ROWS)
    # c: refusing below 0.8 turns q4_abs right and costs nothing (q3 was wrong): 4 of 5 right
    assert thresholds["r-tuning, most right"] == 0.8
    assert thresholds["r-tuning, drop <= 3 pt"] == 0.8  # it refuses no right answer to an answerable question
    methods = refusal_scores(ROWS, thresholds)
    prompt, c = methods["prompt only"], methods["r-tuning, most right"]
    assert prompt["overall"] == pytest.approx(3 / 5) and prompt["abstention"] == 0.5 and prompt["refused"] == 0.2
    assert prompt["ap"] is None and prompt["threshold"] is None
    assert c["overall"] == pytest.approx(4 / 5) and c["abstention"] == 1.0 and c["answerable"] == pytest.approx(2 / 3)
    assert c["refused"] == pytest.approx(3 / 5)  # q3, q4_abs below 0.8, q5_abs in words
    # c ranks right q1, q2 over wrong q3, q4 and right q5 last: AP (1 + 1 + 3/5) / 3; 4 of 6 pairs in order
    assert c["ap"] == pytest.approx(2.6 / 3) and c["auroc"] == pytest.approx(4 / 6)
    assert methods["likelihood, most right"]["auroc"] == pytest.approx(2 / 6)  # q1 over both, q2 and q5 neither
    assert methods["p(sure), most right"]["auroc"] == pytest.approx(1.0)  # 2c - likelihood: right .9 1.3 .1, wrong < 0
    # a fixed threshold from elsewhere is applied as given, not refitted
    fixed = refusal_scores(ROWS, {"r-tuning, most right": 0.0})
    assert fixed["r-tuning, most right"]["overall"] == prompt["overall"] and len(fixed) == 2


def test_reliability_bins_and_expected_calibration_error(tmp_path: Path) -> None:
    found = reliability(ROWS, "confidence", bins=2)  # [0, .5): c .2 .3 .1, one right; [.5, 1]: .9 .8, both right
    assert [b["n"] for b in found["bins"]] == [3, 2]
    assert found["bins"][0]["accuracy"] == pytest.approx(1 / 3)
    assert found["bins"][1]["confidence"] == pytest.approx(0.85)
    assert found["ece"] == pytest.approx((3 * abs(0.2 - 1 / 3) + 2 * abs(0.85 - 1.0)) / 5)
    calibration = {"r-tuning": found, "likelihood": reliability(ROWS, "prediction_confidence")}  # no p(sure): no ECE
    plot_reliability(calibration, tmp_path / "r.png", "title")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    table = refusal_markdown(refusal_scores(ROWS, fit_thresholds(ROWS)), calibration)
    assert "| r-tuning, most right | 0.867 | 0.667 | 0.800 | 0.60 | 1.000 (2) | 0.667 (3) | 0.800 | 0.140 |" in table
    assert "| p(sure), most right |" in table and table.count("|\n") == 2 + 1 + 6


def test_the_cli_fits_thresholds_on_a_training_run_and_applies_them_to_a_test_run(tmp_path: Path) -> None:
    import argparse

    from memagent_evals.cli import refusal_main

    train, test = tmp_path / "train", tmp_path / "test"
    train.mkdir(), test.mkdir()
    options = {"refusal": "memories", "contexts": ["memagent"]}
    refusal_main(argparse.Namespace(thresholds=None, **options), ROWS, train, "t")
    fitted = json.loads((train / "thresholds.json").read_text())
    assert fitted["memagent"]["r-tuning, most right"] == 0.8 and (train / "reliability_memagent.png").exists()
    others = [row("t1", True, 0.5, 0.7), row("t2_abs", False, 0.6, 0.75)]
    text = refusal_main(argparse.Namespace(thresholds=train / "thresholds.json", **options), others, test, "t")
    assert "thresholds fitted on" in text and str(train / "thresholds.json") in text
    scores = json.loads((test / "refusal.json").read_text())["memagent"]["methods"]
    c = scores["r-tuning, most right"]
    assert c["abstention"] == 1.0 and c["answerable"] == 0.0  # both below 0.8
    assert not (test / "thresholds.json").exists()  # a test run never writes thresholds


def test_tuning_examples_rebuild_the_prompt_the_reader_saw_and_take_the_judges_labels(tmp_path: Path) -> None:
    from memagent_evals.longmemeval.load import load_items
    from memagent_evals.refusal.tune import build_examples, judged_rows

    from memagent import ScriptedLLM
    from memagent.answer.rtuning import REFUSAL
    from tests.evals.test_longmemeval_run import make_item, write

    items = load_items(write(tmp_path, [make_item(), make_item(question_id="q2_abs")]))
    run = tmp_path / "run"
    run.mkdir()
    setup = {"reader": "scripted", "prompt": "direct-first", "k": 5, "budget": 10_000, "sure_probe": "memories"}
    answers = [{"setup": setup}, *({"question_id": q, "context": "memagent"} for q in ("q1", "q2_abs"))]
    judged = [{"setup": {"judge": "j"}}, {"question_id": "q1", "context": "memagent", "label": False},
              {"question_id": "q2_abs", "context": "memagent", "label": True}]
    (run / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in answers))
    (run / "judged.jsonl").write_text("".join(json.dumps(r) + "\n" for r in judged))
    found_setup, rows = judged_rows(run)
    assert found_setup == setup and [(r["question_id"], r["label"]) for r in rows] == [("q1", False), ("q2_abs", True)]
    examples = build_examples(items, rows, setup, ScriptedLLM("x"), tmp_path / "cache", "unsure")
    wrong, unanswerable = examples
    assert "greyhound" in wrong.messages[-1]["content"] and "What breed is my dog?" in wrong.messages[-1]["content"]
    assert (wrong.answer, wrong.sure) == ("a greyhound", False)  # the reference, and unsure: the reader was wrong
    assert (unanswerable.answer, unanswerable.sure) == (REFUSAL, False)
