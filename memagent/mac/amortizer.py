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


class WordEmbeddings:
    """The frozen LM's own input embeddings of a text's tokens, and each token's surprisal under the LM:
    texts -> [B, N, d_lm], mask [B, N], surprisal [B, N] (``injection="words"``: what the amortizer
    copies from, and SirLLM's measure of which tokens carry information, as its prior)."""

    def __init__(self, lm: Any, tokenizer: Any, max_tokens: int) -> None:
        self.lm, self.tokenizer, self.max_tokens = lm, tokenizer, max_tokens
        self.table = lm.get_input_embeddings()
        self.width = int(self.table.weight.shape[1])

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from memagent.decay.entropy import surprisal

        rows = [self.tokenizer(t, add_special_tokens=False)["input_ids"][: self.max_tokens] or [0] for t in texts]
        device = self.table.weight.device
        ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for n, row in enumerate(rows):  # right padding: a causal LM's real tokens never see it
            ids[n, : len(row)], mask[n, : len(row)] = torch.tensor(row), 1
        hidden = self.lm.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        scores = torch.zeros(ids.shape, dtype=torch.float32, device=device)
        head = self.lm.get_output_embeddings()
        for n, row in enumerate(rows):  # the vocabulary's logits one document at a time (151k wide on Qwen2.5)
            scores[n, : len(row)] = surprisal(head(hidden[n, : len(row)]), ids[n, : len(row)], None)
        return self.table(ids), mask, scores


class Amortizer(nn.Module):
    """Token states of one document -> its T modulation tokens [T, width], what the bank stores.

    With ``injection="words"`` the document's T tokens are its T most surprising words under the LM
    (SirLLM's key tokens), in the document's order, as the LM's own input embeddings [T, d_lm]; there
    is nothing to train here then. A learnt pointer over the words was tried first: its T copies all
    learnt the same template word within 75 steps, and with the surprisal as its prior they started
    as blends of words the LM could not read."""

    def __init__(self, config: MacConfig, encoder_width: int, word_width: int | None = None) -> None:
        super().__init__()
        self.tokens, self.words = config.tokens, word_width is not None
        if not self.words:
            # a projection only when the encoder is not as wide as the networks
            self.project = nn.Identity() if encoder_width == config.width else nn.Linear(encoder_width, config.width)
            self.resample = Resampler(config.tokens, config.width, config.heads, config.amortizer_blocks)
        self.match = config.match
        stored = word_width or config.width  # the width of a bank vector
        if config.match and encoder_width > stored:
            raise ValueError(f"match: the frozen key is stored as a bank vector, so the bank's width ({stored}: "
                             f"{'the LM' if word_width else 'width'}) must be at least the encoder's ({encoder_width})")

    def forward(self, states: torch.Tensor, mask: torch.Tensor, words: torch.Tensor | None = None,
                words_mask: torch.Tensor | None = None, surprisal: torch.Tensor | None = None) -> torch.Tensor:
        """states [B, N, d_enc], mask [B, N] (``words``: also the document's word embeddings [B, M, d_lm],
        ``words_mask`` [B, M] and ``surprisal`` [B, M]) -> [B, T, width or d_lm] (``match``: [B, 1 + T, ...],
        the frozen key first)."""
        if not self.words:
            out: torch.Tensor = self.resample(self.project(states), mask)
        else:
            if words is None or words_mask is None or surprisal is None:
                raise ValueError("words: the amortizer keeps the document's most surprising word embeddings")
            out = key_words(words, words_mask, surprisal, self.tokens)
        return with_key(out, states, mask) if self.match else out


def key_words(words: torch.Tensor, mask: torch.Tensor, surprisal: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` most surprising of each document's words [B, M, d] (``mask`` [B, M]), in the document's
    order -> [B, count, d]; a document with fewer words is padded with zero vectors."""
    scores = surprisal.masked_fill(mask == 0, float("-inf"))
    if scores.shape[1] < count:
        scores = torch.nn.functional.pad(scores, (0, count - scores.shape[1]), value=float("-inf"))
        words = torch.nn.functional.pad(words, (0, 0, 0, count - words.shape[1]))
    chosen = scores.topk(count, dim=1).indices.sort(dim=1).values  # [B, count], in document order
    kept = words.gather(1, chosen[..., None].expand(-1, -1, words.shape[-1]))
    real = torch.isfinite(scores.gather(1, chosen))[..., None]
    return torch.where(real, kept, torch.zeros_like(kept))
