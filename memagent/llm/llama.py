"""``LlamaCppLLM``: a GGUF model run by llama.cpp in this process (the ``llama`` extra).

On a CPU it is several times faster than transformers on the same quantized weights: it computes in
the file's own 4-bit format instead of dequantizing to float32 (issue 13 measured, on 2 cores,
decode 43 tok/s vs 5 for the 0.5B reader). ``LocalLLM`` stays for training, KV-cache work and GPUs.

The generation loop is ours, on top of llama.cpp's decode, for three reasons:
- log-probabilities come from the raw logits (as in ``LocalLLM``), for every generated token;
- the KV cache is kept between calls and a new prompt reuses its longest common prefix, so the fixed
  instructions at the top of a reader or judge prompt are computed once, not once per question;
- ``continuation_logprobs`` and ``text_logprobs`` ask llama.cpp for logits at exactly the positions
  they score.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

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

DEFAULT_CONTEXT = 8192  # tokens of KV cache; Qwen2.5 trains on 32k, but a reader prompt is a few thousand
LOGIT_CHUNK = 64  # positions decoded at once when every position's logits are needed (64 x vocab floats)


class LlamaCppLLM(LLM):
    """A GGUF file and its llama.cpp context. Not thread-safe: ``Memory`` wraps it in ``LockedLLM``.

    ``n_threads`` defaults to every core (llama-cpp-python's own default is half of them).
    ``seed`` drives sampling when ``temperature > 0``; greedy decoding ignores it.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        n_ctx: int = DEFAULT_CONTEXT,
        n_threads: int | None = None,
        seed: int = 0,
        adapter: str | None = None,
    ) -> None:
        """``adapter``: a LoRA adapter of ``memagent.answer.rtuning`` (name or folder), applied by llama.cpp."""
        require("llama", "llama_cpp")
        from llama_cpp import Llama

        path = Path(path)
        if not path.is_file():
            raise LLMError(f"model {str(path)!r}: no such GGUF file")
        threads = n_threads or os.cpu_count() or 1
        self.name = name or path.stem
        lora = None
        if adapter is not None:
            from memagent.answer.rtuning import gguf_adapter

            header = Llama(str(path), vocab_only=True, verbose=False).metadata  # the file's metadata only
            lora = str(gguf_adapter(adapter, self.name, header))
        try:
            self.llama = Llama(
                str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False,
                lora_path=lora,
            )
        except Exception as exc:  # ValueError from llama-cpp-python when the file does not load
            raise LLMError(f"model {str(path)!r}: llama.cpp could not load it: {type(exc).__name__}: {exc}") from exc
        if adapter is not None:
            self.name = f"{self.name}+{Path(lora or '').parent.name}"
        self.context_window = self.llama.n_ctx()
        self.n_vocab = self.llama.n_vocab()
        self._rng = np.random.default_rng(seed)
        self._template = _chat_formatter(self.llama, self.name)
        self._end_ids = _end_token_ids(self.llama)

    # --- the LLM interface -------------------------------------------------------------------

    def generate(
        self,
        messages: ChatMessages,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Generation:
        check_options(max_new_tokens, temperature, stop)
        prompt = self._prompt_ids(messages, reserve=max_new_tokens)
        tokens, logprobs, ended = [], [], False
        for token, logprob in self._sample(prompt, max_new_tokens, temperature):
            if token in self._end_ids:
                ended = True
                break
            tokens.append(token)
            logprobs.append(logprob)
            if stop and cut_at_stop(self._text(tokens), stop) is not None:
                break
        text = self._text(tokens)
        cut = cut_at_stop(text, stop or ())
        if cut is not None:  # the token a stop string begins in stays, so the logprobs cover the text
            text, tokens = cut, tokens_covering(tokens, len(cut), self._text)
        return Generation(
            text=text,
            token_logprobs=logprobs[: len(tokens)],
            prompt_tokens=len(prompt),
            completion_tokens=len(tokens),
            finish_reason="stop" if ended or cut is not None else "length",
        )

    def stream(
        self,
        messages: ChatMessages,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> Generator[str, None, None]:
        """Text pieces as they are decoded (whole UTF-8 characters); they join to what ``generate`` returns."""
        check_options(max_new_tokens, temperature, stop)
        prompt = self._prompt_ids(messages, reserve=max_new_tokens)
        yield from until_stop(self._pieces(prompt, max_new_tokens, temperature), stop or ())

    def continuation_logprobs(self, messages: ChatMessages, continuation: str) -> list[float]:
        prompt = self._prompt_ids(messages, reserve=0)
        tokens = self._tokenize(continuation)
        if not tokens:
            return []
        check_fits(self, len(prompt), len(tokens), "continuation")
        # logits at the prompt's last position and at every continuation token but the last
        rows = self._logits_at(prompt + tokens, first=len(prompt) - 1)
        return [float(_log_softmax(row)[token]) for row, token in zip(rows, tokens, strict=True)]

    def text_logprobs(self, text: str) -> list[tuple[str, float]]:
        """Plain text, no template; the first token has nothing before it and gets 0.0."""
        tokens = self._tokenize(text)
        if not tokens:
            return []
        check_fits(self, len(tokens), 0, "text")
        rows = self._logits_at(tokens, first=0)
        scores = [0.0] + [float(_log_softmax(row)[token]) for row, token in zip(rows, tokens[1:])]
        pieces = _pieces_of(text, [self.llama.detokenize([t]) for t in tokens])
        return list(zip(pieces, scores, strict=True))

    def count_tokens(self, text: str) -> int:
        return len(self._tokenize(text))

    # --- decoding ----------------------------------------------------------------------------

    def _sample(self, prompt: list[int], max_new_tokens: int, temperature: float) -> Generator[tuple[int, float]]:
        """Tokens one by one with their log-probability under the raw logits."""
        logits = self._feed(prompt)
        for _ in range(max_new_tokens):
            logprobs = _log_softmax(logits)
            if temperature > 0:
                weights = np.exp((logprobs - logprobs.max()) / temperature)
                token = int(self._rng.choice(len(weights), p=weights / weights.sum()))
            else:
                token = int(np.argmax(logits))
            yield token, float(logprobs[token])
            if token in self._end_ids:
                return
            logits = self._feed([token], append=True)

    def _pieces(self, prompt: list[int], max_new_tokens: int, temperature: float) -> Generator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span tokens
        for token, _ in self._sample(prompt, max_new_tokens, temperature):
            if token in self._end_ids:
                break
            piece = decoder.decode(self.llama.detokenize([token]))
            if piece:
                yield piece
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail

    def _feed(self, tokens: list[int], *, append: bool = False) -> np.ndarray:
        """Decode ``tokens`` after the cache's longest common prefix with them (or after everything
        cached, ``append``); the logits of the last one."""
        llama = self.llama
        if not append:
            keep = _common_prefix(llama.input_ids[: llama.n_tokens].tolist(), tokens)
            keep = min(keep, len(tokens) - 1)  # at least one token is decoded, to have its logits
            llama.n_tokens = keep  # eval() drops the cache past n_tokens before decoding
            tokens = tokens[keep:]
        try:
            llama.eval(tokens)
        except Exception as exc:
            raise LLMError(f"model {self.name!r}: decoding failed: {type(exc).__name__}: {exc}") from exc
        logits = np.ctypeslib.as_array(llama._ctx.get_logits_ith(-1), shape=(self.n_vocab,))
        return np.array(logits, dtype=np.float32)

    def _logits_at(self, tokens: list[int], *, first: int) -> list[np.ndarray]:
        """The logits after each of ``tokens[first:-1]`` (row i predicts ``tokens[first + i + 1]``).

        Up to ``first`` the cache is reused where it matches; past it every position's logits are kept,
        ``LOGIT_CHUNK`` positions per decode."""
        if first > 0:
            rows, begin = [self._feed(tokens[: first + 1])], first + 1
        else:
            self._reset()
            rows, begin = [], 0
        for start in range(begin, len(tokens) - 1, LOGIT_CHUNK):
            rows.extend(self._decode_all(tokens[start : min(start + LOGIT_CHUNK, len(tokens) - 1)]))
        return rows

    def _decode_all(self, chunk: list[int]) -> list[np.ndarray]:
        """Decode ``chunk`` after the cache, keeping the logits of every position."""
        llama = self.llama
        llama._ctx.kv_cache_seq_rm(-1, llama.n_tokens, -1)
        llama._batch.set_batch(batch=chunk, n_past=llama.n_tokens, logits_all=True)
        try:
            llama._ctx.decode(llama._batch)
        except Exception as exc:
            raise LLMError(f"model {self.name!r}: decoding failed: {type(exc).__name__}: {exc}") from exc
        llama.input_ids[llama.n_tokens : llama.n_tokens + len(chunk)] = chunk
        llama.n_tokens += len(chunk)
        context: Any = llama._ctx  # llama-cpp-python leaves get_logits untyped
        logits = np.ctypeslib.as_array(context.get_logits(), shape=(len(chunk), self.n_vocab))
        return [np.array(row) for row in logits]

    def _reset(self) -> None:
        self.llama.n_tokens = 0
        self.llama._ctx.kv_cache_seq_rm(-1, 0, -1)

    # --- text --------------------------------------------------------------------------------

    def _prompt_ids(self, messages: ChatMessages, *, reserve: int) -> list[int]:
        try:
            text = self._template(messages=[dict(m) for m in messages]).prompt
        except Exception as exc:  # jinja errors: a role the template rejects, a missing key...
            raise LLMError(f"model {self.name!r}: the chat template rejected the messages: {exc}") from exc
        ids = self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)  # the template writes BOS
        check_fits(self, len(ids), reserve, "max_new_tokens")
        return ids

    def _tokenize(self, text: str) -> list[int]:
        return self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []

    def _text(self, tokens: list[int]) -> str:
        return self.llama.detokenize(tokens).decode("utf-8", errors="replace")

def _chat_formatter(llama: Any, name: str) -> Any:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise LLMError(f"model {name!r}: the GGUF file has no chat template, so chats cannot be formatted")

    def token_text(token: int) -> str:
        return llama.detokenize([token], special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    eos, bos = token_text(llama.token_eos()), token_text(llama.token_bos())
    return Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)


def _end_token_ids(llama: Any) -> frozenset[int]:
    """Every token llama.cpp marks end-of-generation (end of text, end of turn, ...)."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    return frozenset(t for t in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted: np.ndarray = logits.astype(np.float64) - logits.max()
    result: np.ndarray = shifted - np.log(np.exp(shifted).sum())
    return result


def _pieces_of(text: str, token_bytes: list[bytes]) -> list[str]:
    """``text`` split at token boundaries so the pieces join back to it exactly; a boundary inside a
    UTF-8 character moves to the character's end."""
    pieces, used, consumed = [], 0, b""
    for raw in token_bytes:
        consumed += raw
        chars = len(consumed.decode("utf-8", errors="ignore"))
        pieces.append(text[used:chars])
        used = chars
    if pieces:
        pieces[-1] += text[used:]
    return pieces
