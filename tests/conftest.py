"""Shared fixtures: the real MiniLM embedder loaded once, a fresh embedded Chroma per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from memagent import LLM, Memory, MemoryConfig, SentenceTransformerEmbedder  # noqa: E402
from memagent.index.keys import Expander  # noqa: E402


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder("all-MiniLM-L6-v2", device="cpu")


@pytest.fixture
def make_memory(tmp_path: Path, embedder: SentenceTransformerEmbedder):
    """Build a Memory on a folder of this test (default: tmp_path/store) with the shared embedder."""

    def make(path: Path | None = None, *, llm: LLM | None = None, expander: Expander | None = None,
             **settings: object) -> Memory:
        return Memory(MemoryConfig(**settings), path=path or tmp_path / "store", embedder=embedder, llm=llm,
                      expander=expander)

    return make


@pytest.fixture
def memory(make_memory) -> Memory:
    return make_memory()


def exchange(user: str, reply: str = "Noted.") -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
