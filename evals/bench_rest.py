"""Benchmark: concurrent searches through ``memagent serve``'s REST API on loopback.

    python -m memagent_evals.bench_rest                                # 10k rounds, 200 searches at once
    python -m memagent_evals.bench_rest --rounds 1000 --concurrency 50

A server process (uvicorn, API keys on, the store's one user granted to the benchmark's key) opens
an embedded store of ``--rounds`` rounds for one user, building it first when the folder holds fewer
(the real MiniLM embedder: about 2 minutes for 10k rounds on an idle 2-core machine; the folder is
kept, so a second run starts at once). This process then sends ``--concurrency`` searches at the
same moment, each a new query text (embedded, not cached), and prints latency p50/p95/max as a
client sees it, the wall time and the errors (any status but 200). Exit status 1 when any failed.

The conversation is generated (``bench_store``'s templates), so the figures measure the machinery.
Searches run in the server's worker threads but one at a time on the store (``Memory`` holds one
lock over the store and the BM25 index), so under load p95 grows with the queue, about
``concurrency`` × one search. Run it on an otherwise idle machine: shared cores read 3-6x slower.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from pathlib import Path

import httpx
from memagent_evals.bench_store import Workload
from tqdm import tqdm

from memagent import Memory, MemoryConfig

USER = "bench"
KEY = "sk-bench-rest"
ROUNDS_PER_SESSION = 10


def build(memory: Memory, rounds: int) -> None:
    """Add ``rounds`` generated rounds for USER, ten to a session, one add per session (skipping stored ones)."""
    workload = Workload(size=rounds, rounds_per_session=ROUNDS_PER_SESSION)
    started = time.perf_counter()
    for user, session, messages in tqdm(
        workload.stream(), total=workload.sessions, desc="building the store", file=sys.stderr
    ):
        memory.add(messages, user_id=user, session_id=f"s{session}", timestamp=1_700_000_000 + session * 3600)
    print(f"built {rounds} rounds in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def serve(folder: str, rounds: int, port: int) -> None:
    """The server process: the store (built when short of ``rounds``) behind the REST API on loopback."""
    import uvicorn

    from memagent.llm.scripted import ScriptedLLM
    from memagent.serve.app import create_app
    from memagent.serve.auth import Grant, KeyRing

    memory = Memory(MemoryConfig(), path=folder)
    if len(memory.get_all(user_id=USER)) < rounds:
        build(memory, rounds)
    keys = KeyRing({KEY: Grant(users=frozenset({USER}))})
    # searches never call the model; a scripted one keeps the server from loading a reader
    app = create_app(ScriptedLLM("unused"), model_name="bench", keys=keys, memory=memory)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


@dataclass(frozen=True)
class Result:
    seconds: list[float]  # each successful search, as the client timed it
    errors: list[str]
    wall: float


async def searches(url: str, queries: Sequence[str]) -> Result:
    """Every query at once, on one connection each."""
    limits = httpx.Limits(max_connections=len(queries), max_keepalive_connections=len(queries))
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=600) as client:

        async def one(query: str) -> float | str:
            started = time.perf_counter()
            try:
                response = await client.post("/v1/memories/search", json={"user_id": USER, "query": query, "k": 10})
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__}: {exc}"
            if response.status_code != 200:
                return f"{response.status_code}: {response.text[:200]}"
            return time.perf_counter() - started

        started = time.perf_counter()
        outcomes = await asyncio.gather(*(one(q) for q in queries))
        wall = time.perf_counter() - started
    return Result([o for o in outcomes if isinstance(o, float)], [o for o in outcomes if isinstance(o, str)], wall)


def wait_ready(url: str, process: BaseProcess, timeout: float) -> None:
    """Until the server answers (the store may be building first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_alive():
            raise SystemExit("the server process ended before it was ready (see its output above)")
        try:
            if httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready within {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def report(rounds: int, concurrency: int, single: list[float], result: Result) -> None:
    print(
        f"store: {rounds} rounds of one user (MiniLM embedder, embedded Chroma); {concurrency} concurrent searches, "
        f"k=10, over HTTP on loopback with an API key"
    )
    if single:
        print(f"one search at a time: p50 {ms(statistics.median(single))} over {len(single)} searches")
    if result.seconds:
        cuts = statistics.quantiles(result.seconds, n=100, method="inclusive")
        print(
            f"{concurrency} at once: p50 {ms(cuts[49])}, p95 {ms(cuts[94])}, max {ms(max(result.seconds))}; "
            f"all answered in {result.wall:.1f} s ({len(result.seconds) / result.wall:.1f} searches/s)"
        )
    print(f"errors: {len(result.errors)} of {concurrency}")
    for line in result.errors[:5]:
        print(f"  {line}")


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="python -m memagent_evals.bench_rest", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10_000, help="rounds in the store (default 10000)")
    parser.add_argument("--concurrency", type=int, default=200, help="searches sent at the same moment")
    parser.add_argument("--store", type=Path, help="store folder (default evals/cache/bench_rest_<rounds>)")
    parser.add_argument("--ready-timeout", type=float, default=3600, help="seconds to wait for the store and server")
    args = parser.parse_args(argv)
    folder = args.store or Path("evals/cache") / f"bench_rest_{args.rounds}"
    folder.mkdir(parents=True, exist_ok=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = get_context("spawn").Process(target=serve, args=(str(folder), args.rounds, port), daemon=True)
    server.start()
    try:
        wait_ready(url, server, args.ready_timeout)
        workload = Workload(size=args.rounds, rounds_per_session=ROUNDS_PER_SESSION, queries=args.concurrency + 20)
        queries = [query for _, query in workload.searches()]
        warm = asyncio.run(searches(url, queries[:1]))  # loads the index and builds BM25 before timing
        single = [s for q in queries[1:20] for s in asyncio.run(searches(url, [q])).seconds]
        result = asyncio.run(searches(url, queries[20:]))
    finally:
        server.terminate()
        server.join(timeout=30)
    report(args.rounds, args.concurrency, single, result)
    return 1 if result.errors or warm.errors else 0


if __name__ == "__main__":
    sys.exit(main())
