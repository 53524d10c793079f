"""Cross-encoder cost: what ``retrieval.rerank`` adds to one search, for short and long rounds.

    python -m memagent_evals.bench_rerank [--depth 30] [--queries 50]

Each query scores ``--depth`` candidates (what the reranker reads per search): generated rounds of
~45 words (a chat round, as ``bench_store``), and the same joined nine at a time (~400 words, a
LongMemEval-sized exchange). Prints p50 / p95 milliseconds a search; the 1-minute load average is
printed beside it, since on 2 cores anything else running changes these figures 3-6x.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Sequence

import numpy as np

from memagent.retrieve.rerank import DEFAULT_RERANKER, CrossEncoder

from .bench_store import make_round, round_texts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_RERANKER)
    parser.add_argument("--depth", type=int, default=30, help="candidates scored per search (retrieval.rerank_depth)")
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args(argv)
    rng = random.Random(0)
    short = [text for n in range(args.depth * args.queries) for text in round_texts(make_round(rng, n))]
    long = [" ".join(short[i : i + 9]) for i in range(0, len(short), 9)]
    scorer = CrossEncoder(args.model)
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores); {args.model}, depth {args.depth}, "
          f"{args.queries} queries")
    print("| rounds | words a round | search p50 ms | search p95 ms |\n|---|---:|---:|---:|")
    for name, texts in (("short", short), ("long", long)):
        scorer.scores("warm up", texts[:4])
        latencies = []
        for q in range(args.queries):
            candidates = [texts[(q * args.depth + i) % len(texts)] for i in range(args.depth)]
            query = f"what did I say about {candidates[0].split()[3]}?"
            started = time.perf_counter()
            scorer.scores(query, candidates)
            latencies.append((time.perf_counter() - started) * 1000)
        words = np.median([len(t.split()) for t in texts])
        print(f"| {name} | {words:.0f} | {np.percentile(latencies, 50):.0f} | {np.percentile(latencies, 95):.0f} |",
              flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
