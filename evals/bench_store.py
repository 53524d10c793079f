"""Benchmark: ingest throughput and search latency of the memory core at 10k and 100k rounds.

    python -m memagent_evals.bench_store --sizes 10000 100000

Prints, per size: rounds/s for ingest (embedding and store time apart) and search latency p50/p95
(query embedding and store+BM25+fusion apart). The conversation is generated here from templates,
so the figures measure the machinery, not the data. Embeddings are not cached between sizes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from memagent import Embedder, Memory, MemoryConfig, SentenceTransformerEmbedder

SUBJECTS = ["my sister", "our landlord", "the new manager", "my running club", "the vet", "my cousin", "our neighbour"]
VERBS = ["recommended", "cancelled", "booked", "asked about", "complained about", "forgot", "loved"]
OBJECTS = ["a pottery class", "the dentist appointment", "a trip to Lisbon", "the quarterly report", "a vegan bakery",
           "the piano lessons", "a second-hand bike", "the marathon", "a birthday dinner", "the roof repair"]
WHEN = ["last Tuesday", "this morning", "two weeks ago", "in March", "yesterday", "over the weekend"]


class TimedEmbedder(Embedder):
    """Counts the seconds spent inside the real embedder, so they can be shown apart."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.seconds = 0.0

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._timed(self.inner.embed_documents, texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._timed(self.inner.embed_queries, texts)

    def _timed(self, embed, texts):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return embed(texts)
        finally:
            self.seconds += time.perf_counter() - started


def make_round(rng: random.Random, n: int) -> list[dict[str, str]]:
    who, did, what = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
    said = f"{rng.choice(WHEN).capitalize()} {who} {did} {what} (note {n})."
    reply = f"Thanks for telling me. Do you want me to remember anything else about {rng.choice(OBJECTS)}?"
    return [{"role": "user", "content": said}, {"role": "assistant", "content": reply}]


def bench(
    size: int, embedder: SentenceTransformerEmbedder, queries: int, folder: Path, rounds_per_session: int = 10
) -> dict[str, float]:
    rng = random.Random(size)
    timed = TimedEmbedder(embedder)
    config = MemoryConfig(embedder={"cache_path": folder / f"cache-{size}.sqlite"})
    memory = Memory(config, path=folder / f"store-{size}", embedder=timed)
    started = time.perf_counter()
    for s in tqdm(range(size // rounds_per_session), desc=f"ingest {size:,} rounds", unit="session"):
        messages = [m for r in range(rounds_per_session) for m in make_round(rng, s * rounds_per_session + r)]
        memory.add(messages, user_id="bench", session_id=f"s{s}", timestamp=1_700_000_000 + s * 3600)
    ingest = time.perf_counter() - started
    ingest_embed = timed.seconds

    started = time.perf_counter()
    memory.search("warm up", user_id="bench")  # builds the BM25 index from the store
    index_build = time.perf_counter() - started

    totals, embeds = [], []
    for _ in tqdm(range(queries), desc="search", unit="query"):
        # the note number makes each query new, so the query embedding is computed, not cached
        query = f"what did {rng.choice(SUBJECTS)} say about {rng.choice(OBJECTS)} in note {rng.randrange(size)}?"
        before_embed, started = timed.seconds, time.perf_counter()
        memory.search(query, user_id="bench", k=10)
        totals.append(time.perf_counter() - started)
        embeds.append(timed.seconds - before_embed)
    rest = [t - e for t, e in zip(totals, embeds)]
    return {
        "rounds": size,
        "rounds/add": rounds_per_session,
        "ingest rounds/s": size / ingest,
        "ingest embed s": ingest_embed,
        "ingest store s": ingest - ingest_embed,
        "bm25 build s": index_build,
        "search p50 ms": 1000 * statistics.median(totals),
        "search p95 ms": 1000 * float(np.percentile(totals, 95)),
        "query embed p50 ms": 1000 * statistics.median(embeds),
        "store+bm25+fuse p50 ms": 1000 * statistics.median(rest),
        "store+bm25+fuse p95 ms": 1000 * float(np.percentile(rest, 95)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--folder", type=Path, default=None, help="where stores go (default: a temporary folder)")
    parser.add_argument("--rounds-per-session", type=int, default=10, help="rounds stored by each Memory.add call")
    args = parser.parse_args()
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        for n, size in enumerate(args.sizes):
            row = bench(size, embedder, args.queries, args.folder or Path(tmp), args.rounds_per_session)
            if n == 0:  # a row per size as soon as it is measured: long runs show results early
                print("\n| " + " | ".join(row) + " |\n|" + "---|" * len(row), flush=True)
            cells = (f"{v:,.0f}" if c in ("rounds", "rounds/add") else f"{v:.1f}" for c, v in row.items())
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
