"""Shared fixtures: the real MiniLM embedder loaded once, a fresh embedded Chroma per test.

With ``MEMAGENT_TEST_CHROMA_URL=http://127.0.0.1:PORT`` (a running ``chroma run``; .ci/run starts one)
``make_memory`` builds its Memory on that server instead, in a collection of the test's own; a test
that passes a ``path`` keeps its folder.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from memagent import LLM, Memory, MemoryConfig, SentenceTransformerEmbedder  # noqa: E402
from memagent.index.keys import Expander  # noqa: E402
from memagent.retrieve.rerank import PairScorer  # noqa: E402

CHROMA_URL = os.environ.get("MEMAGENT_TEST_CHROMA_URL")  # the store tests' server mode (see above)


def pytest_configure(config: pytest.Config) -> None:
    if CHROMA_URL:  # chromadb's HttpClient offers no close(); its sockets are reclaimed by the garbage collector
        config.addinivalue_line("filterwarnings", "ignore::ResourceWarning")
        config.addinivalue_line("filterwarnings", "ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder("all-MiniLM-L6-v2", device="cpu")


@pytest.fixture
def make_memory(tmp_path: Path, embedder: SentenceTransformerEmbedder):
    """Build a Memory on a folder of this test (default: tmp_path/store) with the shared embedder;
    in server mode (``MEMAGENT_TEST_CHROMA_URL``) on the server unless a ``path`` is given, every
    Memory of one test on one collection, as every default one shares tmp_path/store."""
    collection = f"test-{uuid.uuid4().hex}"

    def make(path: Path | None = None, *, llm: LLM | None = None, expander: Expander | None = None,
             salience_llm: LLM | None = None, reranker: PairScorer | None = None, **settings: object) -> Memory:
        if CHROMA_URL and path is None:
            store = {"url": CHROMA_URL, "collection": collection}
            cache = {"cache_path": tmp_path / "embedding_cache.sqlite"}  # else it would go to the user's data dir
            config = MemoryConfig(store=store, embedder=cache, **settings)
            return Memory(config, embedder=embedder, llm=llm, expander=expander, salience_llm=salience_llm,
                          reranker=reranker)
        return Memory(MemoryConfig(**settings), path=path or tmp_path / "store", embedder=embedder, llm=llm,
                      expander=expander, salience_llm=salience_llm, reranker=reranker)

    return make


@pytest.fixture
def memory(make_memory) -> Memory:
    return make_memory()


def exchange(user: str, reply: str = "Noted.") -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
