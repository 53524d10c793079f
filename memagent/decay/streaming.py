"""A causal LM that reads an endless stream through a bounded KV cache (SirLLM, and its baselines).

SirLLM (Yao, Li, Zhao 2024) keeps the first few tokens (attention sinks) and the tokens with the
highest surprisal, every stored score multiplied by a decay ratio each turn so that old salient
tokens fade. StreamingLLM, its baseline, keeps the sinks and the most recent tokens; the full
cache keeps everything. Before each turn, if the cache and the turn's tokens would not fit:

- SirLLM keeps the ``budget − incoming`` highest-scored tokens (over the whole cache), then the
  sinks, then fills what room is left with the most recent tokens, in their original order;
- StreamingLLM keeps the sinks and the most recent ``size − start − incoming`` tokens;

so that after the turn the cache holds at most ``start + budget + recent`` tokens (or the sinks and
the turn, when one turn is longer than that).

Positions: the cache holds keys already rotated (transformers' rotary models: Llama, Qwen2...) and
new tokens take the next position after the cache's last, so a kept key is rotated once more, by
(new index − old index), when the tokens before it are evicted. This equals the reference code's
re-rotation of unrotated keys on every step (StreamingLLM's pos-shift, Llama only there).

Each turn goes through the model once: the choices of a multiple-choice turn are scored on the
shared cache (a choice is fed, and taken back, only when greedy decoding could produce it).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import DynamicCache

from memagent.decay.entropy import Scorer, chunk_scores

Policy = Literal["full", "streaming", "sirllm"]


@dataclass(frozen=True)
class CachePolicy:
    """What the cache keeps: ``start`` sink tokens plus ``budget`` (+ ``recent``) others.

    The paper's code: start 4, recent 0; budget 1,020 (grocery), 508 (DailyDialog), 1,020
    (rock-paper-scissors); decay 1.0, 0.7, 0.9. ``decay`` applies to SirLLM only."""

    kind: Policy = "sirllm"
    start: int = 4
    budget: int = 1020
    recent: int = 0
    decay: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("full", "streaming", "sirllm"):
            raise ValueError(f"kind: {self.kind!r} is not 'full', 'streaming' or 'sirllm'")
        for name in ("start", "budget", "recent"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be at least 0, not {getattr(self, name)}")
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"decay: must be in (0, 1], not {self.decay}")

    @property
    def size(self) -> int | None:
        """Most tokens held after a turn (None: unbounded)."""
        return None if self.kind == "full" else self.start + self.budget + self.recent


def kept_positions(policy: CachePolicy, scores: torch.Tensor, incoming: int) -> torch.Tensor | None:
    """The cache positions to keep before ``incoming`` tokens arrive, in order; None: keep all."""
    length, size = scores.numel(), policy.size
    if size is None or length == 0 or length + incoming <= size:
        return None
    # a turn longer than the cache leaves only the sinks; it is kept whole, and cut at the next turn
    sinks = min(policy.start, length)
    room = max(size - incoming, sinks)
    if policy.kind == "streaming":
        return torch.cat([torch.arange(sinks), torch.arange(length - (room - sinks), length)])
    top = max(0, policy.budget - incoming)
    # a stable sort: among equal scores the earlier token ranks first, as in the reference
    ranked = torch.sort(scores, descending=True, stable=True).indices[:top].tolist()
    keep = set(ranked) | set(range(sinks))
    for position in range(length - 1, -1, -1):  # then the most recent tokens, while there is room
        if len(keep) >= room:
            break
        keep.add(position)
    return torch.tensor(sorted(keep), dtype=torch.long)  # |top ∪ sinks| <= budget − incoming + start <= room


def rotary_of(model: Any) -> Any:
    """The model's rotary embedding (transformers' Llama, Qwen2, Mistral... keep it on the decoder)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    rotary = getattr(decoder, "rotary_emb", None)
    if rotary is None:
        raise ValueError(f"{type(model).__name__}: not a rotary decoder (no rotary_emb): its cache cannot be shifted")
    return rotary


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def shift_keys(keys: torch.Tensor, shift: torch.Tensor, rotary: Any) -> torch.Tensor:
    """Keys [batch, heads, n, head_dim] rotated by ``shift`` [n] positions each (negative: earlier).

    Rotations compose, R(a + b) = R(a) R(b), so a key rotated for position p and then by (q − p)
    is the key for position q. The rotary's attention scaling (some rope types) is taken out: it
    was applied once already."""
    # in float32 whatever the cache holds: a kept key is rotated at every eviction, and bfloat16
    # cos/sin and arithmetic would add their rounding each time instead of only the final cast's
    # (the rotary returns cos/sin in its input's dtype)
    exact = keys.float()
    cos, sin = rotary(exact, shift.reshape(1, -1).to(keys.device))
    scale = float(getattr(rotary, "attention_scaling", 1.0))
    cos, sin = cos[:, None] / scale, sin[:, None] / scale
    if cos.shape[-1] != keys.shape[-1]:
        raise ValueError(f"rotary dim {cos.shape[-1]} is not the head dim {keys.shape[-1]} (partial rotary)")
    shifted: torch.Tensor = (exact * cos + rotate_half(exact) * sin).to(keys.dtype)
    return shifted


