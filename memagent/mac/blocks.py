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
    """``tokens`` [B, T, d] with the frozen sentence embedding of ``states`` put first -> [B, 1 + T, d]
    (zero-padded to d when the tokens are wider than the encoder: cosines are unchanged)."""
    key = sentence_key(states, mask)
    key = torch.nn.functional.pad(key, (0, tokens.shape[-1] - key.shape[-1]))
    return torch.cat([key[:, None], tokens], dim=1)


class Pointer(nn.Module):
    """Each query takes a mixture of value vectors, weighted by its attention over their keys: it copies
    (a convex combination of what is there), where an attention block's output would be a learnt map."""

    def __init__(self, width: int, key_width: int) -> None:
        super().__init__()
        self.query, self.key = nn.Linear(width, width), nn.Linear(key_width, width)
        self.norm_key = nn.LayerNorm(key_width)  # word embeddings are small (Qwen2.5's norm ~0.5)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                padding: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
        """queries [B, T, d], keys [B, N, k], values [B, N, v], padding [B, N] True where there is nothing,
        bias [B, N] added to every query's logits -> [B, T, v]."""
        scale = queries.shape[-1] ** -0.5
        logits = torch.einsum("btd,bnd->btn", self.query(queries), self.key(self.norm_key(keys))) * scale
        if bias is not None:
            logits = logits + bias[:, None, :]
        if padding is not None:
            logits = logits.masked_fill(padding[:, None, :], float("-inf"))
        return torch.einsum("btn,bnv->btv", logits.softmax(-1), values)
