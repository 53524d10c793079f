"""Injection: T aggregated tokens become a key/value prefix at every layer of the frozen LM (P-tuning v2).

The prefix is given to the LM as its past key values, so the question's tokens attend to it as to
an earlier context; the attention mask is padded by T to match. Grouped-query models (Qwen2,
SmolLM2) get num_kv_heads × head_dim per layer, what their caches hold.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import DynamicCache


def kv_shape(lm_config: Any) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of a transformers decoder's config."""
    heads = int(lm_config.num_attention_heads)
    kv_heads = int(getattr(lm_config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(lm_config, "head_dim", None) or lm_config.hidden_size // heads)
    return int(lm_config.num_hidden_layers), kv_heads, head_dim


class PrefixGenerator(nn.Module):
    """A linear map per layer: tokens [Q, T, width] -> keys and values [Q, layers, 2, kv_heads, T, head_dim],
    added to a learnt start per position (``start_from``: the keys and values of real text)."""

    def __init__(self, width: int, tokens: int, lm_config: Any) -> None:
        super().__init__()
        self.layers, self.kv_heads, self.head_dim = kv_shape(lm_config)
        size = self.layers * 2 * self.kv_heads * self.head_dim
        # all layers' maps as one matrix: the same as one Linear per layer, in one matmul
        self.linear = nn.Linear(width, size)
        # small at the start: the memory's part of the prefix grows as training finds it useful
        nn.init.normal_(self.linear.weight, std=0.02 / width**0.5)
        nn.init.zeros_(self.linear.bias)
        self.start = nn.Parameter(torch.zeros(tokens, size))

    @torch.no_grad()
    def start_from(self, lm: Any, ids: torch.Tensor) -> None:
        """Start the prefix as the LM's own keys and values for the first T tokens of ``ids`` [n ≥ T].

        Near-zero keys get almost no attention next to a pretrained LM's real ones (attention sinks
        hold most of it), so almost no gradient reaches the prefix and it learns slowly; real
        tokens' keys and values are attended as text is (prefix-tuning's initialisation from real
        words' activations, Li & Liang 2021)."""
        t = self.start.shape[0]
        if ids.numel() < t:
            raise ValueError(f"ids: {ids.numel()} tokens, the prefix needs {t}")
        out = lm(input_ids=ids[:t].reshape(1, -1).to(next(lm.parameters()).device), use_cache=True)
        start = stacked_cache(out, self.layers)[0].permute(3, 0, 1, 2, 4)  # [T, layers, 2, kv_heads, head_dim]
        self.start.copy_(start.reshape(t, -1).to(self.start))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q, t, _ = tokens.shape
        out = (self.linear(tokens) + self.start).view(q, t, self.layers, 2, self.kv_heads, self.head_dim)
        permuted: torch.Tensor = out.permute(0, 2, 3, 4, 1, 5)  # [Q, layers, 2, kv_heads, T, head_dim]
        return permuted


class WordPrefix(nn.Module):
    """``injection="words"``: learnt start vectors, then the aggregated words [Q, T, d_lm], read by the
    frozen LM itself; its cache is the prefix [Q, layers, 2, kv_heads, K + T, head_dim]. These are the
    LM's own keys and values for what it read, so nothing has to map a vector into its space."""

    def __init__(self, lm: Any, start_ids: torch.Tensor) -> None:
        super().__init__()
        self.lm = [lm]  # in a list: not a submodule, so never saved nor trained
        self.layers, self.kv_heads, self.head_dim = kv_shape(lm.config)
        table = lm.get_input_embeddings()
        with torch.no_grad():  # the start is real text's embeddings (``PREFIX_START``), then learnt
            self.start = nn.Parameter(table(start_ids.to(table.weight.device)).detach().clone())

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        embeds = torch.cat([self.start.expand(words.shape[0], -1, -1), words], dim=1)
        return stacked_cache(self.lm[0].base_model(inputs_embeds=embeds, use_cache=True), self.layers)


def stacked_cache(out: Any, layers: int) -> torch.Tensor:
    """A forward pass's cache as one tensor [B, layers, 2, kv_heads, L, head_dim] (keys, then values)."""
    cache = getattr(out, "cache", None) or out.past_key_values  # the field's name before transformers 5
    return torch.stack([torch.stack([cache.layers[n].keys, cache.layers[n].values], dim=1) for n in range(layers)],
                       dim=1)


def prefix_cache(prefix: torch.Tensor) -> DynamicCache:
    """A fresh cache holding ``prefix`` [Q, layers, 2, kv_heads, T, head_dim] as every layer's past;
    gradients flow through it to the prefix."""
    cache = DynamicCache()
    for layer in range(prefix.shape[1]):
        cache.update(prefix[:, layer, 0], prefix[:, layer, 1], layer)
    return cache


def after_prefix(mask: torch.Tensor, prefix_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For inputs with ``mask`` [Q, L] (left or right padding) after a prefix of ``prefix_length``: the
    attention mask over prefix + inputs [Q, T + L], and position ids [Q, L] that start after the prefix
    whatever the padding."""
    full = torch.cat([torch.ones(mask.shape[0], prefix_length, dtype=mask.dtype, device=mask.device), mask], dim=1)
    positions = prefix_length + (mask.long().cumsum(dim=1) - 1).clamp(min=0)
    return full, positions
