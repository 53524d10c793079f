"""Chroma's write log under many collections: seconds per 10k records as records are dealt over N
collections, with Chroma's default index saving (every 1,000 records) or a lower ``hnsw:sync_threshold``.

    python -m memagent_evals.bench_chroma_log --collections 1000 --records 100000 --sync-threshold 0
    python -m memagent_evals.bench_chroma_log --collections 1000 --records 100000 --sync-threshold 50
    python -m memagent_evals.bench_chroma_log --collections 1 --records 3000 --per-write 1 --distinct-ids 200

Chroma keeps each write in a sqlite log until the collection's index is saved, and writes slow down
while that log grows; this is why a memagent user's collection saves its
index every 50 records (``memagent/store/chroma.py``). Random vectors and short made-up documents;
no embedder runs.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Sequence

import numpy as np


def run(collections: int, records: int, per_write: int, sync_threshold: int, distinct_ids: int = 0) -> None:
    import chromadb
    from chromadb.config import Settings

    folder = tempfile.mkdtemp(prefix="chroma-log-")
    try:
        client = chromadb.PersistentClient(folder, settings=Settings(anonymized_telemetry=False))
        metadata: dict[str, object] = {"hnsw:space": "cosine"}
        if sync_threshold:
            metadata |= {"hnsw:sync_threshold": sync_threshold, "hnsw:batch_size": min(sync_threshold, 100)}
        targets = [client.get_or_create_collection(f"user-{n}", metadata=metadata) for n in range(collections)]
        rng = np.random.default_rng(0)
        written, started = 0, time.perf_counter()
        window = started
        print("| records written | s per 10k records |\n|---:|---:|")
        while written < records:
            for target in targets:
                ids = [str((written + n) % distinct_ids if distinct_ids else written + n) for n in range(per_write)]
                target.upsert(ids=ids, embeddings=rng.standard_normal((per_write, 384)).astype(np.float32),
                              documents=[f"made-up note number {i}" for i in ids],
                              metadatas=[{"recorded_at": 1.0}] * per_write)
                written += per_write
                if written % 20_000 < per_write:
                    now = time.perf_counter()
                    print(f"| {written:,} | {(now - window) / 2:.1f} |", flush=True)
                    window = now
                if written >= records:
                    break
        log = sqlite3.connect(f"{folder}/chroma.sqlite3")
        log_rows = log.execute("select count(*) from embeddings_queue").fetchone()[0]
        seconds = time.perf_counter() - started
        print(f"\n{written:,} records in {seconds:.1f} s ({1000 * seconds * per_write / written:.1f} ms a write); "
              f"rows left in the write log: {log_rows:,}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", type=int, default=1000)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--per-write", type=int, default=50, help="records per upsert")
    parser.add_argument("--sync-threshold", type=int, default=50, help="0: Chroma's default (1,000)")
    parser.add_argument("--distinct-ids", type=int, default=0,
                        help="write over this many ids again and again (memagent's version tokens); 0: new ids")
    args = parser.parse_args(argv)
    run(args.collections, args.records, args.per_write, args.sync_threshold, args.distinct_ids)


if __name__ == "__main__":
    main()
