"""Aggregation: the question reads the whole bank and gives one set of T tokens (MAC's aggregation network).

The question gets its own T tokens from its own resampler (MAC: a separate question encoder with
its own learnable queries); they then cross-attend over the bank flattened to S·T tokens. A bank
larger than ``window`` is aggregated window by window, and the windows' outputs again, until one
window is left (MAC's hierarchical aggregation: memory grows with the window, not the bank).

With ``match`` (not in MAC) the question and every bank entry carry their frozen sentence embedding
as a first vector; each entry's tokens get ``scale × cosine`` added to the attention paid to them,
and an aggregated window carries the score-weighted mean of its entries' keys up to the next level.
"""

from __future__ import annotations

import torch
from torch import nn

from memagent.mac.blocks import CrossAttentionBlock, Resampler, with_key
from memagent.mac.config import MacConfig


class Aggregator(nn.Module):
    def __init__(self, config: MacConfig, encoder_width: int) -> None:
        super().__init__()
        self.project = nn.Identity() if encoder_width == config.width else nn.Linear(encoder_width, config.width)
        self.question = Resampler(config.tokens, config.width, config.heads, config.amortizer_blocks)
        self.blocks = nn.ModuleList(CrossAttentionBlock(config.width, config.heads)
                                    for _ in range(config.aggregator_blocks))
        self.norm = nn.LayerNorm(config.width)
        self.window = config.window
        # the cosine's scale: at 20, a key 0.2 closer gets e^4 ≈ 55× the attention (learnt from there)
        self.match_scale = nn.Parameter(torch.tensor(20.0)) if config.match else None

    def encode_question(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Question token states [Q, N, d_enc] -> the question's own T tokens [Q, T, width] (``match``:
        [Q, 1 + T, width], its frozen key first)."""
        out: torch.Tensor = self.question(self.project(states), mask)
        return with_key(out, states, mask) if self.match_scale is not None else out

    def forward(self, question: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        """question [Q, T, width] (from ``encode_question``), bank [Q, S, T, width] or [S, T, width]
        (one bank for every question) -> [Q, T, width] (with ``match``, T counts the key)."""
        if bank.dim() == 3:
            bank = bank.expand(question.shape[0], -1, -1, -1)
        bias = None
        if self.match_scale is not None:  # split off the keys; score each entry by its key
            (key, question), (keys, bank) = (question[:, 0], question[:, 1:]), (bank[:, :, 0], bank[:, :, 1:])
            scores = self.match_scale * torch.einsum("qd,qsd->qs", key, keys)  # [Q, S]
            bias = scores.repeat_interleave(bank.shape[2], dim=1)  # the entry's score on each of its tokens
        context = bank.flatten(1, 2)  # [Q, S·T, width]
        out = question
        for block in self.blocks:
            out = block(out, context, bias=bias)
        normed: torch.Tensor = self.norm(out)
        if self.match_scale is not None:  # the window's key, for the next level of a hierarchy
            mixed = torch.nn.functional.normalize(torch.einsum("qs,qsd->qd", scores.softmax(-1), keys), dim=-1)
            normed = torch.cat([mixed[:, None], normed], dim=1)
        return normed

    def hierarchical(self, question: torch.Tensor, bank: torch.Tensor, window: int | None = None) -> torch.Tensor:
        """Like ``forward`` on a bank [S, T, width] of any size, reading at most ``window`` entries at a time."""
        window = window or self.window
        level = bank.expand(question.shape[0], -1, -1, -1)  # [Q, S, T, width]
        while level.shape[1] > window:
            windows = torch.split(level, window, dim=1)
            level = torch.stack([self(question, w) for w in windows], dim=1)  # [Q, ceil(S/window), T, width]
        out: torch.Tensor = self(question, level)
        return out
