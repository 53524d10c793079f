"""LoCoMo -> LongMemEval conversion, on a small conversation written for these tests.

The last test reads the real LoCoMo development file when MEMAGENT_SHARED_DATA points at the
shared data folder, and skips otherwise.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import pytest
from memagent_evals.locomo.convert import (
    ConversionStats,
    convert_file,
    convert_locomo,
    load_locomo,
    parse_evidence,
    parse_locomo_date,
)

OFFICIAL_KEYS = ["question_id", "question_type", "question", "answer", "question_date", "haystack_dates",
                 "haystack_session_ids", "haystack_sessions", "answer_session_ids"]


def _turn(dia_id: str, speaker: str, text: str, **extra: str) -> dict:
    return {"speaker": speaker, "dia_id": dia_id, "text": text, **extra}


def _sample() -> dict:
    """Three sessions (1, 2, 10), an empty session 3, a date without a session, an image turn."""
    conversation = {
        "speaker_a": "Ines", "speaker_b": "Tomas",
        "session_1_date_time": "9:05 am on 3 January, 2022",
        "session_1": [_turn("D1:1", "Ines", "I adopted a grey cat called Pixel."),
                      _turn("D1:2", "Tomas", "Lovely! Mine is a parrot named Kiwi."),
                      _turn("D1:3", "Ines", "Pixel sleeps all day.")],
        "session_10_date_time": "11:30 PM on 2 March 2022",
        "session_10": [_turn("D10:1", "Tomas", "Kiwi learned to whistle a tune."),
                       _turn("D10:2", "Ines", "Here is Pixel on the sofa.", blip_caption="a cat on a sofa")],
        "session_2_date_time": "12:15 pm on 14 February, 2022",
        "session_2": [_turn("D2:1", "Ines", "I ran 7 km this morning."),
                      _turn("D2:2", "Tomas", "I prefer swimming.")],
        "session_3_date_time": "1:00 pm on 20 February, 2022",
        "session_3": [],
        "session_4_date_time": "1:00 pm on 25 February, 2022",
    }
    qa = [
        {"question": "What pets do they have?", "answer": "a cat and a parrot",
         "evidence": ["D1:1", " D1:2 "], "category": 1},
        {"question": "How many km did Ines run?", "answer": 7, "evidence": ["D2:1"], "category": 4},
        {"question": "Which pet features in both chats?", "answer": "Pixel",
         "evidence": ["D1:3; D2:2", "D10:1 D10:2", "D9:9"], "category": 2},
        {"question": "What did Tomas's dog learn?", "adversarial_answer": "to whistle",
         "evidence": ["D10:1"], "category": 5},
        {"question": "What is Ines's favourite film?", "answer": "not said", "evidence": [], "category": 3},
    ]
    return {"sample_id": "s-7", "conversation": conversation, "qa": qa}


@pytest.fixture
def converted() -> tuple[list[dict], ConversionStats]:
    return convert_locomo([_sample()])


def _turns_by_dia_id(item: dict) -> dict[str, dict]:
    return {turn["dia_id"]: turn for session in item["haystack_sessions"] for turn in session}


def test_items_keep_the_official_schema(converted):
    items, stats = converted
    assert [list(item) for item in items] == [OFFICIAL_KEYS] * 5
    assert stats.questions == 5 and stats.per_category == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    assert [item["question_type"] for item in items] == [
        "multi-hop", "single-hop", "temporal-reasoning", "adversarial", "open-domain"]
    assert items[1]["answer"] == "7"
    assert items[3]["answer"].startswith("The conversation does not say") and "(not: to whistle)" in items[3]["answer"]


def test_every_existing_evidence_turn_is_marked_and_no_other(converted):
    items, stats = converted
    expected = [{"D1:1", "D1:2"}, {"D2:1"}, {"D1:3", "D2:2", "D10:1", "D10:2"}, {"D10:1"}, set()]
    for item, evidence in zip(items, expected):
        marked = {dia_id for dia_id, turn in _turns_by_dia_id(item).items() if turn["has_answer"]}
        assert marked == evidence, item["question_id"]
    assert stats.evidence_turns_marked == sum(map(len, expected))


def test_missing_evidence_is_reported_not_marked(converted):
    _, stats = converted
    assert stats.missing_evidence == [("s-7_q002", "D9:9")]


def test_answer_ids_are_exactly_the_evidence_sessions(converted):
    items, _ = converted
    expected = [["answer_s-7_s1"], ["answer_s-7_s2"], ["answer_s-7_s1", "answer_s-7_s2", "answer_s-7_s10"],
                ["answer_s-7_s10"], []]
    for item, answer_ids in zip(items, expected):
        assert item["answer_session_ids"] == answer_ids
        assert [sid for sid in item["haystack_session_ids"] if "answer" in sid] == answer_ids
        for session_id, session in zip(item["haystack_session_ids"], item["haystack_sessions"]):
            assert ("answer" in session_id) == any(turn["has_answer"] for turn in session)


def test_question_ids_and_abstention_suffix(converted):
    items, _ = converted
    assert [item["question_id"] for item in items] == [
        "s-7_q000", "s-7_q001", "s-7_q002", "s-7_q003_abs", "s-7_q004"]


def test_sessions_in_numeric_order_and_empty_or_absent_ones_skipped(converted):
    item = converted[0][0]
    assert item["haystack_session_ids"] == ["answer_s-7_s1", "s-7_s2", "s-7_s10"]
    assert [[turn["dia_id"] for turn in session] for session in item["haystack_sessions"]] == [
        ["D1:1", "D1:2", "D1:3"], ["D2:1", "D2:2"], ["D10:1", "D10:2"]]


def test_dates_in_longmemeval_format_and_question_after_last_session(converted):
    item = converted[0][0]
    assert item["haystack_dates"] == ["2022/01/03 (Mon) 09:05", "2022/02/14 (Mon) 12:15", "2022/03/02 (Wed) 23:30"]
    assert item["question_date"] == "2022/03/03 (Thu) 23:30"


def test_turn_content_names_the_speaker_and_the_image(converted):
    turns = _turns_by_dia_id(converted[0][0])
    first = "D1:1"  # our own conversation's first turn
    assert turns[first] == {"role": "user", "content": "Ines: I adopted a grey cat called Pixel.",
                            "has_answer": True, "dia_id": first}
    assert turns["D10:2"]["content"] == "Ines: Here is Pixel on the sofa. [shares an image: a cat on a sofa]"


@pytest.mark.parametrize(("text", "expected"), [
    ("1:56 pm on 8 May, 2023", (2023, 5, 8, 13, 56)),
    ("12:00 AM on 1 Jan 2024", (2024, 1, 1, 0, 0)),
    ("12:30 pm on 9 September, 2023", (2023, 9, 9, 12, 30)),
])
def test_locomo_dates_parse(text, expected):
    moment = parse_locomo_date(text, "session_1_date_time")
    assert (moment.year, moment.month, moment.day, moment.hour, moment.minute) == expected


def test_unparseable_date_names_the_session_key():
    sample = _sample()
    sample["conversation"]["session_2_date_time"] = "sometime in spring"
    with pytest.raises(ValueError, match="session_2_date_time"):
        convert_locomo([sample])


def test_messy_evidence_entries_are_split_and_normalised():
    ids, junk = parse_evidence(["D8:6; D9:17", "D1:3 D1:5", "D1: 4", "D:11:26", "d2:07,D3:1", "D"])
    assert ids == ["D8:6", "D9:17", "D1:3", "D1:5", "D1:4", "D11:26", "D2:7", "D3:1"]
    assert junk == ["D"]


def test_load_rejects_other_shapes(tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"sample_id": "x"}))
    with pytest.raises(ValueError, match="list"):
        load_locomo(path)
    sample = _sample()
    del sample["qa"]
    path.write_text(json.dumps([sample]))
    with pytest.raises(ValueError, match="qa"):
        load_locomo(path)


def test_convert_file_round_trips(tmp_path: Path):
    source, out = tmp_path / "locomo.json", tmp_path / "lme.json"
    source.write_text(json.dumps([_sample()]))
    stats = convert_file(source, out)
    assert stats.questions == 5
    assert json.loads(out.read_text()) == convert_locomo([_sample()])[0]


def test_input_is_not_modified():
    sample = _sample()
    before = copy.deepcopy(sample)
    convert_locomo([sample])
    assert sample == before


def test_real_locomo_keeps_every_existing_evidence_turn():
    root = os.environ.get("MEMAGENT_SHARED_DATA")
    path = Path(root or ".") / "locomo" / "locomo_dev6.json"
    if not root or not path.is_file():
        pytest.skip("set MEMAGENT_SHARED_DATA to the shared data folder to check the real LoCoMo file")
    samples = load_locomo(path)
    items, stats = convert_locomo(samples)
    assert len(items) == sum(len(sample["qa"]) for sample in samples) == stats.questions
    items_left = iter(items)
    for sample in samples:
        sessions = [value for key, value in sample["conversation"].items() if re.fullmatch(r"session_\d+", key)]
        existing = {turn["dia_id"] for session in sessions for turn in session}
        for qa in sample["qa"]:
            item = next(items_left)
            # Independent of the converter's parser: any well-formed id anywhere in the entries.
            evidence = set(re.findall(r"D\d+:\d+", " ".join(qa["evidence"]))) & existing
            turns = _turns_by_dia_id(item)
            assert {dia_id for dia_id in evidence if not turns[dia_id]["has_answer"]} == set(), item["question_id"]
            answer_ids = [sid for sid in item["haystack_session_ids"] if "answer" in sid]
            assert answer_ids == item["answer_session_ids"]
