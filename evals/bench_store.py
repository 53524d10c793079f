"""Benchmark: memagent, mem0 and a plain Chroma collection side by side, from 10k to 1M rounds.

    python -m memagent_evals.bench_store --sizes 10000                                  # one user, 10 rounds per add
    python -m memagent_evals.bench_store --sizes 100000 --rounds-per-session 50
    python -m memagent_evals.bench_store --sizes 1000000 --users 1000 --rounds-per-session 50 --pool 20000

Prints a markdown table per size, a row per system as soon as it is measured: ingest rounds/s (the
embedding model's seconds and the store's apart), the first search of each queried user, search latency
p50/p95 with the query embedding apart, and the process RSS. The conversation is generated here from
templates, so the figures measure the machinery, not the data.

Fair by construction:
- one embedder for all (all-MiniLM-L6-v2, CPU, float32; MEMAGENT_EMBEDDER__BACKEND=onnx-int8 for the int8
  path) behind one sqlite cache by content hash. Every
  distinct text a system stores is embedded once, before any system runs, and each system is charged the
  model seconds of the texts it stores: the order the systems run in changes nothing;
- each system runs in a fresh process (RSS is its own; nothing stays warm from the one before);
- the same sessions (in the same order) and the same queries for all; queries are new texts, so each
  system embeds them (memagent through its cache, mem0 and Chroma with the model directly).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from memagent import Embedder, Memory, MemoryConfig
from memagent.config import EmbedderConfig
from memagent.embedding import CachedEmbedder, embedder_from_config, resolve_model_path
from memagent.index.decompose import split_rounds
from memagent.schema import Message

MODEL = "all-MiniLM-L6-v2"
# the embedder's backend, as the library reads it (subprocesses inherit it): torch float32, or onnx / onnx-int8
BACKEND = os.environ.get("MEMAGENT_EMBEDDER__BACKEND", "torch")
K = 10
SYSTEMS = ("memagent", "mem0", "chroma")

SUBJECTS = ["my sister", "our landlord", "the new manager", "my running club", "the vet", "my cousin", "our neighbour"]
VERBS = ["recommended", "cancelled", "booked", "asked about", "complained about", "forgot", "loved"]
OBJECTS = ["a pottery class", "the dentist appointment", "a trip to Lisbon", "the quarterly report", "a vegan bakery",
           "the piano lessons", "a second-hand bike", "the marathon", "a birthday dinner", "the roof repair"]
WHEN = ["last Tuesday", "this morning", "two weeks ago", "in March", "yesterday", "over the weekend"]


# -- the workload: the same sessions and queries for every system ------------------------------------------

def make_round(rng: random.Random, n: int) -> list[dict[str, str]]:
    who, did, what = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
    said = f"{rng.choice(WHEN).capitalize()} {who} {did} {what} (note {n})."
    reply = f"Thanks for telling me. Do you want me to remember anything else about {rng.choice(OBJECTS)}?"
    return [{"role": "user", "content": said}, {"role": "assistant", "content": reply}]


def round_texts(messages: Sequence[dict[str, str]]) -> list[str]:
    """A session's rounds, each as one text ("user: ...\\nassistant: ..."): what memagent embeds (its
    own decomposition), and a Chroma user's documents."""
    return [r.value for r in split_rounds([Message(**m) for m in messages])]


