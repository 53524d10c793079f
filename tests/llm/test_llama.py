"""The llama.cpp backend on a tiny GGUF the tests write (tests/llm/tiny.py): the same file loaded by
transformers is the reference, so every number llama.cpp gives is checked against another engine."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="the llama extra is not installed")

from memagent.llm.base import LLMError
from memagent.llm.llama import LlamaCppLLM
from memagent.llm.load import load_llm
from memagent.llm.local import LocalLLM
from tests.llm.tiny import write_tiny_gguf

# llama.cpp keeps its KV cache in float16: log-probabilities differ from float32 transformers by ~0.005
TOLERANCE = 0.02
HELLO = [{"role": "user", "content": "Hello there"}]
OTHER = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the time?"}]


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def llama(gguf: Path) -> LlamaCppLLM:
    return LlamaCppLLM(gguf, n_ctx=512)


@pytest.fixture(scope="module")
def reference(gguf: Path) -> LocalLLM:
    return LocalLLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")


def test_continuation_logprobs_match_transformers_on_the_same_file(llama: LlamaCppLLM, reference: LocalLLM) -> None:
    for messages, continuation in ((HELLO, "Hi! How can I help?"), (OTHER, "It is noon.")):
        ours = llama.continuation_logprobs(messages, continuation)
        theirs = reference.continuation_logprobs(messages, continuation)
        assert len(ours) == len(theirs) == len(continuation.encode())  # one token per byte
        assert ours == pytest.approx(theirs, abs=TOLERANCE)


def test_greedy_generation_matches_transformers(llama: LlamaCppLLM, reference: LocalLLM) -> None:
    ours = llama.generate(HELLO, max_new_tokens=12)
    theirs = reference.generate(HELLO, max_new_tokens=12)
    assert ours.completion_tokens == theirs.completion_tokens
    assert ours.token_logprobs == pytest.approx(theirs.token_logprobs, abs=TOLERANCE)
    assert ours.prompt_tokens == theirs.prompt_tokens == len(llama._prompt_ids(HELLO, reserve=0))


def test_the_cached_prefix_changes_no_result(gguf: Path, llama: LlamaCppLLM) -> None:
    fresh = LlamaCppLLM(gguf, n_ctx=512)
    expected = fresh.generate(OTHER, max_new_tokens=8)
    llama.generate(HELLO, max_new_tokens=8)  # leaves HELLO's tokens in the KV cache
    llama.continuation_logprobs(OTHER, "abc")  # and then a shared prefix with OTHER
    again = llama.generate(OTHER, max_new_tokens=8)
    assert again.text == expected.text
    assert again.token_logprobs == pytest.approx(expected.token_logprobs, abs=1e-4)


def test_stream_joins_to_generate_and_stops_at_a_stop_string(llama: LlamaCppLLM) -> None:
    whole = llama.generate(HELLO, max_new_tokens=16)
    assert "".join(llama.stream(HELLO, max_new_tokens=16)) == whole.text
    stop = whole.text[3:5]
    cut = llama.generate(HELLO, max_new_tokens=16, stop=[stop])
    assert cut.text == whole.text[: whole.text.find(stop)]
    assert cut.finish_reason == "stop" and len(cut.token_logprobs) == cut.completion_tokens
    assert "".join(llama.stream(HELLO, max_new_tokens=16, stop=[stop])) == cut.text


def test_max_new_tokens_ends_with_length(llama: LlamaCppLLM) -> None:
    out = llama.generate(HELLO, max_new_tokens=3)
    assert out.completion_tokens <= 3
    if out.completion_tokens == 3:
        assert out.finish_reason == "length"


def test_text_logprobs_rebuild_the_text_and_match_transformers(llama: LlamaCppLLM, reference: LocalLLM) -> None:
    text = "Plain text, no chat template: café ☕."
    ours = llama.text_logprobs(text)
    assert "".join(piece for piece, _ in ours) == text
    assert ours[0][1] == 0.0
    theirs = reference.text_logprobs(text)
    assert [s for _, s in ours] == pytest.approx([s for _, s in theirs], abs=TOLERANCE)


def test_sampling_is_seeded(gguf: Path) -> None:
    first = LlamaCppLLM(gguf, n_ctx=512, seed=7).generate(HELLO, max_new_tokens=8, temperature=1.0)
    second = LlamaCppLLM(gguf, n_ctx=512, seed=7).generate(HELLO, max_new_tokens=8, temperature=1.0)
    assert first.text == second.text


def test_count_tokens_and_context_checks(llama: LlamaCppLLM) -> None:
    assert llama.count_tokens("abc") == 3 and llama.count_tokens("") == 0
    with pytest.raises(LLMError, match="context window 512"):
        llama.generate([{"role": "user", "content": "x" * 600}], max_new_tokens=4)
    with pytest.raises(LLMError, match="max_new_tokens must be at least 1"):
        llama.generate(HELLO, max_new_tokens=0)


def test_load_llm_picks_llama_cpp_for_gguf_unless_told(gguf: Path) -> None:
    assert isinstance(load_llm(str(gguf), n_ctx=256), LlamaCppLLM)
    assert isinstance(load_llm(str(gguf), backend="transformers", dtype="float32"), LocalLLM)
    with pytest.raises(LLMError, match="option 'dtype' does not apply .* on llama.cpp"):
        load_llm(str(gguf), dtype="float32")
    with pytest.raises(LLMError, match="backend: 'onnx' is not one of"):
        load_llm(str(gguf), backend="onnx")  # type: ignore[arg-type]


def test_llama_cpp_refuses_a_transformers_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(LLMError, match="llama.cpp runs GGUF files"):
        load_llm(str(tmp_path), backend="llama.cpp")


def test_a_missing_file_is_an_llm_error(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="no such GGUF file"):
        LlamaCppLLM(tmp_path / "absent.gguf")


def test_the_sure_probe_matches_transformers(llama: LlamaCppLLM, reference: LocalLLM) -> None:
    from memagent.answer.confidence import sure_confidence

    # the probe scores three continuations that share "I am " on a byte-level tokenizer: llama.cpp must
    # give the shared tokens equal scores across calls so the words are compared where they differ
    for messages in (HELLO, OTHER):
        got, want = sure_confidence(llama, messages, "Bristol"), sure_confidence(reference, messages, "Bristol")
        assert got == pytest.approx(want, abs=TOLERANCE) and got != pytest.approx(0.5, abs=1e-3)


def test_a_lora_adapter_runs_on_llama_cpp_as_the_merged_model_does_on_transformers(
    gguf: Path, tmp_path: Path, llama: LlamaCppLLM
) -> None:
    pytest.importorskip("peft", reason="the train extra is not installed")
    from memagent.answer.rtuning import TuningConfig, TuningExample, tune_reader, with_adapter

    def base() -> LocalLLM:
        return LocalLLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")

    every = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # each name maps
    config = TuningConfig(rank=4, learning_rate=2e-2, epochs=2, accumulate=2, target_modules=every)
    tune_reader(base(), [TuningExample(list(HELLO), "Hi! How can I help?", sure=True)] * 4, tmp_path / "a", config)
    merged = with_adapter(base(), str(tmp_path / "a"))
    tuned = LlamaCppLLM(gguf, n_ctx=512, adapter=str(tmp_path / "a"))
    assert tuned.name == "tiny+a" and (tmp_path / "a" / "adapter.gguf").is_file()
    for messages, continuation in ((HELLO, "Hi! How can I help?"), (OTHER, "It is noon.")):
        want = merged.continuation_logprobs(messages, continuation)
        assert tuned.continuation_logprobs(messages, continuation) == pytest.approx(want, abs=TOLERANCE)
        # q and k rows are reordered for llama.cpp's rotary layout: wrong order would not match above
        assert llama.continuation_logprobs(messages, continuation) != pytest.approx(want, abs=TOLERANCE)
