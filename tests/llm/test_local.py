"""LocalLLM on a tiny random Llama built in code: real transformers generate, no files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from memagent.llm.base import LLMError
from memagent.llm.local import LocalLLM, pick_device, pick_dtype
from tests.llm.tiny import CONTEXT_WINDOW, tiny_llm, tiny_model, tiny_tokenizer

HELLO = [{"role": "user", "content": "Hello there"}]
CHATS = [  # prompts of different lengths, so batching must pad
    HELLO,
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a much longer question than the first"}],
    [{"role": "user", "content": "x"}],
]


@pytest.fixture(scope="module")
def llm() -> LocalLLM:
    return tiny_llm()


def test_auto_device_and_dtype_pick_cpu_float32_here(llm: LocalLLM) -> None:
    assert not torch.cuda.is_available()  # this suite runs on CPU machines
    assert (llm.device.type, llm.dtype) == ("cpu", torch.float32)
    assert pick_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert pick_dtype("bfloat16", pick_device("cpu")) == torch.bfloat16
    with pytest.raises(LLMError, match="dtype: 'float33' is not a torch dtype"):
        pick_dtype("float33", pick_device(None))
    assert llm.context_window == CONTEXT_WINDOW


def test_greedy_generation_is_deterministic(llm: LocalLLM) -> None:
    first, second = llm.generate(HELLO, max_new_tokens=24), llm.generate(HELLO, max_new_tokens=24)
    assert first == second
    assert first.text and first.prompt_tokens == llm.count_tokens("<|user|>Hello there<|end|><|assistant|>")


def test_max_new_tokens_is_respected_with_finish_reason_length(llm: LocalLLM) -> None:
    out = llm.generate(HELLO, max_new_tokens=5)
    assert (out.completion_tokens, len(out.token_logprobs), out.finish_reason) == (5, 5, "length")
    assert out.text == llm.generate(HELLO, max_new_tokens=24).text[:5]  # one byte a token


def test_stop_string_cuts_the_text_and_its_tokens(llm: LocalLLM) -> None:
    full = llm.generate(HELLO, max_new_tokens=24)
    marker = full.text[3:5]
    out = llm.generate(HELLO, max_new_tokens=24, stop=["never seen", marker])
    assert out.text == full.text[: full.text.find(marker)]
    assert out.finish_reason == "stop"
    assert out.token_logprobs == full.token_logprobs[: len(out.text)]


def test_token_logprobs_agree_with_continuation_logprobs(llm: LocalLLM) -> None:
    for temperature in (0.0, 1.5):  # sampled tokens too: logprobs are the model's, not the sampler's
        out = llm.generate(HELLO, max_new_tokens=24, temperature=temperature)
        assert len(out.token_logprobs) == out.completion_tokens == llm.count_tokens(out.text)
        assert all(lp <= 0 for lp in out.token_logprobs)
        scored = llm.continuation_logprobs(HELLO, out.text)
        assert scored == pytest.approx(out.token_logprobs, abs=1e-4)


def test_batched_generation_equals_one_by_one(llm: LocalLLM) -> None:
    batched = llm.generate_batch(CHATS, max_new_tokens=16)
    for chat, out in zip(CHATS, batched, strict=True):
        alone = llm.generate(chat, max_new_tokens=16)
        assert (out.text, out.prompt_tokens, out.finish_reason) == (
            alone.text, alone.prompt_tokens, alone.finish_reason
        )  # fmt: skip
        assert out.token_logprobs == pytest.approx(alone.token_logprobs, abs=1e-4)


def test_batches_larger_than_batch_size_are_split() -> None:
    small = LocalLLM(tiny_model(), tiny_tokenizer(), name="tiny", batch_size=2)
    assert [g.text for g in small.generate_batch(CHATS, max_new_tokens=8)] == [
        small.generate(chat, max_new_tokens=8).text for chat in CHATS
    ]


def test_stream_joins_to_the_generated_text(llm: LocalLLM) -> None:
    for stop in (None, [llm.generate(HELLO, max_new_tokens=24).text[4:6]]):
        pieces = list(llm.stream(HELLO, max_new_tokens=24, stop=stop))
        assert "".join(pieces) == llm.generate(HELLO, max_new_tokens=24, stop=stop).text


def test_stream_closed_early_stops_generating(llm: LocalLLM) -> None:
    stream = llm.stream(HELLO, max_new_tokens=400)
    next(stream)
    stream.close()  # joins the generating thread; it must stop well before 400 tokens


def test_prompt_longer_than_the_context_window_raises_with_counts(llm: LocalLLM) -> None:
    long = [{"role": "user", "content": "y" * 600}]
    expected = r"prompt is 603 tokens and max_new_tokens is 8 tokens: 611 > context window 512"
    with pytest.raises(LLMError, match=expected):
        llm.generate(long, max_new_tokens=8)  # 600 bytes + 3 chat tokens
    # 3 tokens of chat markup around an empty message
    with pytest.raises(LLMError, match=r"prompt is 3 tokens and continuation is 600 tokens: 603 > context window 512"):
        llm.continuation_logprobs([{"role": "user", "content": ""}], "z" * 600)


def test_bad_options_are_refused(llm: LocalLLM) -> None:
    with pytest.raises(LLMError, match="max_new_tokens must be at least 1, got 0"):
        llm.generate(HELLO, max_new_tokens=0)
    with pytest.raises(LLMError, match="stop must be a list of non-empty strings"):
        llm.generate(HELLO, stop="\n")


def test_model_failure_raises_llm_error_with_cause() -> None:
    broken = tiny_model()
    broken.resize_token_embeddings(100)  # the chat tokens (ids 256..260) no longer exist
    llm = LocalLLM(broken, tiny_tokenizer(), name="broken")
    with pytest.raises(LLMError, match="model 'broken': generation failed: IndexError") as caught:
        llm.generate(HELLO)
    assert isinstance(caught.value.__cause__, IndexError)
    with pytest.raises(LLMError, match="generation failed") as streamed:
        list(llm.stream(HELLO))
    assert isinstance(streamed.value.__cause__, IndexError)


def test_a_template_error_raises_llm_error() -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = "{{ raise_exception('system role not supported') }}"
    llm = LocalLLM(tiny_model(), tokenizer, name="strict")
    with pytest.raises(LLMError, match="chat template rejected the messages: system role not supported"):
        llm.generate(HELLO)


def test_from_pretrained_loads_a_saved_folder(tmp_path: Path, llm: LocalLLM) -> None:
    llm.model.save_pretrained(tmp_path)
    llm.tokenizer.save_pretrained(tmp_path)
    loaded = LocalLLM.from_pretrained(tmp_path)
    assert loaded.name == tmp_path.name
    assert loaded.generate(HELLO, max_new_tokens=12) == llm.generate(HELLO, max_new_tokens=12)


def test_from_pretrained_failure_raises_llm_error_with_cause(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="could not be loaded") as caught:
        LocalLLM.from_pretrained(tmp_path / "missing")
    assert caught.value.__cause__ is not None


def test_text_logprobs_rebuild_the_text_and_match_a_forward_pass(llm: LocalLLM) -> None:
    text = "Pixel the greyhound likes long walks."
    pieces = llm.text_logprobs(text)
    assert "".join(piece for piece, _ in pieces) == text
    assert pieces[0][1] == 0.0 and all(lp <= 0.0 for _, lp in pieces)
    ids = llm.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = llm.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    expected = [0.0] + [logits[n - 1, ids[n]].item() for n in range(1, len(ids))]
    assert [lp for _, lp in pieces] == pytest.approx(expected, abs=1e-4)
