"""MAC's settings, saved as ``config.json`` beside every checkpoint (a checkpoint reads back only
with the networks it was trained as)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

INJECTIONS = ("linear", "words")


@dataclass(frozen=True)
class MacConfig:
    lm: str = "smollm2-135m-instruct"  # the frozen reader that reads the prefix (packaged name, dir or hub id)
    encoder: str = "all-MiniLM-L6-v2"  # the frozen encoder whose token states the networks read
    tokens: int = 8  # T: modulation tokens per document (MAC: 12 for DistilGPT2, 24 for larger LMs)
    width: int = 384  # the networks' width; MiniLM's hidden size, so its states need no projection
    heads: int = 4
    amortizer_blocks: int = 2  # cross-attention blocks of the document resampler
    aggregator_blocks: int = 2  # MAC uses 4; 2 train in minutes on a CPU
    max_doc_tokens: int = 256  # MiniLM's limit; a longer session becomes several bank entries
    window: int = 16  # banks larger than this are aggregated window by window (MAC's hierarchical aggregation)
    backprop_fraction: float = 0.25  # MAC's backprop dropout: the share of a batch's documents amortized with gradients
    hierarchy_p: float = 0.1  # chance per step of aggregating twice, so the aggregator learns to read its own output
    # Not in MAC: each bank entry also keeps the frozen encoder's sentence embedding of its document (one
    # more vector), and the aggregator's attention to an entry is raised by its cosine with the
    # question's (a learnt scale). MAC's plain cross-attention learnt no selection in 2,500 GPU steps.
    match: bool = False
    # How a session reaches the frozen LM. "linear" (MAC): T learnt tokens per session, aggregated, and a
    # linear map per layer turns them into keys and values. "words" (not in MAC): a session is kept as
    # its T most surprising words under the LM (SirLLM's measure), as the LM's own input embeddings; the
    # aggregator points instead of maps (each output slot a mixture of the entries' words in that slot),
    # and the frozen LM reads the result after a few learnt vectors, its own layers giving every layer's
    # keys and values (still passed as past key values). Why: with "linear", 1,200 CPU steps carried
    # hobbies (EM 0.69) but not cities or jobs (near chance): each value's vector had to be learnt into
    # the LM's space from ~100 examples, where a word the LM reads as input needs no map. With or without
    # ``match``; the bank's rows are then the LM's width (896 floats on Qwen2.5-0.5B).
    injection: str = "linear"

    @property
    def bank_tokens(self) -> int:
        """Vectors stored per document: T, and the frozen key first when ``match``."""
        return self.tokens + int(self.match)

    def __post_init__(self) -> None:
        for name in ("tokens", "width", "heads", "amortizer_blocks", "aggregator_blocks", "max_doc_tokens", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.injection not in INJECTIONS:
            raise ValueError(f"injection: {self.injection!r} is not one of {', '.join(INJECTIONS)}")
        if self.width % self.heads:
            raise ValueError(f"width: {self.width} is not a multiple of heads={self.heads}")
        if self.window < 2:
            raise ValueError(f"window: must be at least 2 (a window of 1 never shrinks the bank), got {self.window}")
        for name in ("backprop_fraction", "hierarchy_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be within [0, 1], got {getattr(self, name)}")

    def save(self, folder: Path) -> None:
        (folder / "config.json").write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> MacConfig:
        values: dict[str, Any] = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(values) - known):
            raise ValueError(f"{folder / 'config.json'}: unknown settings {unknown}")
        return cls(**values)
