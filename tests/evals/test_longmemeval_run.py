"""Loading official-schema files, mapping memagent records to official corpus ids, and a real run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from memagent_evals.longmemeval.load import Item, load_items, split_name
from memagent_evals.longmemeval.retrieval import build_corpus
from memagent_evals.longmemeval.run import has_user_evidence, run_retrieval

from memagent import InputError


def turn(role: str, content: str, has_answer: bool | None = None) -> dict:
    return {"role": role, "content": content} | ({} if has_answer is None else {"has_answer": has_answer})


def make_item(**changes) -> dict:
    item = {
        "question_id": "q1",
        "question_type": "single-session-user",
        "question": "What breed is my dog?",
        "answer": "a greyhound",
        "question_date": "2023/06/01 (Thu) 10:00",
        "haystack_dates": ["2023/05/01 (Mon) 09:00", "2023/05/02 (Tue) 09:00", "2023/05/03 (Wed) 09:00"],
        "haystack_session_ids": ["s_garden", "answer_dog_1", "s_tax"],
        "haystack_sessions": [
            [turn("user", "How deep should I plant tulip bulbs?"), turn("assistant", "About 20 cm.")],
            [turn("user", "Any tips for grooming?", False), turn("assistant", "Brush weekly."),
             turn("user", "My dog is a greyhound, she has a thin coat.", True), turn("assistant", "Use a soft mitt.")],
            [turn("user", "When are taxes due this year?"), turn("assistant", "Usually in April.")],
        ],
        "answer_session_ids": ["answer_dog_1"],
    }
    return item | changes


def write(tmp_path: Path, items: list[dict], name: str = "longmemeval_s_cleaned.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(items, indent=4))
    return path


def test_official_files_load_unchanged_and_errors_name_the_field(tmp_path: Path) -> None:
    (item,) = load_items(write(tmp_path, [make_item(answer=3)]))
    assert item.answer == "3" and item.haystack_sessions[1][2].has_answer
    broken = make_item()
    del broken["question"]
    with pytest.raises(InputError, match=r"^item\[0\] \(q1\)\.question: Field required"):
        load_items(write(tmp_path, [broken]))
    with pytest.raises(InputError, match=r"must have the same length"):
        load_items(write(tmp_path, [make_item(haystack_dates=["2023/05/01 (Mon) 09:00"])]))
    with pytest.raises(InputError, match=r"^item\[0\] \(q1\)\.haystack_dates\[1\]: cannot parse"):
        load_items(write(tmp_path, [make_item(haystack_dates=["2023/05/01 (Mon) 09:00", "May 2nd", "x"])]))


def test_split_names() -> None:
    assert split_name(Path("longmemeval_s_cleaned.json")) == "S (cleaned)"
    assert split_name(Path("longmemeval_m.json")) == "M"
    assert split_name(Path("longmemeval_oracle.json")) == "oracle"


def test_corpus_ids_follow_the_official_turn_numbering_and_noans_rule() -> None:
    item = Item.model_validate(make_item())
    turns = build_corpus(item, "round")
    # user turns only, numbered by position in the session (1-based, assistant turns counted)
    assert turns.ids == ["s_garden_1", "noans_dog_1_1", "answer_dog_1_3", "s_tax_1"]
    assert sorted(i for found in turns.indices_of_record.values() for i in found) == [0, 1, 2, 3]
    assert build_corpus(item, "session").ids == ["s_garden", "answer_dog_1", "s_tax"]


def test_an_evidence_session_without_user_side_evidence_is_relabelled_noans() -> None:
    sessions = make_item()["haystack_sessions"]
    sessions[1] = [turn("user", "Any tips for grooming?", False), turn("assistant", "Brush weekly.", True)]
    item = Item.model_validate(make_item(haystack_sessions=sessions))
    assert build_corpus(item, "session").ids == ["s_garden", "noans_dog_1", "s_tax"]
    assert not has_user_evidence(item)


def test_a_repeated_round_maps_to_every_turn_it_stands_for() -> None:
    sessions = make_item()["haystack_sessions"]
    sessions[1] = [turn("user", "ok", False), turn("assistant", "sure"),
                   turn("user", "ok", True), turn("assistant", "sure")]
    corpus = build_corpus(Item.model_validate(make_item(haystack_sessions=sessions)), "round")
    assert sorted(corpus.indices_of_record.values(), key=len)[-1] == [1, 2]  # noans_dog_1_1 and answer_dog_1_3


def test_a_retrieval_run_scores_every_retriever_and_a_warm_run_embeds_nothing(tmp_path: Path, embedder) -> None:
    no_user_evidence = make_item(question_id="q2")
    no_user_evidence["haystack_sessions"][1][2]["has_answer"] = False
    items = load_items(write(tmp_path, [make_item(), make_item(question_id="q1_abs"), no_user_evidence]))
    names = ["bm25-session", "dense-round", "memagent"]
    cold = run_retrieval(items, names, cache=tmp_path / "cache", embedder=embedder, out=tmp_path / "rows.jsonl")
    assert cold.skipped_abstention == 1 and cold.skipped_no_user_evidence == 1 and len(cold.rows) == 3
    for row in cold.rows:
        assert row["metrics"]["session"]["recall_all@1"] == 1.0, row["retriever"]
    memagent = next(r for r in cold.rows if r["retriever"] == "memagent")
    assert memagent["ranked_ids"][0] == "answer_dog_1_3"
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 3
    warm = run_retrieval(items, names, cache=tmp_path / "cache", embedder=embedder)
    assert cold.texts_embedded > 0 and warm.texts_embedded == 0
    assert [r["metrics"] for r in warm.rows] == [r["metrics"] for r in cold.rows]


SHARED = os.environ.get("MEMAGENT_SHARED_DATA")


@pytest.mark.skipif(not SHARED or not Path(SHARED, "longmemeval/oracle_sample3.json").exists(),
                    reason="set MEMAGENT_SHARED_DATA to the shared data folder")
def test_the_official_oracle_sample_loads_without_conversion() -> None:
    items = load_items(Path(SHARED or "", "longmemeval/oracle_sample3.json"))
    assert [i.question_type for i in items] == ["temporal-reasoning", "knowledge-update", "temporal-reasoning"]
    assert items[2].is_abstention


def test_qa_answers_in_every_context_and_writes_official_hypotheses(tmp_path: Path, embedder) -> None:
    from memagent_evals.longmemeval.qa import qa_table, run_qa

    from memagent import ScriptedLLM

    items = load_items(write(tmp_path, [make_item(), make_item(question_id="q9_abs")]))

    def reader(messages) -> str:
        prompt = messages[-1]["content"]
        return "NOTES:\nm1: greyhound\nANSWER: a greyhound" if "greyhound" in prompt else "ANSWER: I don't know."

    judge = ScriptedLLM(lambda messages: "yes" if "Model Response: a greyhound" in messages[0]["content"] else "no")
    run = run_qa(items, ["memagent", "full-history", "oracle"], reader=ScriptedLLM(reader), judge_llm=judge,
                 cache=tmp_path / "cache", embedder=embedder, out=tmp_path / "qa", budget=10_000)
    assert len(run.rows) == 6
    assert all(r["label"] and r["f1"] == 1.0 for r in run.rows)
    lines = (tmp_path / "qa" / "hypotheses_oracle.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"question_id": "q1", "hypothesis": "a greyhound",
                                    "autoeval_label": {"model": "scripted", "label": True}}
    table = qa_table(run.rows)
    assert "| memagent | 1.000 | 1.000 | 1.000 | 1.000 (1) |" in table


def test_qa_scores_aggregate_per_context_and_plot_without_question_ids(tmp_path: Path) -> None:
    from memagent_evals.longmemeval.qa import qa_scores
    from memagent_evals.qa_plot import plot_qa

    def row(qid: str, context: str, label: bool, f1: float) -> dict:
        return {"question_id": qid, "question_type": "single-session-user", "context": context, "label": label,
                "f1": f1, "em": 0.0, "refused": not label, "seconds": 2.0, "prompt_tokens": 90,
                "completion_tokens": 10, "generate_seconds": 1.0}

    rows = [row("q1", "memagent", True, 1.0), row("q2", "memagent", False, 0.0), row("q3_abs", "oracle", True, 0.5)]
    scores = qa_scores(rows)
    assert scores["memagent"]["overall"] == 0.5 and scores["memagent"]["tokens_per_second"] == 100.0
    assert scores["oracle"]["abstention"] == 1.0 and scores["memagent"]["abstention"] is None
    summary = {"data": "d.json", "questions": 2, "reader": "r", "judge": "j", "scores": scores}
    assert "q1" not in json.dumps(summary)  # what is committed carries no benchmark ids
    plot_qa([summary, summary], tmp_path / "qa.png")
    assert (tmp_path / "qa.png").read_bytes()[:4] == b"\x89PNG"


def test_full_history_keeps_the_newest_sessions_within_the_budget(tmp_path: Path) -> None:
    from memagent_evals.longmemeval.qa import fit_budget, session_passages

    from memagent import ScriptedLLM

    item = Item.model_validate(make_item())
    # ScriptedLLM counts words: tax 11, dog 24, garden 12 -> 11 + 24 = 35 fits 40, + 12 does not
    kept = fit_budget(ScriptedLLM("x"), session_passages(item), budget_tokens=40)
    assert [p.id for p in kept] == ["s_tax", "answer_dog_1"]  # newest first; the garden session no longer fits
    # with room left, the session that does not fit is cut to it, its beginning kept
    cut = fit_budget(ScriptedLLM("x"), session_passages(item), budget_tokens=20, min_cut=5)
    assert [p.id for p in cut] == ["s_tax", "answer_dog_1"]
    assert len(cut[1].text.split()) <= 9 and cut[1].text.startswith("user: Any tips for grooming?")


def test_baselines_keep_every_design_switch_off_whatever_the_defaults() -> None:
    from memagent_evals.longmemeval.retrieval import RETRIEVERS

    from memagent import MemoryConfig

    assert MemoryConfig().retrieval.time_aware  # the default turns it on ...
    for name in ("bm25-session", "dense-session-kv", "dense-round"):
        config = MemoryConfig.model_validate(RETRIEVERS[name])
        assert not config.retrieval.time_aware and config.expansion.kind == "none", name  # ... a baseline never
        assert len(config.retrieval.retrievers) == 1, name


def test_ablation_configurations_that_store_the_same_records_share_one_store(tmp_path: Path, embedder) -> None:
    from memagent_evals.longmemeval.report import overview_table
    from memagent_evals.longmemeval.retrieval import RETRIEVERS, HaystackIndex

    def collection(name: str) -> str:
        return HaystackIndex(name, RETRIEVERS[name], tmp_path, embedder).memory.config.store.collection

    assert collection("round/K=V") == collection("round+ctx/K=V/time") == collection("memagent")
    assert collection("round/K=V") != collection("session/K=V") != collection("session/K=V+keyphrases")
    items = load_items(write(tmp_path, [make_item()]))
    names = ["round/K=V", "round+ctx/K=V/time", "session/K=V"]
    run = run_retrieval(items, names, cache=tmp_path / "cache", embedder=embedder)
    seconds, records, expanded = run.index_cost["round/K=V"]
    assert records == 4 and seconds > 0 and expanded == 0  # four rounds, stored once for both round rows
    assert run.index_cost["round+ctx/K=V/time"][1] == 0
    table = overview_table(run.rows, run.index_cost)
    assert table.count("\n") == 2 + len(names) and "| round+ctx/K=V/time | 1.000 |" in table


def test_an_interrupted_qa_run_resumes_from_its_journals(tmp_path: Path, embedder) -> None:
    from memagent_evals.longmemeval.qa import run_qa

    from memagent import ScriptedLLM

    items = load_items(write(tmp_path, [make_item(), make_item(question_id="q2"), make_item(question_id="q3")]))
    answered: list[int] = []

    def reader(messages) -> str:
        answered.append(1)
        if len(answered) == 3:
            raise KeyboardInterrupt  # killed while answering the third question
        return "ANSWER: a greyhound"

    judge = ScriptedLLM("yes")
    options = {"cache": tmp_path / "cache", "embedder": embedder, "out": tmp_path / "qa", "budget": 10_000}
    with pytest.raises(KeyboardInterrupt):
        run_qa(items, ["oracle"], reader=ScriptedLLM(reader), judge_llm=judge, **options)
    assert len((tmp_path / "qa" / "answers.jsonl").read_text().splitlines()) == 1 + 2  # setup line + 2 answers
    run = run_qa(items, ["oracle"], reader=ScriptedLLM(reader), judge_llm=judge, **options)
    assert run.resumed == 2 and len(answered) == 4  # only the third question was read again
    assert [r["question_id"] for r in run.rows] == ["q1", "q2", "q3"] and all(r["label"] for r in run.rows)
    assert len(judge.calls) == 3
    again = run_qa(items, ["oracle"], reader=ScriptedLLM(reader), judge_llm=judge, **options)
    assert len(answered) == 4 and len(judge.calls) == 3 and again.rows == run.rows  # all done: no model call
    with pytest.raises(ValueError, match="was written with .* pass another --out"):
        run_qa(items, ["oracle"], reader=ScriptedLLM(reader, name="other"), judge_llm=judge, **options)


def test_the_oracle_context_is_the_evidence_rounds() -> None:
    from memagent_evals.longmemeval.qa import evidence_passages

    item = Item.model_validate(make_item())
    (passage,) = evidence_passages(item)
    assert passage.text.startswith("user: My dog is a greyhound") and "soft mitt" in passage.text
    unmarked = make_item()
    for session in unmarked["haystack_sessions"]:
        for t in session:
            t.pop("has_answer", None)
    assert [p.id for p in evidence_passages(Item.model_validate(unmarked))] == ["answer_dog_1"]  # the session