class StreamingLM:
    """A causal LM and one endless stream, held in a cache bounded by ``policy``.

    A turn: ``begin_turn(incoming)`` makes room for it (evicts, then decays the stored scores),
    ``feed`` puts tokens through the model, ``end_turn`` scores the turn's tokens. ``mark`` and
    ``rollback`` try a continuation and take it back."""

    def __init__(self, model: Any, policy: CachePolicy, scorer: Scorer = "paper") -> None:
        if scorer not in ("paper", "reference"):
            raise ValueError(f"scorer: {scorer!r} is not 'paper' or 'reference'")
        self.model, self.policy, self.scorer = model, policy, scorer
        self.rotary = rotary_of(model) if policy.kind != "full" else None
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.device = next(model.parameters()).device
        self.evicted = 0
        self.reset()

    def reset(self) -> None:
        """Forget the stream."""
        self.cache = DynamicCache()
        self.scores = torch.zeros(0)
        self._last_logits: torch.Tensor | None = None  # predicting the next token to come
        self._turn_ids: list[torch.Tensor] = []
        self._turn_logits: list[torch.Tensor] = []
        self._turn_previous: torch.Tensor | None = None
        self._float_keys: list[torch.Tensor] | None = None  # a low-precision cache's keys, in float32

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()

    def begin_turn(self, incoming: int) -> None:
        """Make room for ``incoming`` tokens, then decay what is stored (SirLLM, every turn)."""
        keep = kept_positions(self.policy, self.scores, incoming)
        if keep is not None:
            self._evict(keep)
        if self.policy.kind == "sirllm":
            self.scores = self.scores * self.policy.decay

    @torch.inference_mode()
    def feed(self, ids: torch.Tensor) -> torch.Tensor:
        """Put ``ids`` [n] through the model after the cache; their logits [n, vocab]."""
        if ids.dim() != 1 or ids.numel() == 0:
            raise ValueError(f"ids: a non-empty 1-d tensor of token ids, not shape {tuple(ids.shape)}")
        if not self._turn_ids:  # the turn's first chunk: what predicted its first token
            self._turn_previous = self._last_logits
        out = self.model(input_ids=ids.reshape(1, -1).to(self.device), use_cache=True,
                         **{self._cache_arg: self.cache})
        logits: torch.Tensor = out.logits[0].float().cpu()
        self._turn_ids.append(ids.cpu())
        self._turn_logits.append(logits)
        self._last_logits = logits[-1]
        return logits

    def mark(self) -> tuple[int, int, torch.Tensor | None]:
        return self.length, len(self._turn_ids), self._last_logits

    def rollback(self, mark: tuple[int, int, torch.Tensor | None]) -> None:
        """Take back everything fed since ``mark``."""
        length, chunks, last = mark
        for layer in self._layers():
            layer.keys, layer.values = layer.keys[..., :length, :], layer.values[..., :length, :]
        if self._float_keys is not None:
            self._float_keys = [keys[..., :length, :] for keys in self._float_keys]
        del self._turn_ids[chunks:], self._turn_logits[chunks:]
        self._last_logits = last

    def end_turn(self) -> None:
        """Score the turn's tokens (once, over the whole turn) and store the scores (SirLLM's policy
        only: full and StreamingLLM never read them)."""
        if not self._turn_ids:
            return
        ids = torch.cat(self._turn_ids)
        if self.policy.kind == "sirllm":  # only SirLLM ranks by score; the others keep a placeholder per token
            scores = chunk_scores(self.scorer, torch.cat(self._turn_logits), ids, self._turn_previous)
        else:
            scores = torch.zeros(ids.numel())
        self.scores = torch.cat([self.scores, scores])
        self._turn_ids, self._turn_logits = [], []

    def choose(self, prompt: torch.Tensor, choices: list[torch.Tensor], greedy_first: bool = True) -> int:
        """A multiple-choice turn: the prompt once, the choices scored on it, the chosen one kept.

        The reference's rule: the first choice that greedy decoding produces whole, else the highest
        log-probability of a choice's first token (``greedy_first`` False: always that). Only a
        choice starting with the greedy token can be produced whole, so only those are fed, one at a
        time on the shared cache, and taken back unless chosen."""
        if not choices or any(c.dim() != 1 or c.numel() == 0 for c in choices):
            raise ValueError("choices: at least one, each a non-empty 1-d tensor of token ids")
        self.begin_turn(prompt.numel() + max(c.numel() for c in choices))
        before = self.feed(prompt)[-1]
        firsts = torch.log_softmax(before, dim=-1)[torch.stack([c[0] for c in choices]).cpu()]
        greedy_token = int(before.argmax())
        for n, choice in enumerate(choices):
            if not greedy_first or int(choice[0]) != greedy_token:
                continue
            mark = self.mark()
            logits = self.feed(choice)
            if torch.equal(logits[:-1].argmax(-1), choice[1:].cpu()):
                self.end_turn()
                return n
            self.rollback(mark)
        pick = int(torch.argmax(firsts))  # the first of equal maxima
        self.feed(choices[pick])
        self.end_turn()
        return pick

    @torch.inference_mode()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int, stop_ids: set[int]) -> list[int]:
        """A reply, greedy: the prompt and up to ``max_new_tokens`` made room for first, so the
        cache never overflows. The stop token, when reached, stays in the cache (it ends the turn)."""
        self.begin_turn(prompt.numel() + max_new_tokens)
        logits = self.feed(prompt)[-1]
        reply: list[int] = []
        for _ in range(max_new_tokens):
            token = int(logits.argmax())
            reply.append(token)
            logits = self.feed(torch.tensor([token]))[-1]
            if token in stop_ids:
                break
        self.end_turn()
        return reply

    def _layers(self) -> list[Any]:
        """The cache's attention layers (each holds ``keys`` and ``values``, [batch, heads, n, head_dim])."""
        return list(self.cache.layers)

    def _sync_float_keys(self) -> None:
        """A bfloat16 or float16 cache keeps its keys in float32 too, so that the rotations of every
        eviction compose in float32 and the cache takes one rounding, not one per eviction (~0.2% of
        a key's norm each in bfloat16: 2% after ten evictions). Keys fed since the last eviction
        were never rotated here, so they are copied as they are, once, when the next one comes."""
        layers = self._layers()
        if layers[0].keys.dtype == torch.float32:
            return
        have = 0 if self._float_keys is None else self._float_keys[0].shape[-2]
        new = [layer.keys[..., have:, :].float() for layer in layers]
        self._float_keys = new if self._float_keys is None else [
            torch.cat([old, more], dim=-2) for old, more in zip(self._float_keys, new, strict=True)]

    def _evict(self, keep: torch.Tensor) -> None:
        self._sync_float_keys()
        shift = torch.arange(keep.numel()) - keep
        for n, layer in enumerate(self._layers()):
            index = keep.to(layer.keys.device)
            if self._float_keys is None:
                layer.keys = shift_keys(layer.keys[..., index, :], shift, self.rotary)
            else:
                self._float_keys[n] = shift_keys(self._float_keys[n][..., index, :], shift, self.rotary)
                layer.keys = self._float_keys[n].to(layer.keys.dtype)
            layer.values = layer.values[..., index, :]
        self.evicted += self.scores.numel() - keep.numel()
        self.scores = self.scores[keep]
