"""Token surprisal, SirLLM's measure of which tokens matter: −log P(x_i | x_<i).

SirLLM (Yao, Li, Zhao 2024) calls it token entropy. It comes from the same forward pass that puts
the tokens in the cache: the logits at position i−1 predict token i, and the first token of a chunk
is predicted by the last logits of the chunk before it.

The reference code (Zoeyyao27/SirLLM, ``_cal_selfinfo``) gathers the log-probabilities at the
unshifted ids: token j gets −log P(x_j = x_{j−1} | x_<j), the surprisal of the token before it
coming again, and the chunk's first token the chunk's maximum. ``reference_surprisal`` reproduces
that exactly, so the paper's numbers can be reproduced next to the definition it states.
"""

from __future__ import annotations

from typing import Literal

import torch

Scorer = Literal["paper", "reference"]


def surprisal(logits: torch.Tensor, ids: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """−log P(x_i | x_<i) for each token of a chunk, in nats.

    ``logits``: [n, vocab] from the forward pass over the chunk's ``ids`` ([n]); ``previous``: the
    last logits ([vocab]) of the chunk before, or None at the start of a stream, where the first
    token has no prediction and scores 0 (it is a start token, kept whatever its score)."""
    if logits.dim() != 2 or ids.dim() != 1 or logits.shape[0] != ids.shape[0]:
        raise ValueError(f"logits {tuple(logits.shape)} and ids {tuple(ids.shape)}: one row of logits per id")
    if previous is None:
        predicting = logits[:-1]
        head = torch.zeros(1, dtype=torch.float32, device=logits.device)
        targets = ids[1:]
    else:
        predicting = torch.cat([previous.unsqueeze(0), logits[:-1]])
        head = torch.zeros(0, dtype=torch.float32, device=logits.device)
        targets = ids
    logprobs = torch.log_softmax(predicting.float(), dim=-1)
    scores = -logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return torch.cat([head, scores])


def reference_surprisal(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The reference code's scores for one chunk, off by one as it is there.

    Each row of ``logits`` (row j predicts token j+1) is read at ``ids[j]`` itself, giving v_j; token
    j ≥ 1 gets v_{j−1}, the surprisal of token j−1 coming again at position j, and token 0 gets the
    maximum of all the v (the last one included, though no token gets it)."""
    if logits.dim() != 2 or ids.dim() != 1 or logits.shape[0] != ids.shape[0] or ids.numel() == 0:
        raise ValueError(f"logits {tuple(logits.shape)} and ids {tuple(ids.shape)}: one row of logits per id")
    unshifted = -torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return torch.cat([unshifted.max().reshape(1), unshifted[:-1]])


def chunk_scores(
    scorer: Scorer, logits: torch.Tensor, ids: torch.Tensor, previous: torch.Tensor | None
) -> torch.Tensor:
    """The chunk's token scores by the paper's definition or the reference code's."""
    if scorer == "paper":
        return surprisal(logits, ids, previous)
    if scorer == "reference":
        return reference_surprisal(logits, ids)
    raise ValueError(f"scorer: {scorer!r} is not 'paper' or 'reference'")