@dataclass(frozen=True)
class Workload:
    """``size`` rounds in sessions of ``rounds_per_session`` (one add each), dealt to ``users`` in turn.

    ``pool`` 0: every round is new (its note number). ``pool`` N: rounds are drawn from N distinct
    rounds, no round twice in a session, so only N texts need embedding however large the size.
    """

    size: int
    users: int = 1
    rounds_per_session: int = 10
    pool: int = 0
    queries: int = 200

    @property
    def sessions(self) -> int:
        return self.size // self.rounds_per_session

    def user(self, n: int) -> str:
        return f"user{n % self.users:05d}" if self.users > 1 else "bench"

    def stream(self) -> Iterator[tuple[str, int, list[dict[str, str]]]]:
        """(user, session index, the session's messages), in ingest order; the same on every call."""
        rng = random.Random(self.size)
        pool = [make_round(random.Random(i), i) for i in range(self.pool)]
        for s in range(self.sessions):
            if pool:
                rounds = [pool[i] for i in rng.sample(range(self.pool), self.rounds_per_session)]
            else:
                rounds = [make_round(rng, s * self.rounds_per_session + r) for r in range(self.rounds_per_session)]
            yield self.user(s), s, [m for r in rounds for m in r]

    def texts(self, kind: str) -> list[str]:
        """Distinct texts to embed: ``round`` (memagent, Chroma) or ``message`` (mem0 stores each message)."""
        seen: dict[str, None] = {}
        if self.pool:  # the same texts as stream() draws from, without walking a million rounds
            sessions: Iterator[list[dict[str, str]]] = (make_round(random.Random(i), i) for i in range(self.pool))
        else:
            sessions = (messages for _, _, messages in self.stream())
        for messages in sessions:
            seen.update(dict.fromkeys(round_texts(messages) if kind == "round" else (m["content"] for m in messages)))
        return list(seen)

    def searches(self) -> list[tuple[str, str]]:
        """(user, query) pairs; the note number makes each query a new text, so it is embedded, not cached."""
        rng = random.Random(f"{self.size}-{self.users}")
        span = self.pool or self.size
        return [
            (self.user(rng.randrange(self.users)),
             f"what did {rng.choice(SUBJECTS)} say about {rng.choice(OBJECTS)} in note {rng.randrange(span)}?")
            for _ in range(self.queries)
        ]

    def first_searches(self) -> list[tuple[str, str]]:
        """One search for each user the timed searches go to, run before them (index loads, BM25 builds)."""
        users = dict.fromkeys(u for u, _ in self.searches())
        return [(u, f"anything about {OBJECTS[n % len(OBJECTS)]} ({n})?") for n, u in enumerate(users)]


# -- one embedder, one cache, timed -------------------------------------------------------------------------

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


class TimedCache(CachedEmbedder):
    """The shared cache, counting the seconds spent in it (lookups and the model). A ``CachedEmbedder``,
    so memagent uses it as its own cache instead of adding another."""

    def __init__(self, inner: Embedder, path: Path) -> None:
        super().__init__(inner, path)
        self.seconds = 0.0

    def _cached(self, texts, side, compute):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return super()._cached(texts, side, compute)
        finally:
            self.seconds += time.perf_counter() - started


@dataclass
class Embedding:
    model: TimedEmbedder  # seconds inside all-MiniLM-L6-v2
    cache: TimedCache  # seconds in the cache, the model's included

    @classmethod
    def open(cls, cache_path: Path) -> Embedding:
        config = EmbedderConfig(model=MODEL, backend=BACKEND, device="cpu")  # type: ignore[arg-type]
        model = TimedEmbedder(embedder_from_config(config))
        return cls(model, TimedCache(model, cache_path))


def embed_ahead(workload: Workload, kinds: Sequence[str], cache_path: Path) -> dict[str, tuple[int, float]]:
    """Embeds each kind's distinct texts into the shared cache: {kind: (texts, model seconds)}."""
    embedding = Embedding.open(cache_path)
    spent: dict[str, tuple[int, float]] = {}
    for kind in kinds:
        texts = workload.texts(kind)
        before = embedding.model.seconds
        for start in tqdm(range(0, len(texts), 512), desc=f"embed {len(texts):,} {kind} texts", unit="batch"):
            embedding.cache.embed_documents(texts[start:start + 512])
        spent[kind] = (len(texts), embedding.model.seconds - before)
    embedding.cache.close()
    return spent


# -- the timing helpers every system shares -----------------------------------------------------------------

def rss_mib() -> float:
    """This process's resident memory now (psutil), or its peak where psutil is missing."""
    try:
        import psutil
    except ImportError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return float(psutil.Process().memory_info().rss) / 2**20


Add = Callable[[str, int, list[dict[str, str]]], object]
Search = Callable[[str, str], object]


