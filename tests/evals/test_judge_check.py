"""The judge-check set and its scorer, with scripted judges only (no model)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection
from pathlib import Path

import pytest
from memagent_evals.judge_check.__main__ import main
from memagent_evals.judge_check.score import (
    KINDS,
    CheckTriple,
    as_item,
    check_judge,
    judge_agreement,
    load_check_set,
    warn_untrusted_judge,
    write_results,
)
from memagent_evals.longmemeval.judge import judge_prompt

from memagent import InputError, ScriptedLLM
from memagent.llm.base import ChatMessages

ALWAYS_TRUE = {"exact", "paraphrase", "verbose-correct"}
ALWAYS_FALSE = {"partial", "wrong-but-close", "refusal-answerable", "wrong-confident"}
MIXED = {"off-by-one", "refusal-unanswerable"}
ABSTENTION_TEMPLATE = "Does the model correctly identify the question as unanswerable?"


@pytest.fixture(scope="module")
def triples() -> list[CheckTriple]:
    return load_check_set()


def rule_judge(triples: list[CheckTriple], wrong_on: Collection[str] = ()) -> ScriptedLLM:
    """A judge that gives the human label for each triple's prompt, except on the ids in ``wrong_on``."""
    verdicts = {judge_prompt(as_item(t), t.response): t.label != (t.id in wrong_on) for t in triples}

    def reply(messages: ChatMessages) -> str:
        return "Yes" if verdicts[messages[-1]["content"]] else "No"

    return ScriptedLLM(reply, name="rule-judge")


# --- the check set ----------------------------------------------------------------------------------------------

def test_the_packaged_set_has_enough_of_every_kind(triples: list[CheckTriple]) -> None:
    assert len(triples) >= 72
    per_kind = Counter(t.kind for t in triples)
    assert set(per_kind) == set(KINDS)
    assert min(per_kind.values()) >= 8, per_kind
    assert len({t.id for t in triples}) == len(triples)


def test_each_kind_carries_the_labels_its_definition_says(triples: list[CheckTriple]) -> None:
    for kind in ALWAYS_TRUE:
        assert all(t.label for t in triples if t.kind == kind), kind
    for kind in ALWAYS_FALSE:
        assert not any(t.label for t in triples if t.kind == kind), kind
    for kind in MIXED:
        assert {t.label for t in triples if t.kind == kind} == {True, False}, kind
    share_true = sum(t.label for t in triples) / len(triples)
    assert 0.4 <= share_true <= 0.6  # roughly balanced, so a yes-sayer or a no-sayer scores near 0.5


def test_unanswerable_cases_are_abstention_items(triples: list[CheckTriple]) -> None:
    unanswerable = [t for t in triples if t.kind == "refusal-unanswerable"]
    assert all(t.abstention and as_item(t).is_abstention for t in unanswerable)
    assert not any(as_item(t).is_abstention for t in triples if not t.abstention)
    assert all(t.question_type == "temporal-reasoning" for t in triples if t.kind == "off-by-one")


# --- the arithmetic ---------------------------------------------------------------------------------------------

def test_a_judge_that_always_says_yes_agrees_on_the_true_labels_only(triples: list[CheckTriple]) -> None:
    check = check_judge(ScriptedLLM("yes", name="yes-sayer"), triples, progress=False)
    assert check.n == len(triples) and check.judge == "yes-sayer"
    assert check.agreement == pytest.approx(sum(t.label for t in triples) / len(triples))
    assert check.yes_rate_wrong == 1.0 and check.yes_rate_correct == 1.0
    assert check.per_kind["exact"].agreement == 1.0 and check.per_kind["partial"].agreement == 0.0
    assert not check.trusted


def test_a_judge_that_always_says_no_accepts_nothing(triples: list[CheckTriple]) -> None:
    check = check_judge(ScriptedLLM("No."), triples, progress=False)
    assert check.agreement == pytest.approx(sum(not t.label for t in triples) / len(triples))
    assert check.yes_rate_wrong == 0.0 and check.yes_rate_correct == 0.0


def test_agreement_and_yes_rates_count_each_mistake(triples: list[CheckTriple]) -> None:
    # wrong on two wrong-answer triples (it accepts them) and one right-answer triple (it rejects it)
    mistakes = {"part-01", "close-02", "exact-03"}
    check = check_judge(rule_judge(triples, mistakes), triples, progress=False)
    wrong, correct = sum(not t.label for t in triples), sum(t.label for t in triples)
    assert check.agreement == pytest.approx((len(triples) - 3) / len(triples))
    assert check.yes_rate_wrong == pytest.approx(2 / wrong)
    assert check.yes_rate_correct == pytest.approx((correct - 1) / correct)
    partial = sum(t.kind == "partial" for t in triples)
    assert check.per_kind["partial"].agreement == pytest.approx((partial - 1) / partial)
    assert check.per_kind["verbose-correct"].agreement == 1.0
    assert {d.id for d in check.decisions if not d.agrees} == mistakes


def test_an_abstention_triple_gets_the_abstention_template(triples: list[CheckTriple]) -> None:
    unanswerable = next(t for t in triples if t.kind == "refusal-unanswerable")
    answerable = next(t for t in triples if t.kind == "refusal-answerable")
    fake = ScriptedLLM("no")
    check_judge(fake, [unanswerable, answerable], progress=False)
    first, second = (call[-1]["content"] for call in fake.calls)
    assert ABSTENTION_TEMPLATE in first and f"Explanation: {unanswerable.reference}" in first
    assert ABSTENTION_TEMPLATE not in second and f"Model Response: {answerable.response}" in second


