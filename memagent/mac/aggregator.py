"""Aggregation: the question reads the whole bank and gives one set of T tokens (MAC's aggregation network).

The question gets its own T tokens from its own resampler (MAC: a separate question encoder with
its own learnable queries); they then cross-attend over the bank flattened to S·T tokens. A bank
larger than ``window`` is aggregated window by window, and the windows' outputs again, until one
window is left (MAC's hierarchical aggregation: memory grows with the window, not the bank).
"""

from __future__ import annotations

import torch
from torch import nn

from memagent.mac.blocks import CrossAttentionBlock, Resampler
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

    def encode_question(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Question token states [Q, N, d_enc] -> the question's own T tokens [Q, T, width]."""
        out: torch.Tensor = self.question(self.project(states), mask)
        return out

    def forward(self, question: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        """question [Q, T, width] (from ``encode_question``), bank [Q, S, T, width] or [S, T, width]
        (one bank for every question) -> [Q, T, width]."""
        if bank.dim() == 3:
            bank = bank.expand(question.shape[0], -1, -1, -1)
        context = bank.flatten(1, 2)  # [Q, S·T, width]
        out = question
        for block in self.blocks:
            out = block(out, context)
        normed: torch.Tensor = self.norm(out)
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