def measure(name: str, workload: Workload, embedding: Embedding, add: Add, search: Search) -> dict[str, float]:
    """Ingests the workload with ``add(user, session, messages)``, then times ``search(user, query)``."""
    row = {"rss start": rss_mib()}
    started, in_cache, in_model = time.perf_counter(), embedding.cache.seconds, embedding.model.seconds
    stream = tqdm(workload.stream(), total=workload.sessions, unit="add",
                  desc=f"{name}: ingest {workload.size:,} rounds")
    for user, session, messages in stream:
        add(user, session, messages)
    wall = time.perf_counter() - started
    row["ingest embed s"] = embedding.model.seconds - in_model  # texts the cache lacked (0 when embedded ahead)
    row["ingest store s"] = wall - (embedding.cache.seconds - in_cache)
    row["rss ingest"] = rss_mib()

    firsts = [timed_search(search, u, q, embedding)[0] for u, q in workload.first_searches()]
    totals, embeds = zip(*(timed_search(search, u, q, embedding)
                           for u, q in tqdm(workload.searches(), desc=f"{name}: search", unit="query")))
    row.update({
        "first search ms": 1000 * statistics.fmean(firsts),
        "search p50 ms": 1000 * statistics.median(totals),
        "search p95 ms": 1000 * float(np.percentile(totals, 95)),
        "query embed p50 ms": 1000 * statistics.median(embeds),
        "rss search": rss_mib(),
    })
    return row


def timed_search(search: Search, user: str, query: str, embedding: Embedding) -> tuple[float, float]:
    """(seconds for the search, of which seconds in the model)."""
    in_model, started = embedding.model.seconds, time.perf_counter()
    search(user, query)
    return time.perf_counter() - started, embedding.model.seconds - in_model


# -- the systems: each builds its store in ``folder`` and hands its add and search to measure() -----------

def bench_memagent(workload: Workload, folder: Path, cache_path: Path) -> dict[str, float]:
    """memagent as shipped: a Chroma collection per user, BM25 per user, dense + BM25 fused."""
    embedding = Embedding.open(cache_path)
    memory = Memory(MemoryConfig(), path=folder, embedder=embedding.cache)

    def add(user: str, session: int, messages: list[dict[str, str]]) -> object:
        return memory.add(messages, user_id=user, session_id=f"s{session}", timestamp=1_700_000_000 + session * 3600)

    return measure("memagent", workload, embedding, add, lambda user, query: memory.search(query, user_id=user, k=K))


def bench_mem0(workload: Workload, folder: Path, cache_path: Path) -> dict[str, float]:
    """mem0 as its README shows it, without an LLM: ``add(..., infer=False)`` stores each message as a
    memory; its default local store (Qdrant in a folder); its embedder swapped for the shared cache."""
    import logging

    os.environ["MEM0_TELEMETRY"] = "False"  # read when mem0 is imported
    os.environ["MEM0_DIR"] = str(folder / "mem0_dir")  # not ~/.mem0
    from mem0 import Memory as Mem0

    logging.getLogger("mem0").setLevel(logging.ERROR)  # "spaCy/fastembed not installed": said in the table's notes
    embedding = Embedding.open(cache_path)
    memory = Mem0.from_config({
        "vector_store": {"provider": "qdrant", "config": {
            "path": str(folder / "qdrant"), "on_disk": True, "collection_name": "bench",
            "embedding_model_dims": embedding.model.dim}},
        "embedder": {"provider": "huggingface", "config": {"model": resolve_model_path(MODEL)}},
        "llm": {"provider": "openai", "config": {"api_key": "unused: infer=False never calls the LLM"}},
        "history_db_path": str(folder / "history.db"),
    })
    hf = memory.embedding_model
    hf.model = embedding.model.inner._model  # type: ignore[attr-defined]  # one copy of the weights, not two
    hf.embed = lambda text, memory_action=None: (
        embedding.model.embed_queries([text])[0] if memory_action == "search"  # a new query: no cache, like the rest
        else embedding.cache.embed_documents([text])[0]
    ).tolist()
    hf.embed_batch = lambda texts, memory_action="add": embedding.cache.embed_documents(texts).tolist()

    def add(user: str, session: int, messages: list[dict[str, str]]) -> object:
        return memory.add(messages, user_id=user, infer=False)

    return measure("mem0", workload, embedding, add,
                   lambda user, query: memory.search(query, filters={"user_id": user}, top_k=K))