# --- results and the warning ------------------------------------------------------------------------------------

def saved_with_agreement(triples: list[CheckTriple], mistakes: int, out: Path, name: str) -> None:
    sample = triples[:20]
    check = check_judge(rule_judge(sample, {t.id for t in sample[:mistakes]}), sample, progress=False)
    check.judge = name
    write_results(check, out, sample)


def test_the_warning_fires_for_an_unchecked_judge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = warn_untrusted_judge("never-checked", spec="http://h:8000/v1#m", results_dir=tmp_path)
    assert message is not None and "no judge-check result" in message
    assert "python -m memagent_evals.judge_check --judge 'http://h:8000/v1#m' --out" in message
    assert message in capsys.readouterr().err


def test_the_warning_fires_below_the_bar_and_not_above(triples: list[CheckTriple], tmp_path: Path) -> None:
    saved_with_agreement(triples, 3, tmp_path, "weak/judge")  # 17 of 20
    saved_with_agreement(triples, 1, tmp_path, "strong-judge")  # 19 of 20
    assert judge_agreement("weak/judge", tmp_path) == pytest.approx(0.85)
    assert judge_agreement("strong-judge", tmp_path) == pytest.approx(0.95)
    message = warn_untrusted_judge("weak/judge", results_dir=tmp_path)
    assert message is not None and "0.850" in message and "--judge weak/judge" in message
    assert warn_untrusted_judge("strong-judge", results_dir=tmp_path) is None


def test_results_hold_aggregates_and_each_decision(triples: list[CheckTriple], tmp_path: Path) -> None:
    saved_with_agreement(triples, 3, tmp_path, "http://host:8000/v1#Org/Model-7B")
    data = json.loads((tmp_path / "http_host_8000_v1_Org_Model-7B.json").read_text())
    assert data["n"] == 20 and data["agreement"] == pytest.approx(0.85) and data["trusted"] is False
    assert set(data["decisions"]) == {t.id for t in triples[:20]}
    assert set(data["per_kind"]) <= set(KINDS) and len(data["check_set_sha256"]) == 64
    text = (tmp_path / "http_host_8000_v1_Org_Model-7B.md").read_text()
    assert "| overall | 20 | 0.850 |" in text and "Disagreements (3)" in text


def test_the_command_loads_any_spec_and_writes_the_tables(
    triples: list[CheckTriple], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[str] = []

    def fake_load_llm(spec: str) -> ScriptedLLM:
        asked.append(spec)
        return ScriptedLLM("yes", name="fake-judge")

    monkeypatch.setattr("memagent.llm.load.load_llm", fake_load_llm)
    assert main(["--judge", "http://h:8000/v1#m", "--out", str(tmp_path), "--no-progress"]) == 0
    assert asked == ["http://h:8000/v1#m"]
    assert "| overall |" in capsys.readouterr().out
    assert judge_agreement("fake-judge", tmp_path) == pytest.approx(sum(t.label for t in triples) / len(triples))


def test_qa_runs_warn_about_an_unchecked_judge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from memagent_evals import cli

    class Stop(Exception):
        pass

    def stop(*args: object, **kwargs: object) -> None:
        raise Stop

    monkeypatch.chdir(tmp_path)  # no saved results here
    monkeypatch.setattr("memagent.llm.load.load_llm", lambda spec, **_: ScriptedLLM("yes", name=spec))
    monkeypatch.setattr(cli, "run_qa", stop)  # the warning comes before any reading
    args = cli.build_parser().parse_args(["longmemeval", "--data", "x.json", "--qa", "--judge", "judge-x"])
    with pytest.raises(Stop):
        cli.qa_main(args, [], "split", embedder=None, out=tmp_path)  # type: ignore[arg-type]
    assert "judge 'judge-x' has no judge-check result" in capsys.readouterr().err


# --- malformed sets ---------------------------------------------------------------------------------------------

def write_set(path: Path, *lines: dict | str) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


GOOD = {"id": "a", "question_type": "multi-session", "question": "How many?", "reference": "3", "response": "3",
        "label": True, "kind": "exact", "why": "same"}


@pytest.mark.parametrize(("change", "field"), [
    ({"label": "yes"}, "label"),
    ({"kind": "close-ish"}, "kind"),
    ({"question_type": "trivia"}, "question_type"),
    ({"kind": "refusal-unanswerable"}, "abstention"),
    ({"colour": "red"}, "colour"),
])
def test_a_malformed_line_names_its_line_and_field(tmp_path: Path, change: dict, field: str) -> None:
    path = write_set(tmp_path / "set.jsonl", GOOD, {**GOOD, "id": "b", **change})
    with pytest.raises(InputError, match=f"set.jsonl line 2: field '{field}'"):
        load_check_set(path)


def test_a_missing_field_duplicate_id_or_bad_json_is_named(tmp_path: Path) -> None:
    missing = {k: v for k, v in GOOD.items() if k != "response"}
    with pytest.raises(InputError, match="line 1: field 'response': Field required"):
        load_check_set(write_set(tmp_path / "a.jsonl", missing))
    with pytest.raises(InputError, match="line 2: id: duplicate id 'a' \\(first on line 1\\)"):
        load_check_set(write_set(tmp_path / "b.jsonl", GOOD, GOOD))
    with pytest.raises(InputError, match="line 2: not JSON"):
        load_check_set(write_set(tmp_path / "c.jsonl", GOOD, "{label: true"))
