"""The official LongMemEval metric definitions, checked on cases worked by hand."""

import math

import pytest
from memagent_evals.longmemeval.metrics import (
    dcg,
    evaluate,
    evaluate_turns_as_sessions,
    ndcg,
    score_ranking,
    strip_turn,
)


def test_dcg_weighs_rank_two_like_rank_one() -> None:
    # official discount: 1 at rank 1, log2(rank) after: 1 + 1/log2(2) + 1/log2(3) = 1 + 1 + 0.63093
    assert dcg([1, 1, 1], 3) == pytest.approx(2.63093, abs=1e-5)
    assert dcg([0, 1], 2) == dcg([1, 0], 2) == 1.0
    assert dcg([], 5) == 0.0


def test_ndcg_and_recall_on_a_four_document_corpus() -> None:
    corpus = ["a", "answer_1", "b", "answer_2"]
    correct = {"answer_1", "answer_2"}
    ranking = [0, 1, 2, 3]
    # top 3 relevances [0, 1, 0] -> dcg 1/log2(2) = 1; ideal [1, 1, 0] -> 2; ndcg = 0.5
    # (the textbook discount would give 0.387: this pins the official one)
    assert ndcg(ranking, correct, corpus, 3) == pytest.approx(0.5)
    assert evaluate(ranking, correct, corpus, 3) == {"recall_any@3": 1.0, "recall_all@3": 0.0, "ndcg_any@3": 0.5}
    assert evaluate(ranking, correct, corpus, 4)["recall_all@4"] == 1.0


def test_no_gold_gives_zero_ndcg() -> None:
    assert ndcg([0, 1], set(), ["a", "b"], 2) == 0.0


def test_turn_ranking_scored_at_session_level_widens_k() -> None:
    corpus = ["answer_x_1_1", "noans_x_1_3", "s2_1", "s2_3", "s3_1"]
    ranking = [2, 3, 1, 4, 0]  # s2_1, s2_3, noans_x_1_3, s3_1, answer_x_1_1
    correct = {"answer_x_1_1"}
    assert strip_turn("answer_x_1_1") == "answer_x_1"
    # k=3 needs 3 distinct sessions: {s2, noans_x_1, s3} after 4 turns; the evidence turn is 5th
    assert evaluate_turns_as_sessions(ranking, correct, corpus, 3)["recall_any@3"] == 0.0
    # k=4 widens to 5 turns, reaching answer_x_1 at rank 5: ndcg = (1/log2 5) / 1 = 0.43068
    scores = evaluate_turns_as_sessions(ranking, correct, corpus, 4)
    assert scores["recall_all@4"] == 1.0
    assert scores["ndcg_any@4"] == pytest.approx(1 / math.log2(5))


def test_a_non_evidence_turn_of_an_evidence_session_does_not_count() -> None:
    # the official relabelling makes noans_x_1 a different session from answer_x_1
    corpus = ["answer_x_1_1", "noans_x_1_3", "s2_1"]
    assert evaluate_turns_as_sessions([1, 2, 0], {"answer_x_1_1"}, corpus, 1)["recall_any@1"] == 0.0


def test_score_ranking_reports_both_levels_for_turns_and_one_for_sessions() -> None:
    turn = score_ranking([0, 1], ["answer_a_1", "b_1"], "turn")
    assert set(turn) == {"session", "turn"} and turn["turn"]["recall_all@1"] == 1.0
    session = score_ranking([1, 0], ["answer_a", "b"], "session")
    assert set(session) == {"session"}
    assert session["session"]["recall_any@1"] == 0.0 and session["session"]["recall_any@3"] == 1.0
    assert len(session["session"]) == 18  # 3 metrics x k in 1, 3, 5, 10, 30, 50