def bench_chroma(workload: Workload, folder: Path, cache_path: Path) -> dict[str, float]:
    """What a user of Chroma alone would write: one collection, a record per round, ``where user_id``."""
    import chromadb

    embedding = Embedding.open(cache_path)
    collection = chromadb.PersistentClient(path=str(folder)).create_collection(
        "bench", metadata={"hnsw:space": "cosine"}, embedding_function=None)

    def add(user: str, session: int, messages: list[dict[str, str]]) -> object:
        texts = round_texts(messages)
        return collection.add(ids=[f"{session}-{n}" for n in range(len(texts))], documents=texts,
                              metadatas=[{"user_id": user}] * len(texts),
                              embeddings=embedding.cache.embed_documents(texts))

    def search(user: str, query: str) -> object:
        return collection.query(query_embeddings=embedding.model.embed_queries([query]), n_results=K,
                                where={"user_id": user})

    return measure("chroma", workload, embedding, add, search)


BENCHES = {"memagent": bench_memagent, "mem0": bench_mem0, "chroma": bench_chroma}
TEXTS = {"memagent": "round", "mem0": "message", "chroma": "round"}  # what each system embeds


# -- the run ------------------------------------------------------------------------------------------------

COLUMNS = ["system", "rounds", "users", "rounds/add", "ingest rounds/s", "embed s", "store s", "first search ms",
           "search p50 ms", "search p95 ms", "query embed p50 ms", "RSS start MiB", "RSS ingest MiB",
           "RSS search MiB"]


