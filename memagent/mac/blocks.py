"""The one building block MAC's networks share: a pre-LayerNorm cross-attention block."""

from __future__ import annotations

import torch
from torch import nn


class CrossAttentionBlock(nn.Module):
    """Queries attend to a context, then an MLP; both residual, both pre-LayerNorm (as in MAC)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm_query, self.norm_context, self.norm_mlp = (nn.LayerNorm(width) for _ in range(3))
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, queries: torch.Tensor, context: torch.Tensor,
                padding: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
        """queries [B, T, d], context [B, N, d], padding [B, N] True where the context is padding, bias
        [B, N] added to every query's attention logits over the context."""
        context = self.norm_context(context)
        mask = None
        if bias is not None:  # [B·heads, T, N], the layout MultiheadAttention takes
            heads = self.attention.num_heads
            mask = bias[:, None, None, :].expand(-1, heads, queries.shape[1], -1).flatten(0, 1)
        attended, _ = self.attention(self.norm_query(queries), context, context, key_padding_mask=padding,
                                     attn_mask=mask, need_weights=False)
        queries = queries + attended
        out: torch.Tensor = queries + self.mlp(self.norm_mlp(queries))
        return out


class Resampler(nn.Module):
    """T learnable queries (init N(0, 0.02²), as MAC's) read a variable-length sequence through cross-attention
    blocks: any number of token states in, T vectors out."""

    def __init__(self, tokens: int, width: int, heads: int, blocks: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(tokens, width) * 0.02)
        self.blocks = nn.ModuleList(CrossAttentionBlock(width, heads) for _ in range(blocks))
        self.norm = nn.LayerNorm(width)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """states [B, N, d] with mask [B, N] (1 = a real token) -> [B, T, d]."""
        out = self.queries.expand(states.shape[0], -1, -1)
        for block in self.blocks:
            out = block(out, states, padding=mask == 0)
        normed: torch.Tensor = self.norm(out)
        return normed


def sentence_key(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The frozen encoder's sentence embedding from its token states [B, N, d] and mask [B, N]: the
    masked mean, unit length (MiniLM's own pooling) -> [B, d]."""
    weights = mask.to(states.dtype)[..., None]
    mean = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(mean, dim=-1)


def with_key(tokens: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``tokens`` [B, T, d] with the frozen sentence embedding of ``states`` put first -> [B, 1 + T, d]."""
    return torch.cat([sentence_key(states, mask)[:, None], tokens], dim=1)
