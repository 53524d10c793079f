"""Scalable haystacks on small items written for these tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from memagent_evals.haystack import build_haystack, count_tokens, filler_pool, main, parse_lme_date, session_tokens

OFFICIAL_KEYS = ["question_id", "question_type", "question", "answer", "question_date", "haystack_dates",
                 "haystack_session_ids", "haystack_sessions", "answer_session_ids"]


def _exchange(user: str, reply: str, has_answer: bool = False) -> list[dict]:
    return [{"role": "user", "content": user, "has_answer": has_answer},
            {"role": "assistant", "content": reply}]


def _item() -> dict:
    """Two evidence sessions a week apart and one distractor, question a few days later."""
    return {
        "question_id": "q1",
        "question_type": "knowledge-update",
        "question": "Where does my sister live now?",
        "answer": "Porto",
        "question_date": "2023/06/20 (Tue) 18:00",
        "haystack_dates": ["2023/06/12 (Mon) 09:00", "2023/06/01 (Thu) 10:00", "2023/06/05 (Mon) 11:00"],
        "haystack_session_ids": ["answer_b", "answer_a", "plain_c"],
        "haystack_sessions": [
            _exchange("My sister moved to Porto last week.", "That is a big change!", has_answer=True),
            _exchange("My sister lives in Lyon.", "Noted, Lyon.", has_answer=True),
            _exchange("Can you suggest a pasta recipe?", "Try carbonara with guanciale."),
        ],
        "answer_session_ids": ["answer_a", "answer_b"],
    }


def _pool(count: int = 40) -> list[list[dict]]:
    """Distinct filler sessions of varying length."""
    return [_exchange(f"Filler question number {k} about topic {k % 7}?", "A reply. " * (1 + k % 5))
            for k in range(count)]


def _tokens(item: dict) -> int:
    return sum(session_tokens(session) for session in item["haystack_sessions"])


def test_count_tokens_counts_words_and_punctuation():
    assert count_tokens("Hello, world! It's 7 km.") == 10  # Hello , world ! It ' s 7 km .
    assert count_tokens("") == 0


def test_evidence_sessions_kept_verbatim_once_with_their_dates():
    item = _item()
    out = build_haystack(item, _pool(), target_tokens=300, seed=1)
    assert list(out) == OFFICIAL_KEYS
    for session_id, date, session in zip(item["haystack_session_ids"], item["haystack_dates"],
                                         item["haystack_sessions"]):
        if session_id in item["answer_session_ids"]:
            assert out["haystack_session_ids"].count(session_id) == 1
            position = out["haystack_session_ids"].index(session_id)
            assert out["haystack_sessions"][position] == session
            assert out["haystack_dates"][position] == date
            assert sum(s == session for s in out["haystack_sessions"]) == 1
    assert "plain_c" not in out["haystack_session_ids"]
    assert out["answer_session_ids"] == item["answer_session_ids"]
    assert {key: out[key] for key in OFFICIAL_KEYS[:5]} == {key: item[key] for key in OFFICIAL_KEYS[:5]}


def test_token_total_reaches_the_target_and_overshoots_by_less_than_one_session():
    pool = _pool()
    largest = max(session_tokens(session) for session in pool)
    for target in (100, 250, 400):
        out = build_haystack(_item(), pool, target_tokens=target, seed=3)
        assert target <= _tokens(out) < target + largest


def test_dates_strictly_increase_and_precede_the_question():
    out = build_haystack(_item(), _pool(), target_tokens=400, seed=5)
    moments = [parse_lme_date(date) for date in out["haystack_dates"]]
    assert all(earlier < later for earlier, later in zip(moments, moments[1:]))
    assert moments[-1] < parse_lme_date(out["question_date"])


def test_start_bounds_the_filler_dates():
    out = build_haystack(_item(), _pool(), target_tokens=400, seed=5, start="2023/05/25 (Thu) 00:00")
    assert min(out["haystack_dates"]) >= "2023/05/25"  # same-format dates sort as text


def test_evidence_minutes_apart_still_fits_many_fillers():
    item = _item()
    item["haystack_dates"] = ["2023/06/12 (Mon) 09:01", "2023/06/12 (Mon) 09:00", "2023/06/05 (Mon) 11:00"]
    out = build_haystack(item, _pool(200), target_tokens=3000, seed=0)
    moments = [parse_lme_date(date) for date in out["haystack_dates"]]
    assert all(earlier < later for earlier, later in zip(moments, moments[1:]))


def test_same_seed_same_output_other_seed_other_output():
    first = build_haystack(_item(), _pool(), target_tokens=400, seed=7)
    assert build_haystack(_item(), _pool(), target_tokens=400, seed=7) == first
    assert build_haystack(_item(), _pool(), target_tokens=400, seed=8) != first


def test_filler_ids_never_contain_answer():
    out = build_haystack(_item(), _pool(), target_tokens=400, seed=2)
    fillers = [sid for sid in out["haystack_session_ids"] if sid not in _item()["answer_session_ids"]]
    assert fillers == [f"filler_{k:05d}" for k in range(len(fillers))]
    assert [sid for sid in out["haystack_session_ids"] if "answer" in sid] == ["answer_a", "answer_b"]


def test_a_pool_copy_of_the_evidence_is_not_used_as_filler():
    item = _item()
    pool = [copy.deepcopy(item["haystack_sessions"][0]), *_pool(10)]
    # A target that takes every other pool session, so the copy would be drawn if it were allowed.
    evidence = session_tokens(item["haystack_sessions"][0]) + session_tokens(item["haystack_sessions"][1])
    target = evidence + sum(session_tokens(session) for session in pool[1:])
    out = build_haystack(item, pool, target_tokens=target, seed=0)
    assert sum(session == item["haystack_sessions"][0] for session in out["haystack_sessions"]) == 1


def test_too_small_a_pool_raises():
    with pytest.raises(ValueError, match="pool"):
        build_haystack(_item(), _pool(3), target_tokens=5000)


def test_input_is_not_modified():
    item, pool = _item(), _pool()
    before = copy.deepcopy((item, pool))
    out = build_haystack(item, pool, target_tokens=300)
    out["haystack_sessions"][0][0]["content"] = "changed"
    assert (item, pool) == before


def test_filler_pool_takes_distinct_non_evidence_sessions():
    first, second = _item(), _item()
    second["haystack_sessions"][2][0]["has_answer"] = False  # same content, other flags: still a duplicate
    second["haystack_session_ids"].append("plain_d")
    second["haystack_dates"].append("2023/06/06 (Tue) 11:00")
    second["haystack_sessions"].append(_exchange("What is a good running shoe?", "Try a few in a shop."))
    pool = filler_pool([first, second])
    assert pool == [first["haystack_sessions"][2], second["haystack_sessions"][3]]


def test_command_line_builds_one_haystack_per_item(tmp_path: Path):
    data, pool_file, out = tmp_path / "data.json", tmp_path / "pool.json", tmp_path / "out.json"
    data.write_text(json.dumps([_item(), {**_item(), "question_id": "q2"}]))
    filler_items = [{**_item(), "haystack_session_ids": [f"p{k}"], "haystack_dates": ["2023/01/01 (Sun) 10:00"],
                     "haystack_sessions": [session], "answer_session_ids": []} for k, session in enumerate(_pool())]
    pool_file.write_text(json.dumps(filler_items))
    assert main(["--data", str(data), "--pool", str(pool_file), "--tokens", "300", "--seed", "4",
                 "--out", str(out)]) == 0
    items = json.loads(out.read_text())
    assert [item["question_id"] for item in items] == ["q1", "q2"]
    assert all(_tokens(item) >= 300 for item in items)