class Report:
    """Prints as it goes (long runs show results early); ``save`` appends what was printed since the
    last save to ``--out``, so each finished size is kept even if a later one fails."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def row(self, cells: Sequence[object]) -> None:
        self("| " + " | ".join(str(c) for c in cells) + " |")

    def save(self) -> None:
        if self.out is not None and self.lines:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            with self.out.open("a", encoding="utf-8") as out:
                out.write("\n".join(self.lines) + "\n")
        self.lines = []


def cells(system: str, workload: Workload, measured: dict[str, float], embed_ahead_s: float) -> list[str]:
    embed = embed_ahead_s + measured["ingest embed s"]
    store = measured["ingest store s"]
    return [system, f"{workload.size:,}", f"{workload.users:,}", f"{workload.rounds_per_session}",
            f"{workload.size / (embed + store):.1f}", f"{embed:.1f}", f"{store:.1f}",
            *(f"{measured[c]:.1f}" for c in ("first search ms", "search p50 ms", "search p95 ms",
                                            "query embed p50 ms")),
            *(f"{measured[c]:,.0f}" for c in ("rss start", "rss ingest", "rss search"))]


def notes(report: Report, workload: Workload, systems: Sequence[str], ahead: dict[str, tuple[int, float]]) -> None:
    done = ", ".join(f"{n:,} {kind} texts in {s:.1f} s ({n / max(s, 1e-9):.0f}/s)" for kind, (n, s) in ahead.items())
    precision = "float32" if BACKEND == "torch" else f"{BACKEND} on onnxruntime"
    report(f"All systems share one embedding cache (sqlite, by content hash) in front of one {MODEL} (CPU, "
           f"{precision}); each distinct text was embedded once before the systems ran ({done}). 'embed s' is the "
           "model time of the texts a system stores, 'store s' the rest of its ingest (cache lookups included); "
           "ingest rounds/s counts both. Each system runs in its own process: RSS includes torch and the model.")
    if workload.pool:
        n, s = ahead.get("round", next(iter(ahead.values())))
        report(f"Rounds are drawn from a pool of {workload.pool:,} distinct rounds (project-written templates) whose "
               f"embeddings were computed once: 'embed s' is the pool's. Embedding {workload.size:,} distinct rounds "
               f"would add about {workload.size * s / max(n, 1):,.0f} s at the rate above.")
    if "mem0" in systems:
        report("mem0 2.2.1: `add(messages, user_id=..., infer=False)` (each message a memory, no LLM), "
               "`search(query, filters={'user_id': ...}, top_k=10)`, its default store (local Qdrant in a folder, "
               "on_disk). Installed without its nlp/extras packages (spaCy, fastembed), so it searches dense only: "
               "no BM25, no entity boosts.")
    if "chroma" in systems:
        report("chroma: one PersistentClient collection (cosine), a record per round with metadata user_id, "
               "`query(query_embeddings, n_results=10, where={'user_id': ...})`.")
    report(f"Searches: {workload.queries} new queries to random users (the same for every system), k = {K}; "
           "'first search ms' is the mean first search of each of those users, run before the timed ones.")


def run_size(report: Report, workload: Workload, systems: Sequence[str], folder: Path, skipped: str = "") -> None:
    w = workload
    report(f"\n### {w.size:,} rounds, {w.users:,} user(s), {w.rounds_per_session} rounds per add\n")
    if skipped:
        report(skipped)
    cache_path = folder / f"embedding_cache-{workload.size}-{workload.users}-{workload.pool}.sqlite"
    kinds = list(dict.fromkeys(TEXTS[s] for s in systems))
    ahead = embed_ahead(workload, kinds, cache_path)
    notes(report, workload, systems, ahead)
    report()
    report.row(COLUMNS)
    report("|" + "---|" * len(COLUMNS))
    for system in systems:
        store = folder / f"{system}-{workload.size}-{workload.users}"
        # a fresh process per system: its RSS is its own, and nothing stays warm from the system before
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as child:
                measured = child.submit(BENCHES[system], workload, store, cache_path).result()
        except Exception as exc:  # one system failing leaves the others' rows
            report.row([system, f"{workload.size:,}", f"failed: {type(exc).__name__}: {exc}"[:300]])
        else:
            report.row(cells(system, workload, measured, ahead[TEXTS[system]][1]))
        finally:
            shutil.rmtree(store, ignore_errors=True)
    cache_path.unlink(missing_ok=True)


def chosen_systems(asked: Sequence[str], report: Report) -> list[str]:
    systems = []
    for system in dict.fromkeys(asked):
        if system == "mem0" and importlib.util.find_spec("mem0") is None:
            report("mem0 skipped: not installed (pip install -e '.[bench]' installs mem0ai==2.2.1)")
            continue
        systems.append(system)
    return systems


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="rounds stored, per size")
    parser.add_argument("--users", type=int, default=1, help="users the rounds are dealt to, a session each in turn")
    parser.add_argument("--rounds-per-session", type=int, default=10, help="rounds stored by each add call")
    parser.add_argument("--pool", type=int, default=0,
                        help="draw rounds from this many distinct rounds, embedded once (0: every round new)")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS),
                        help="default: all (mem0 when installed)")
    parser.add_argument("--mem0-max-rounds", type=int, default=100_000,
                        help="skip mem0 for larger sizes (its local store is slow at scale)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--folder", type=Path, default=None,
                        help="where stores and the embedding cache go, each removed once measured (default: temp)")
    parser.add_argument("--out", type=Path, default=None, help="append the tables to this markdown file")
    args = parser.parse_args(argv)
    if args.users < 1 or args.rounds_per_session < 1:
        parser.error("--users and --rounds-per-session must be at least 1")
    if args.pool and args.pool < args.rounds_per_session:
        parser.error("--pool must hold at least --rounds-per-session rounds")

    report = Report(args.out)
    command = " ".join(sys.argv[1:] if argv is None else argv)
    report(f"\n`python -m memagent_evals.bench_store {command}` ({time.strftime('%Y-%m-%d')}, "
           f"{os.cpu_count()} CPU cores, {platform.machine()})")
    systems = chosen_systems(args.systems, report)
    if args.folder:
        args.folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        for size in args.sizes:
            workload = Workload(size, args.users, args.rounds_per_session, args.pool, args.queries)
            here = [s for s in systems if s != "mem0" or size <= args.mem0_max_rounds]
            skipped = "" if here == systems else f"mem0 skipped: over --mem0-max-rounds {args.mem0_max_rounds:,}."
            run_size(report, workload, here, Path(tmp), skipped)
            report.save()


if __name__ == "__main__":
    main()
