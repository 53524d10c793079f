"""R-Tuning's data and LoRA tuning on the tiny model: labelling rules, learnt tokens, adapter round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("peft", reason="the train extra is not installed")

from memagent.answer.confidence import sure_confidence
from memagent.answer.rtuning import (
    REFUSAL,
    TuningConfig,
    TuningExample,
    adapter_path,
    balanced,
    example_chat,
    refusal_aware_example,
    training_tokens,
    tune_reader,
    with_adapter,
)
from memagent.llm.base import LLMError
from memagent.llm.load import load_llm
from tests.llm.tiny import tiny_llm

CHAT = [{"role": "system", "content": "Answer from memories."}, {"role": "user", "content": "Where do I live?"}]


@pytest.mark.parametrize(
    ("correct", "unanswerable", "variant", "answer", "sure"),
    [
        (True, False, "unsure", "Bristol", True),  # right: the reference, "I am sure"
        (False, False, "unsure", "Bristol", False),  # wrong: still the reference, but "I am unsure"
        (True, True, "unsure", REFUSAL, False),  # unanswerable: always unsure, and a refusal
        (True, False, "refuse", "Bristol", None),  # R-Tuning-R: no sure question
        (False, False, "refuse", REFUSAL, None),  # ... and a refusal where the reader was wrong
        (True, True, "refuse", REFUSAL, None),
    ],
)
def test_refusal_aware_labels(correct: bool, unanswerable: bool, variant: str, answer: str, sure: bool | None) -> None:
    example = refusal_aware_example(CHAT, "Bristol", correct, unanswerable, variant)  # type: ignore[arg-type]
    assert (example.answer, example.sure) == (answer, sure)
    assert example.messages == CHAT and example.messages is not CHAT
    with pytest.raises(ValueError, match="variant: 'guess'"):
        refusal_aware_example(CHAT, "Bristol", True, False, "guess")  # type: ignore[arg-type]


def test_balancing_keeps_every_sure_example_and_at_most_ratio_unsure_in_order() -> None:
    examples = [TuningExample(CHAT, f"a{n}", sure=n % 5 == 0) for n in range(20)]  # 4 sure, 16 unsure
    examples.append(TuningExample(CHAT, "refused", sure=None))
    kept = balanced(examples, 1.5)
    assert [e for e in kept if e.sure] == [e for e in examples if e.sure]
    assert sum(e.sure is False for e in kept) == 6 and kept[-1].sure is None
    assert [examples.index(e) for e in kept] == sorted(examples.index(e) for e in kept)
    assert balanced(examples, 1.5) == kept  # seeded: the same data every run
    assert len(balanced(examples, 10)) == len(examples)  # fewer unsure than allowed: all kept
    with pytest.raises(ValueError, match="ratio"):
        balanced(examples, 0)


def test_only_the_assistant_turns_are_learnt() -> None:
    llm = tiny_llm()
    chat = example_chat(TuningExample(CHAT, "Bristol", sure=False))
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user", "assistant"]
    ids, labels = training_tokens(llm.tokenizer, chat)
    learnt = llm.tokenizer.decode([t for t in labels if t != -100])
    assert learnt == "Bristol<|end|>I am unsure.<|end|>"  # each answer with its end-of-turn token
    assert len(ids) == len(labels) and labels[0] == -100
    assert "Where do I live?" in llm.tokenizer.decode(ids)


def test_tuning_teaches_the_sure_reply_and_the_adapter_round_trips(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEMAGENT_ADAPTERS_DIR", str(tmp_path / "adapters"))
    llm = tiny_llm()
    before = sure_confidence(llm, CHAT, "Bristol")
    weights = {k: v.clone() for k, v in llm.model.state_dict().items()}
    examples = [TuningExample(CHAT, "Bristol", sure=True)] * 8
    out = tmp_path / "adapters" / "tiny-sure-v1"
    report = tune_reader(llm, examples, out, TuningConfig(rank=4, learning_rate=2e-2, epochs=3, accumulate=4),
                         data={"file": "made-up", "questions": 8})
    assert report.examples == 8 and report.steps == 6 and report.losses[-1] < report.losses[0]
    # the reader given to tune_reader is unchanged: the adapter lives only in its folder
    assert all((llm.model.state_dict()[k] == v).all() for k, v in weights.items())
    assert sure_confidence(llm, CHAT, "Bristol") == pytest.approx(before, abs=1e-6)
    trained = json.loads((out / "training.json").read_text())
    assert trained["base_model"] == "tiny-llama" and trained["examples"]["sure"] == 8
    assert trained["data"] == {"file": "made-up", "questions": 8} and trained["config"]["rank"] == 4
    assert adapter_path("tiny-sure-v1") == out  # by name
    tuned = with_adapter(tiny_llm(), "tiny-sure-v1")
    assert tuned.name == "tiny-llama+tiny-sure-v1"
    assert sure_confidence(tuned, CHAT, "Bristol") > max(0.9, before)  # it learnt to say it is sure
    again = with_adapter(tiny_llm(), str(out))  # by path: the same weights
    assert sure_confidence(again, CHAT, "Bristol") == pytest.approx(sure_confidence(tuned, CHAT, "Bristol"))
    folder = tmp_path / "tiny-llama"  # the same model as a transformers folder: load_llm merges the adapter
    tiny_llm().model.save_pretrained(folder)
    tiny_llm().tokenizer.save_pretrained(folder)
    loaded = load_llm(str(folder), adapter="tiny-sure-v1")
    assert loaded.name == "tiny-llama+tiny-sure-v1"
    assert sure_confidence(loaded, CHAT, "Bristol") == pytest.approx(sure_confidence(tuned, CHAT, "Bristol"), abs=1e-5)
    with pytest.raises(LLMError, match="adapter: 'tiny-sure-v1' needs an in-process model"):
        load_llm("http://127.0.0.1:9/v1#m", adapter="tiny-sure-v1")
    other = tiny_llm()
    other.name = "another-model"
    with pytest.raises(LLMError, match="adapter: .* was trained on 'tiny-llama', not 'another-model'"):
        with_adapter(other, str(out))
    with pytest.raises(LLMError, match="adapter: 'missing' is neither a folder nor a name"):
        adapter_path("missing")
