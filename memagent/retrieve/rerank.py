"""Reranking with a cross-encoder: a model that reads the question and a record together.

Embeddings and BM25 score the question and a record apart; a cross-encoder reads them as one input,
so it can tell the line that answers from lines that only share its words. It costs one forward
pass per record, so it reads only the fused top ``retrieval.rerank_depth``.

The packaged scorer is ms-marco-MiniLM-L-12-v2, int8 ONNX (``memagent models install
ms-marco-minilm-l12-v2``), run by onnxruntime on the CPU: it needs no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from memagent.errors import InputError
from memagent.retrieve.fuse import reciprocal_rank_fusion

DEFAULT_RERANKER = "ms-marco-minilm-l12-v2"


class PairScorer(Protocol):
    """What reranking needs: a relevance score for the query with each text (higher is better)."""

    def scores(self, query: str, texts: Sequence[str]) -> np.ndarray: ...


def reranker_folder(model: str) -> Path:
    """The folder holding ``model.onnx`` and ``tokenizer.json``: an installed packaged short name, or a path."""
    from memagent.llm.models import REGISTRY, _is_complete, models_dir

    if model in REGISTRY:
        if REGISTRY[model].kind != "reranker":
            raise InputError("retrieval.rerank_model", f"{model!r} is not a cross-encoder")
        folder = models_dir() / model
        if not _is_complete(folder):
            raise InputError("retrieval.rerank_model",
                             f"{model!r} is not installed in {models_dir()}: run `memagent models install {model}`")
        return folder
    folder = Path(model).expanduser()
    if not ((folder / "model.onnx").is_file() and (folder / "tokenizer.json").is_file()):
        raise InputError("retrieval.rerank_model",
                         f"{model!r} is not a packaged cross-encoder ({DEFAULT_RERANKER}) or a folder holding "
                         "model.onnx and tokenizer.json")
    return folder


class CrossEncoder:
    """Relevance logits of (query, text) pairs from a BERT-style cross-encoder exported to ONNX (one logit)."""

    def __init__(self, model: str = DEFAULT_RERANKER, *, batch_size: int = 32, threads: int | None = None,
                 max_length: int = 512) -> None:
        from tokenizers import Tokenizer

        from memagent.embedding import cpu_session

        folder = reranker_folder(model)
        self.name, self.batch_size = model, batch_size
        self._session = cpu_session(folder / "model.onnx", threads)
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.no_padding()  # batches are padded here, to their longest pair
        self._tokenizer.enable_truncation(max_length)  # longest first: a long record is cut, the question kept
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0

    def scores(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """One relevance logit per text, higher is more relevant; in the order given."""
        from memagent.embedding import _length_batches

        if not texts:
            return np.zeros(0, dtype=np.float32)
        encodings = self._tokenizer.encode_batch([(query, text) for text in texts])
        out = np.zeros(len(texts), dtype=np.float32)
        # pairs of similar length batch together: little padding, and int8 activations are quantized per
        # batch, so a short pair is not scaled with much longer ones
        for batch in _length_batches([len(e.ids) for e in encodings], self.batch_size):
            out[batch] = self._run([encodings[i] for i in batch])
        return out

    def _run(self, encodings: list[Any]) -> np.ndarray:
        from memagent.embedding import padded_inputs

        (logits,) = self._session.run(None, padded_inputs(encodings, self._pad_id, self._inputs))
        return np.asarray(logits, dtype=np.float32).reshape(len(encodings), -1)[:, 0]


# Leading sessions pay where a round is one short utterance and an answer is often the reply to the line
# before (LoCoMo: session recall_all@5 +2.9 with them); where a round is a long exchange (LongMemEval) a
# session's other rounds spend the reader's budget (turn recall_all@5 0.962 -> 0.923 with them). The
# median candidate has 27 words on LoCoMo dev (at most 46), 420 on LongMemEval dev (at least 351): the
# line is a store statistic set between them, about their geometric mean.
SHORT_ROUND_WORDS = 100


def short_rounds(texts: Sequence[str]) -> bool:
    """Whether the median text is a short utterance (at most ``SHORT_ROUND_WORDS`` words)."""
    return bool(texts) and float(np.median([len(t.split()) for t in texts])) <= SHORT_ROUND_WORDS


def rerank(ids: Sequence[str], sessions: Sequence[str], scores: Sequence[float], *, head_sessions: int = 3,
           k: int = 20) -> list[str]:
    """The candidates ``ids`` (fused order, best first, each of session ``sessions[i]``) reordered by their
    cross-encoder ``scores``.

    Sessions are ranked by reciprocal rank fusion of their order in the fused list and their best
    score; the first ``head_sessions`` lead: the best-scored round of each, then their other rounds
    by score. A round ranking spends one of the reader's places on a session's every other round, so
    it pays to bring the line that answers first and to keep a good session's rounds together (its
    context). The remaining rounds follow by fusion of the fused order and the scores. With
    ``head_sessions`` 0 that fusion alone orders everything.
    """
    if not (len(ids) == len(sessions) == len(scores)):
        raise ValueError("ids, sessions and scores must have one entry per candidate")
    by_score = sorted(range(len(ids)), key=lambda i: -scores[i])  # stable: ties keep the fused order
    fused = reciprocal_rank_fusion({"fused": list(ids), "scores": [ids[i] for i in by_score]}, k)
    order = [item for item, _score, _ranks in fused]
    if head_sessions <= 0:
        return order
    best: dict[str, float] = {}
    for session, score in zip(sessions, scores, strict=True):
        best[session] = max(best.get(session, float("-inf")), score)
    session_order = reciprocal_rank_fusion(
        {"fused": list(dict.fromkeys(sessions)), "scores": sorted(best, key=lambda s: -best[s])}, k)
    leading = [session for session, _score, _ranks in session_order[:head_sessions]]
    rounds = {s: [ids[i] for i in by_score if sessions[i] == s] for s in leading}
    first = [rounds[s][0] for s in leading] + [i for s in leading for i in rounds[s][1:]]
    chosen = set(first)
    return first + [i for i in order if i not in chosen]
