"""Embedder speed: documents per second (batched, as ``Memory.add`` embeds) and one-query latency
(as ``Memory.search`` embeds), on the same generated rounds for every model.

    python -m memagent_evals.bench_embedder --models all-MiniLM-L6-v2 all-mpnet-base-v2

Prints a table; the 1-minute load average is printed beside it, since on 2 cores anything else
running changes these figures 3-6x.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Sequence

import numpy as np

from memagent import MemoryConfig
from memagent.embedding import embedder_from_config

from .bench_store import make_round, round_texts


def measure(model: str, backend: str, documents: list[str], queries: list[str]) -> dict[str, float]:
    config = MemoryConfig.model_validate({"embedder": {"model": model, "backend": backend}})
    embedder = embedder_from_config(config.embedder)
    embedder.embed_documents(documents[:8])  # warm-up: first-call allocations are not the steady rate
    started = time.perf_counter()
    embedder.embed_documents(documents)
    docs_per_s = len(documents) / (time.perf_counter() - started)
    latencies = []
    for query in queries:
        started = time.perf_counter()
        embedder.embed_queries([query])
        latencies.append((time.perf_counter() - started) * 1000)
    return {"dim": embedder.dim, "docs/s": docs_per_s, "query p50 ms": float(np.percentile(latencies, 50)),
            "query p95 ms": float(np.percentile(latencies, 95))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
    parser.add_argument("--backend", default="torch", choices=("torch", "onnx", "onnx-int8"))
    parser.add_argument("--documents", type=int, default=512, help="generated rounds to embed (~45 words each)")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args(argv)
    rng = random.Random(0)
    documents = [text for n in range(args.documents) for text in round_texts(make_round(rng, n))][: args.documents]
    queries = [f"what did I say about {text.split()[3]} and {text.split()[-1]}?" for text in documents[: args.queries]]
    load = os.getloadavg()[0]
    print(f"load average before: {load:.2f} (2 cores); {len(documents)} documents, {len(queries)} queries")
    print("| model | backend | dim | documents/s | query p50 ms | query p95 ms |\n|---|---|---:|---:|---:|---:|")
    for model in args.models:
        row = measure(model, args.backend, documents, queries)
        print(f"| {model} | {args.backend} | {row['dim']:.0f} | {row['docs/s']:.1f} | {row['query p50 ms']:.1f} | "
              f"{row['query p95 ms']:.1f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
