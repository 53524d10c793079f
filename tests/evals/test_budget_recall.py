"""Evidence recall within a reader budget: the prefix rule, the full ranking, the tokenizer choice, the tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from memagent_evals.longmemeval.budget import (
    BUDGETS,
    TokenCounter,
    Unit,
    budget_scores,
    char_counter,
    load_counter,
    tokens_to_cover,
)
from memagent_evals.longmemeval.load import load_items
from memagent_evals.longmemeval.report import budget_markdown, budget_summary, plot_budget_recall
from memagent_evals.longmemeval.run import run_retrieval

from tests.fakes import HashEmbedder


def word_counter(calls: list[list[str]] | None = None) -> TokenCounter:
    """One token per space-separated word, so a test writes its token counts as word counts."""
    def encode(texts: list[str]) -> list[int]:
        if calls is not None:
            calls.append(list(texts))
        return [len(t.split()) for t in texts]

    return TokenCounter("words", encode)


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def test_the_prefix_covers_all_evidence_exactly_at_the_budget_edge() -> None:
    units = [Unit(words(200, "a"), (0,)), Unit(words(300, "b"), (1,)), Unit(words(12, "c"), (2,)),
             Unit(words(5, "d"), (3,))]
    scores = budget_scores(units, {0, 2}, word_counter())
    assert scores["tokens_needed"] == 512 and scores["units_needed"] == 3  # 200 + 300 + 12: the last unit whole
    assert scores["evidence_recall@512"] == 1.0  # <= B, not < B
    one_more = [units[0], Unit(words(301, "b"), (1,)), *units[2:]]
    scores = budget_scores(one_more, {0, 2}, word_counter())
    assert scores["tokens_needed"] == 513
    assert scores["evidence_recall@512"] == 0.0 and scores["evidence_recall@1024"] == 1.0


def test_evidence_the_ranking_never_covers_scores_zero_at_every_budget() -> None:
    units = [Unit("x y", (0,)), Unit("z", (1,))]
    assert tokens_to_cover(units, {0, 7}, word_counter()) is None
    scores = budget_scores(units, {0, 7}, word_counter())
    assert scores["tokens_needed"] is None and scores["units_needed"] is None
    assert all(scores[f"evidence_recall@{b}"] == 0.0 for b in BUDGETS)


def test_a_session_unit_covers_all_its_evidence_turns_at_its_whole_cost() -> None:
    session = Unit(words(700, "s"), (4, 5, 6))  # a session standing for turns 4-6 (evidence: 4 and 6)
    rounds = [Unit(words(10, "r4"), (4,)), Unit(words(10, "r5"), (5,)), Unit(words(10, "r6"), (6,))]
    assert tokens_to_cover([Unit("a b c", (0,)), session], {4, 6}, word_counter()) == (703, 2)
    assert tokens_to_cover([rounds[2], rounds[1], rounds[0]], {4, 6}, word_counter()) == (30, 3)
    assert tokens_to_cover([rounds[0], rounds[2], rounds[1]], {4, 6}, word_counter()) == (20, 2)  # only the prefix
    # records the corpus has no id for (a greeting round) still cost the reader their tokens
    assert tokens_to_cover([Unit(words(9, "g"), ()), rounds[0]], {4}, word_counter()) == (19, 2)
    assert tokens_to_cover([], set(), word_counter()) == (0, 0)  # nothing to find: nothing to read


def test_the_whole_ranking_is_walked_past_rank_fifty() -> None:
    units = [Unit(words(5, f"u{n}_"), (n,)) for n in range(70)]
    scores = budget_scores(units, {59}, word_counter())  # evidence at rank 60
    assert scores["units_needed"] == 60 and scores["tokens_needed"] == 300
    assert scores["evidence_recall@512"] == 1.0


def test_token_counts_are_cached_per_text_and_only_the_prefix_is_counted() -> None:
    calls: list[list[str]] = []
    counter = word_counter(calls)
    units = [Unit("a b", (0,)), Unit("c", (1,)), Unit("never read", (2,))]
    tokens_to_cover(units, {1}, counter)
    tokens_to_cover(units, {1}, counter)  # a second retriever returning the same texts
    assert calls == [["a b", "c"]]
    assert char_counter().count(["", "abcd", "abcde"]) == [0, 1, 2]  # ceil(chars / 4)


def test_the_tokenizer_falls_back_to_chars_only_by_default(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEMAGENT_MODELS_DIR", str(tmp_path / "no-models"))
    assert load_counter("chars/4").name == "chars/4"
    fallback = load_counter(None)  # the packaged reader is not installed there
    assert fallback.name.startswith("chars/4 (fallback: qwen2.5-coder-1.5b-instruct")
    assert "not installed" in fallback.name
    with pytest.raises(ValueError, match="--budget-tokenizer qwen2.5-coder-0.5b-instruct"):
        load_counter("qwen2.5-coder-0.5b-instruct")  # asked for by name: an error, not another count
    with pytest.raises(ValueError, match="no tokenizer"):
        load_counter(str(tmp_path / "missing.gguf"))


def test_a_transformers_tokenizer_folder_counts_real_tokens() -> None:
    from memagent.embedding import resolve_model_path

    try:  # the packaged sentence embedder's folder: a real tokenizer, no language model
        folder = resolve_model_path("all-MiniLM-L6-v2")
    except Exception:  # noqa: BLE001
        pytest.skip("the packaged all-MiniLM-L6-v2 is not installed")
    counter = load_counter(folder)
    assert folder in counter.name
    assert counter.count(["hello world", "hello world", "hello " * 10]) == [2, 2, 10]  # no special tokens


def turn(role: str, content: str, has_answer: bool | None = None) -> dict:
    return {"role": role, "content": content} | ({} if has_answer is None else {"has_answer": has_answer})


def long_item() -> dict:
    """61 small sessions sharing no word with the question; the evidence is the last (rank 61 when unscored)."""
    sessions = [[turn("user", f"note number {n}"), turn("assistant", "ok")] for n in range(60)]
    sessions.append([turn("user", "hello", False), turn("assistant", "hi"),
                     turn("user", "my dog is a greyhound", True), turn("assistant", "nice")])
    ids = [f"filler_{n:05d}" for n in range(60)] + ["answer_dog_1"]
    return {"question_id": "q1", "question_type": "single-session-user", "question": "Which breed?",
            "answer": "greyhound", "question_date": "2023/06/01 (Thu) 10:00",
            "haystack_dates": [f"2023/05/{1 + n // 3:02d} (Mon) {10 + n % 3:02d}:00" for n in range(61)],
            "haystack_session_ids": ids, "haystack_sessions": sessions, "answer_session_ids": ["answer_dog_1"]}


def test_a_run_scores_evidence_beyond_rank_fifty_with_the_official_metrics_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    path.write_text(json.dumps([long_item()]))
    run = run_retrieval(load_items(path), ["bm25-session", "dense-round"], cache=tmp_path / "cache",
                        embedder=HashEmbedder(), counter=char_counter())
    assert run.budget_tokenizer == "chars/4"
    bm25, dense = run.rows
    # BM25 scores no session (no shared word): the official ranking is corpus order, the evidence 61st
    assert "answer_dog_1" not in bm25["ranked_ids"] and bm25["metrics"]["session"]["recall_all@50"] == 0.0
    sessions = [s for s in long_item()["haystack_sessions"]]
    texts = ["\n".join(f"{t['role']}: {t['content']}" for t in s) for s in sessions]  # a session record's value
    assert bm25["budget"]["units_needed"] == 61
    assert bm25["budget"]["tokens_needed"] == sum(char_counter().count(texts))
    assert bm25["budget"]["evidence_recall@1024"] == 1.0 and bm25["budget"]["evidence_recall@512"] == 0.0
    # rounds: the evidence is one turn, its round alone is what must be read
    assert dense["level"] == "turn" and dense["budget"]["tokens_needed"] is not None
    assert dense["budget"]["units_needed"] <= 123  # 60 x 1 + 2 rounds per session, at most


def test_budget_tables_have_one_per_budget_and_the_tokens_needed(tmp_path: Path) -> None:
    def row(qid: str, qtype: str, retriever: str, tokens: int | None, units: int | None) -> dict:
        scores = budget_scores([], set(), char_counter())
        scores.update(tokens_needed=tokens, units_needed=units,
                      **{f"evidence_recall@{b}": float(tokens is not None and tokens <= b) for b in BUDGETS})
        return {"question_id": qid, "question_type": qtype, "retriever": retriever, "budget": scores}

    rows = [row("q1", "single-hop", "bm25-session", 3000, 2), row("q2", "multi-hop", "bm25-session", None, None),
            row("q3", "multi-hop", "bm25-session", 900, 1),
            row("q1", "single-hop", "dense-round", 100, 3), row("q2", "multi-hop", "dense-round", 600, 12),
            row("q3", "multi-hop", "dense-round", 5000, 90)]
    text = budget_markdown(rows, "chars/4")
    assert text.startswith("Tokens counted with: chars/4.")
    for b in BUDGETS:
        assert f"### evidence recall within {b} tokens" in text
    assert "| retriever | overall (3) | task-averaged | multi-hop (2) | single-hop (1) |" in text
    within_1024 = text.split("### evidence recall within 1024 tokens")[1]
    assert "| bm25-session | 0.333 | 0.250 | 0.500 | 0.000 |" in within_1024.splitlines()[4]
    assert "| dense-round | 0.667 | 0.750 | 0.500 | 1.000 |" in within_1024.splitlines()[5]
    assert "| bm25-session | 3000 | 2 | 0.667 |" in text  # median of 900, 3000, never
    assert "| dense-round | 600 | 12 | 1.000 |" in text
    summary = budget_summary(rows, "chars/4")
    assert summary["recall"]["dense-round"]["overall"]["evidence_recall@4096"] == pytest.approx(2 / 3)
    assert summary["needs"]["bm25-session"]["median_tokens_needed"] == 3000.0
    assert "q1" not in json.dumps(summary)  # aggregates only
    plot_budget_recall(rows, tmp_path / "budget_recall.png", "test")
    assert (tmp_path / "budget_recall.png").read_bytes()[:4] == b"\x89PNG"
