"""Amortization: a document becomes T modulation tokens in one forward pass (MAC's amortization network).

MAC reads the document with a T5 encoder and T learnable queries in the T5 decoder. Here a frozen
sentence encoder (MiniLM) gives the token states, and a small trainable resampler of T queries reads
them: the same shape of computation, light enough to train on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from memagent.mac.blocks import Resampler, with_key
from memagent.mac.config import MacConfig


class TokenEncoder:
    """Frozen token states of a sentence-transformers model: texts -> states [B, N, d], mask [B, N]."""

    def __init__(self, model: Any, max_tokens: int) -> None:
        self.model = model.eval().requires_grad_(False)
        self.model.max_seq_length = min(max_tokens, int(model.max_seq_length or max_tokens))
        self.width = int(model.get_embedding_dimension())

    @classmethod
    def load(cls, name: str, max_tokens: int, device: str | None = None) -> TokenEncoder:
        from sentence_transformers import SentenceTransformer

        from memagent.embedding import resolve_model_path

        return cls(SentenceTransformer(resolve_model_path(name), device=device), max_tokens)

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenizer(text, add_special_tokens=True)["input_ids"])

    @torch.no_grad()  # not inference_mode: the states feed trainable networks
    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prepare = getattr(self.model, "preprocess", None) or self.model.tokenize  # tokenize: before 6.x
        features = prepare(list(texts))
        features = {k: v.to(self.model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        out = self.model[0](features)  # the transformer module alone: token states, before pooling
        return out["token_embeddings"], features["attention_mask"]


class Amortizer(nn.Module):
    """Token states of one document -> its T modulation tokens [T, width], what the bank stores."""

    def __init__(self, config: MacConfig, encoder_width: int) -> None:
        super().__init__()
        # a projection only when the encoder is not as wide as the networks
        self.project = nn.Identity() if encoder_width == config.width else nn.Linear(encoder_width, config.width)
        self.resample = Resampler(config.tokens, config.width, config.heads, config.amortizer_blocks)
        self.match = config.match
        if config.match and encoder_width != config.width:
            raise ValueError(f"match: the frozen key is stored as a bank vector, so width must be the "
                             f"encoder's ({encoder_width}), got {config.width}")

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """states [B, N, d_enc], mask [B, N] -> [B, T, width] (``match``: [B, 1 + T, width], the frozen key first)."""
        out: torch.Tensor = self.resample(self.project(states), mask)
        return with_key(out, states, mask) if self.match else out
