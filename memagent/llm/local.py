"""``LocalLLM``: a transformers causal LM in this process, on CPU or GPU.

Prompts go through the tokenizer's chat template. Log-probabilities are always taken from the
model's raw logits (not from the sampling-processed scores), so ``generate`` and
``continuation_logprobs`` measure the same thing and agree on the same tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from memagent._extras import require
from memagent.llm.base import (
    LLM,
    ChatMessages,
    Generation,
    LLMError,
    check_fits,
    check_options,
    cut_at_stop,
    tokens_covering,
    until_stop,
)

MAX_CONTEXT = 32768  # configs may claim 128k+ positions; we never plan a prompt past this
# End-of-turn markers of common chat formats. GGUF metadata often names only the base model's
# end-of-text token, so a chat reply would run on past its end-of-turn without these.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


def pick_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks cuda when available, else cpu."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise LLMError(f"device: {device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')") from exc


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` picks bfloat16 on cuda and float32 elsewhere.

    CPUs without native bf16 (most x86 servers) run bf16 matmuls several times slower than fp32.
    """
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise LLMError(f"dtype: {dtype!r} is not a torch dtype (e.g. 'float32', 'bfloat16')")
    return value


class LocalLLM(LLM):
    """A causal LM and its tokenizer, loaded once; calls run under ``torch.inference_mode``.

    ``batch_size`` bounds how many chats ``generate_batch`` runs together (memory grows with it).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 8,
    ) -> None:
        if tokenizer.chat_template is None:
            raise LLMError(f"model {name!r}: the tokenizer has no chat template, so chats cannot be formatted")
        if batch_size < 1:
            raise LLMError(f"batch_size must be at least 1, got {batch_size}")
        self.name = name
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()  # type: ignore[call-arg]
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        positions = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 2048
        self.context_window = min(int(positions), MAX_CONTEXT)
        self._eos_ids = _end_token_ids(model, tokenizer)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._eos_ids[0]

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        *,
        name: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        gguf_file: str | None = None,
        batch_size: int = 8,
    ) -> LocalLLM:
        """Load a local folder, a hub id, or (with ``gguf_file``) a GGUF file inside ``path_or_id``."""
        if gguf_file is not None:
            require("gguf", "gguf", "accelerate")
        device_ = pick_device(device)
        dtype_ = pick_dtype(dtype, device_)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path_or_id), gguf_file=gguf_file)
            model = AutoModelForCausalLM.from_pretrained(str(path_or_id), gguf_file=gguf_file, dtype=dtype_)
        except Exception as exc:  # OSError, ValueError, ImportError...: all mean "could not load"
            where = f"{path_or_id}/{gguf_file}" if gguf_file else str(path_or_id)
            raise LLMError(f"model {where!r} could not be loaded: {type(exc).__name__}: {exc}") from exc
        label = name or (Path(gguf_file).stem if gguf_file else Path(str(path_or_id)).name)
        return cls(model, tokenizer, name=label, device=device_, dtype=dtype_, batch_size=batch_size)

    # --- the LLM interface -------------------------------------------------------------------

    def generate(
        self,
        messages: ChatMessages,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Generation:
        return self.generate_batch([messages], max_new_tokens=max_new_tokens, temperature=temperature, stop=stop)[0]

    def generate_batch(
        self,
        conversations: Sequence[ChatMessages],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """All chats, ``batch_size`` at a time, left-padded so every row generates from its end."""
        check_options(max_new_tokens, temperature, stop)
        prompts = [self._prompt_ids(messages, reserve=max_new_tokens) for messages in conversations]
        results: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            results.extend(self._generate_chunk(chunk, max_new_tokens, temperature, list(stop or ())))
        return results

    def stream(
        self,
        messages: ChatMessages,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Generator[str, None, None]:
        """Text pieces as they are decoded; the pieces join to what ``generate`` returns.

        Closing the generator early (``close()``, or leaving a ``for`` loop over it) stops generation.
        """
        check_options(max_new_tokens, temperature, stop)
        prompt = self._prompt_ids(messages, reserve=max_new_tokens)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancelled = threading.Event()  # set when the caller stops reading, so generation stops too
        failures: list[Exception] = []

        def run() -> None:
            try:
                self._run_generate(
                    [prompt], max_new_tokens, temperature, list(stop or ()),
                    streamer=streamer, stopping_criteria=StoppingCriteriaList([_Cancelled(cancelled)]),
                )  # fmt: skip
            except Exception as exc:  # an LLMError from _run_generate, re-raised in the reading thread
                failures.append(exc)
                streamer.end()  # type: ignore[no-untyped-call]

        thread = threading.Thread(target=run, name=f"memagent-stream-{self.name}", daemon=True)
        thread.start()
        try:
            yield from until_stop(streamer, stop or ())
        finally:
            cancelled.set()
            thread.join()
        if failures:
            raise failures[0]

    def continuation_logprobs(self, messages: ChatMessages, continuation: str) -> list[float]:
        """One forward pass over prompt + continuation; logits only at the continuation's positions."""
        prompt = self._prompt_ids(messages, reserve=0)
        tokens = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        if not tokens:
            return []
        check_fits(self, len(prompt), len(tokens), "continuation")
        ids = torch.tensor([prompt + tokens], device=self.device)
        try:
            with torch.inference_mode():
                # position i predicts token i+1: the last len(tokens)+1 positions cover the continuation
                logits = self.model(input_ids=ids, use_cache=False, logits_to_keep=len(tokens) + 1).logits
        except Exception as exc:
            raise _failed(self.name, exc) from exc
        logprobs = torch.log_softmax(logits[0, :-1].float(), dim=-1)  # (len(tokens), vocab)
        return logprobs.gather(1, torch.tensor(tokens, device=self.device)[:, None])[:, 0].tolist()

    def text_logprobs(self, text: str) -> list[tuple[str, float]]:
        """One forward pass over ``text``; the first token has nothing before it and gets 0.0."""
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        if not ids:
            return []
        check_fits(self, len(ids), 0, "text")
        try:
            with torch.inference_mode():
                logits = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=False).logits
        except Exception as exc:
            raise _failed(self.name, exc) from exc
        logprobs = torch.log_softmax(logits[0, :-1].float(), dim=-1)
        scores = [0.0] + logprobs.gather(1, torch.tensor(ids[1:], device=self.device)[:, None])[:, 0].tolist()
        # pieces from the offsets, each running to the next token's start, so they rebuild the text exactly
        starts = [start for start, _ in offsets] + [len(text)]
        starts[0] = 0
        return [(text[starts[n] : starts[n + 1]], scores[n]) for n in range(len(ids))]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # --- internals ---------------------------------------------------------------------------

    def _prompt_ids(self, messages: ChatMessages, *, reserve: int) -> list[int]:
        """Chat-template token ids, checked to leave ``reserve`` tokens of room in the context."""
        try:
            text = self.tokenizer.apply_chat_template(
                [dict(m) for m in messages], add_generation_prompt=True, tokenize=False
            )
        except Exception as exc:  # jinja errors: a role the template rejects, a missing key...
            raise LLMError(f"model {self.name!r}: the chat template rejected the messages: {exc}") from exc
        # The template already writes any BOS token, so the tokenizer must not add one again.
        ids: list[int] = self.tokenizer(str(text), add_special_tokens=False)["input_ids"]
        check_fits(self, len(ids), reserve, "max_new_tokens")
        return ids

    def _generate_chunk(
        self, prompts: list[list[int]], max_new_tokens: int, temperature: float, stop: list[str]
    ) -> list[Generation]:
        out = self._run_generate(
            prompts, max_new_tokens, temperature, stop, return_dict_in_generate=True, output_logits=True
        )
        width = max(map(len, prompts))
        new = out.sequences[:, width:]  # (batch, steps)
        # log-softmax one step at a time: stacking all steps first would hold steps x vocab floats per row
        steps = [torch.log_softmax(step.float(), -1).gather(1, new[:, i : i + 1]) for i, step in enumerate(out.logits)]
        logprobs = torch.cat(steps, dim=1)  # (batch, steps)
        return [
            self._finish(new[row].tolist(), logprobs[row].tolist(), len(prompt), stop)
            for row, prompt in enumerate(prompts)
        ]

    def _run_generate(
        self, prompts: list[list[int]], max_new_tokens: int, temperature: float, stop: list[str], **extra: Any
    ) -> Any:
        width = max(map(len, prompts))
        # Left padding: every row's last prompt token sits at the same position, where generation starts.
        ids = torch.tensor([[self._pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        sampling: dict[str, Any] = {"do_sample": temperature > 0}
        if temperature > 0:
            sampling["temperature"] = temperature
        if stop:
            sampling.update(stop_strings=stop, tokenizer=self.tokenizer)
        try:
            with torch.inference_mode():
                return self.model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                    eos_token_id=self._eos_ids, pad_token_id=self._pad_id, **sampling, **extra,
                )  # fmt: skip
        except Exception as exc:
            raise _failed(self.name, exc) from exc

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def _finish(self, ids: list[int], logprobs: list[float], prompt_tokens: int, stop: list[str]) -> Generation:
        """One row of a batch: cut at the end token or the first stop string."""
        end = next((i for i, token in enumerate(ids) if token in self._eos_ids), None)
        kept = ids if end is None else ids[:end]  # the end token is not part of the reply
        text = self._decode(kept)
        cut = cut_at_stop(text, stop)
        if cut is not None:
            text = cut
            kept = tokens_covering(kept, len(text), self._decode)
        return Generation(
            text=text,
            token_logprobs=logprobs[: len(kept)],
            prompt_tokens=prompt_tokens,
            completion_tokens=len(kept),
            # a row that met no end token nor stop string ran until max_new_tokens
            finish_reason="stop" if end is not None or cut is not None else "length",
        )

class _Cancelled(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), device=input_ids.device)  # type: ignore[return-value]


def _end_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token that ends a reply: the generation config's, the tokenizer's, and known end-of-turn markers."""
    configured = model.generation_config.eos_token_id
    ids = list(configured) if isinstance(configured, (list, tuple)) else [configured]
    ids.append(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.extend(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab and t in tokenizer.all_special_tokens)
    unique = list(dict.fromkeys(int(i) for i in ids if i is not None))
    if not unique:
        raise LLMError("model has no end token: generation_config.eos_token_id and tokenizer.eos_token are unset")
    return unique


def _failed(name: str, exc: Exception) -> LLMError:
    return LLMError(f"model {name!r}: generation failed: {type(exc).__name__}: {exc}")
