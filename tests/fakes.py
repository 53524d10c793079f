"""Fast stand-ins for tests that need many stores: an embedder with no model, and a store snapshot."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from memagent import Embedder, Memory


class HashEmbedder(Embedder):
    """Unit vectors from a hash of the text: deterministic, instant, and no model to load."""

    name = "hash-embedder"
    dim = 16

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.array([list(hashlib.sha256(t.encode()).digest()[: self.dim]) for t in texts], dtype=np.float32)
        vectors = vectors.reshape(len(texts), self.dim) + 1.0
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    embed_queries = embed_documents


def _rows(collection: Any) -> list[tuple[str, ...]]:
    found = collection.get(include=["documents", "metadatas"])
    rows = zip(found["ids"], found["documents"], found["metadatas"])
    return [(i, d, json.dumps(m, sort_keys=True)) for i, d, m in rows]


def snapshot(memory: Memory) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Every record and history entry in the store, whoever's: what a refused call must not change."""
    rows = [row for c in memory.store.user_collections() for row in _rows(c)]
    history = memory.store.history_log.get(include=["metadatas"])
    return (sorted(rows),
            sorted((i, json.dumps(m, sort_keys=True)) for i, m in zip(history["ids"], history["metadatas"])))
