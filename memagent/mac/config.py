"""MAC's settings, saved as ``config.json`` beside every checkpoint (a checkpoint reads back only
with the networks it was trained as)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


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

    @property
    def bank_tokens(self) -> int:
        """Vectors stored per document: T, and the frozen key first when ``match``."""
        return self.tokens + int(self.match)

    def __post_init__(self) -> None:
        for name in ("tokens", "width", "heads", "amortizer_blocks", "aggregator_blocks", "max_doc_tokens", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
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
