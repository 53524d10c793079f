"""R-Tuning's confidence: the sure-probe, its mix with the answer's likelihood, and the refusal threshold."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest
import torch
from pydantic import ValidationError

from memagent import MemoryConfig, ScriptedLLM
from memagent.answer import confidence
from memagent.answer.confidence import (
    SURE_QUESTIONS,
    combined_confidence,
    fit_threshold,
    sure_confidence,
    sure_messages,
)
from memagent.answer.reader import Passage, read
from memagent.llm.base import ChatMessages
from tests.conftest import exchange
from tests.llm.tiny import tiny_llm

WHEN = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)
ASKED = [{"role": "user", "content": "Where do I live?"}]


class ProbedLLM(ScriptedLLM):
    """Answers from a script and scores "I am ..." continuations from a table, like a BPE reader whose
    " sure" and " unsure" are one token each."""

    def __init__(self, reply: str, sure: float, unsure: float, **options: object) -> None:
        super().__init__(reply, **options)  # type: ignore[arg-type]
        self.word = {"sure": math.log(sure), "unsure": math.log(unsure)}

    def continuation_logprobs(self, messages: ChatMessages, continuation: str) -> list[float]:
        self.calls.append([dict(m) for m in messages] + [{"role": "assistant", "content": continuation}])
        lead, _, word = continuation.partition("I am")
        return [-0.3, -0.2] + ([self.word[word.strip()]] if word else [])


def test_sure_probe_asks_after_the_reply_and_normalises_sure_against_unsure() -> None:
    llm = ProbedLLM("Bristol", sure=0.6, unsure=0.2)
    assert sure_confidence(llm, ASKED, "Bristol") == pytest.approx(0.6 / (0.6 + 0.2))
    asked = llm.calls[-1]
    assert asked[-3] == {"role": "assistant", "content": "Bristol"}
    assert asked[-2] == {"role": "user", "content": SURE_QUESTIONS["memories"]}
    assert asked[-1] == {"role": "assistant", "content": "I am unsure"}
    assert "internal knowledge" in sure_messages(ASKED, "Bristol", "internal")[-1]["content"]  # R-Tuning's wording
    with pytest.raises(ValueError, match="sure_probe: 'maybe' is not one of"):
        sure_messages(ASKED, "Bristol", "maybe")


def test_sure_probe_on_a_real_model_equals_its_next_token_distribution_by_hand() -> None:
    llm = tiny_llm()
    messages = [{"role": "system", "content": "Answer from memories."}, *ASKED]
    got = sure_confidence(llm, messages, "Bristol")
    # by hand: the chat, then "I am " (the tiny tokenizer has one token per byte, so the space is a token
    # both words share and the words differ at their first letter, 's' against 'u')
    text = llm.tokenizer.apply_chat_template(sure_messages(messages, "Bristol"), tokenize=False,
                                             add_generation_prompt=True) + "I am "
    ids = llm.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        probabilities = torch.softmax(llm.model(input_ids=torch.tensor([ids])).logits[0, -1], dim=-1)
    s, u = probabilities[ord("s")].item(), probabilities[ord("u")].item()
    assert got == pytest.approx(s / (s + u), abs=1e-5)
    assert 0.0 < got < 1.0 and got != pytest.approx(0.5, abs=1e-3)  # the random model is not indifferent


def test_combined_confidence_is_the_mean_of_its_parts() -> None:
    assert combined_confidence(0.2, 0.9) == pytest.approx(0.55)


def test_read_with_the_probe_keeps_both_parts_and_refuses_below_the_threshold() -> None:
    memories = [Passage("rec", datetime(2024, 2, 3, tzinfo=timezone.utc), "moved to Bristol")]
    llm = ProbedLLM("Bristol", sure=0.1, unsure=0.3, logprob=math.log(0.8))
    answer = read(llm, "Where do I live?", memories, WHEN, prompt="direct-first", sure_probe="memories")
    assert answer.prediction_confidence == pytest.approx(0.8)
    assert answer.sure_confidence == pytest.approx(0.25)
    assert answer.confidence == pytest.approx(0.525) and not answer.refused
    assert read(llm, "Where do I live?", memories, WHEN, prompt="direct-first", sure_probe="memories",
                refuse_below=0.6).refused
    unprobed = read(llm, "Where do I live?", memories, WHEN, prompt="direct-first")
    assert unprobed.sure_confidence is None and unprobed.confidence == pytest.approx(0.8)


def test_fit_threshold_maximises_right_final_answers() -> None:
    # refusing is right on the unanswerable question (0.3) and on no answerable one; the wrong answer at
    # 0.4 costs nothing refused, the right one at 0.5 costs one: refuse below 0.5 (2 -> 4 right of 5)
    confidences = [0.3, 0.4, 0.5, 0.9, 0.45]
    correct = [False, False, True, True, False]
    unanswerable = [True, False, False, False, True]
    assert fit_threshold(confidences, correct, unanswerable) == 0.5
    assert fit_threshold([0.2, 0.8], [True, True], [False, False]) == 0.0  # nothing to gain: never refuse
    # refusing everything below 0.9 gets all three unanswerable questions right at the cost of half the
    # answerable ones; allowed to cost 3 points at most, the threshold stops below the right answer at 0.32
    confidences, correct = [0.3, 0.34, 0.35, 0.32, 0.9], [False, False, False, True, True]
    unanswerable = [True, True, True, False, False]
    assert fit_threshold(confidences, correct, unanswerable) == 0.9
    assert fit_threshold(confidences, correct, unanswerable, max_answerable_drop=0.03) == 0.32
    with pytest.raises(ValueError, match="one entry per question"):
        fit_threshold([0.2], [True, False], [False])


def test_memory_answer_refuses_below_the_threshold_fitted_for_its_reader(memory, monkeypatch) -> None:
    memory.add(exchange("I moved to Bristol in June"), user_id="ana", session_id="s1", timestamp="2024-01-05")
    reader = ProbedLLM("Bristol", sure=0.2, unsure=0.6, logprob=math.log(0.5), name="probed")  # c = 0.375
    answer = memory.answer("Where do I live?", user_id="ana", llm=reader, question_date="2024-02-01")
    assert answer.confidence == pytest.approx(0.375) and not answer.refused  # no threshold fitted for it
    monkeypatch.setitem(confidence.FITTED_THRESHOLDS, ("probed", "notes", "memories"), 0.4)
    assert memory.answer("Where do I live?", user_id="ana", llm=reader, question_date="2024-02-01").refused
    memory.config.reader.refuse_below = 0.0  # a configured threshold wins: never refuse on confidence
    assert not memory.answer("Where do I live?", user_id="ana", llm=reader, question_date="2024-02-01").refused
    memory.config.reader.sure_probe = None
    plain = memory.answer("Where do I live?", user_id="ana", llm=reader, question_date="2024-02-01")
    assert plain.sure_confidence is None and plain.confidence == pytest.approx(0.5)


def test_config_names_a_bad_sure_probe() -> None:
    with pytest.raises(ValidationError, match="sure_probe"):
        MemoryConfig(reader={"sure_probe": "maybe"})


def test_with_no_memories_to_read_the_answer_is_a_refusal_without_asking_the_reader(memory) -> None:
    memory.add(exchange("I moved to Bristol in June"), user_id="ana", session_id="s1", timestamp="2024-01-05")
    reader = ScriptedLLM("Oakwood")  # what a reader asked with nothing to read invented
    answer = memory.answer("Where does my sister live?", user_id="bo", llm=reader, question_date="2024-02-01")
    assert answer.refused and answer.confidence == 0.0 and answer.citations == [] and reader.calls == []
    assert not memory.answer("Where do I live?", user_id="ana", llm=reader, question_date="2024-02-01").refused
