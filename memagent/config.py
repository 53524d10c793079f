"""Configuration: one settings object, one nested model per stage.

Precedence (pydantic-settings): arguments > ``MEMAGENT_*`` environment variables > defaults.
Nested fields use a double underscore: ``MEMAGENT_STORE__PATH=/data/mem``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_store_path() -> Path:
    """Where an embedded store lives when no path is given (XDG data dir; created on first use)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "memagent"


class StoreConfig(BaseModel):
    """Chroma: an embedded folder (default) or a server (``url``)."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(default_factory=default_store_path, description="folder of the embedded store")
    url: str | None = Field(default=None, description="a Chroma server, e.g. http://localhost:8000; overrides path")
    collection: str = "memagent"


class EmbedderConfig(BaseModel):
    """A sentence-transformers model: a short name we know, a hub id, or a local folder.

    ``backend``: ``torch`` runs the model with sentence-transformers; ``onnx`` and ``onnx-int8`` run an
    ONNX export of it with onnxruntime on the CPU, exported once into the models folder. ``onnx`` gives
    the same vectors; ``onnx-int8`` quantizes most weights to 8 bits: ~1.6-2.4x torch's texts/s on 2
    cores, cosine >= 0.98 to torch's vectors, retrieval within a point on LoCoMo. The ONNX backends
    need a packaged short name or a local folder; exporting needs the ``onnx`` extra.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = "all-MiniLM-L6-v2"
    backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        default="torch", description="'torch' (sentence-transformers), 'onnx' or 'onnx-int8' (onnxruntime, CPU)"
    )
    device: str | None = Field(default=None, description="'cpu', 'cuda', ...; None picks automatically")
    batch_size: int = Field(default=64, gt=0)
    cache_path: Path | None = Field(
        default=None, description="sqlite file of cached embeddings; None puts it in the store folder"
    )

    @model_validator(mode="after")
    def _onnx_runs_on_cpu(self) -> EmbedderConfig:
        if self.backend != "torch" and self.device not in (None, "cpu"):
            raise ValueError(f"backend {self.backend!r} runs on the CPU; device {self.device!r} needs backend 'torch'")
        return self


class RetrievalConfig(BaseModel):
    """How search ranks: rankings fused by reciprocal rank (Cormack et al. 2009).

    ``dense``: embedding similarity of each record's key; ``lexical``: BM25 over keys; ``session``:
    session context for rounds: BM25 over whole sessions, and each round ranking also votes for
    sessions by their best round; every round takes its session's votes, its own ranks weighted by
    ``round_weight`` (context a single round lacks).
    """

    model_config = ConfigDict(extra="forbid")

    # the default is the ablation's best on LoCoMo and LongMemEval (evals/results/README.md)
    retrievers: tuple[Literal["dense", "lexical", "session"], ...] = ("dense", "lexical", "session")
    candidates: int = Field(default=50, gt=0, description="how deep each retriever ranks before fusion")
    # 20, not the RRF paper's 60, so the top sessions stand out; rounds at half their sessions' weight:
    # lower helps conversations of short utterances (LoCoMo) and hurts long rounds (LongMemEval), see
    # evals/results/README.md
    rrf_k: int = Field(default=20, gt=0, description="RRF damping constant")
    round_weight: float = Field(
        default=0.5, ge=0.0, description="with session context: weight of a round's own ranks against its session's"
    )
    # the speaker labels of a transcript ("Nadia: ...") put its two names in every round: in the dense
    # query they pull toward everything that person said (LoCoMo dev6 session R_all@5 +2.5, s26 unchanged)
    common_names: float = Field(
        default=0.2, ge=0.0, le=1.0,
        description="a capitalised query word (a name) found in more than this fraction of the user's records "
        "is left out of the dense query, which it would pull toward every record; 1 keeps every word",
    )
    time_aware: bool = Field(
        default=True,
        description="time-aware query expansion (LongMemEval §5): records dated inside the range the question "
        "names (relative to the question date, widened by time_window_days) move to the front",
    )
    time_llm: bool = Field(default=False, description="ask the reader model when the rules cannot tell the range")
    time_window_days: float = Field(default=2.0, ge=0.0, description="how far the range is widened each side")
    salience_weight: float = Field(
        default=0.0, ge=0.0,
        description="above 0: the found records ranked by salience (config.salience) are fused in at this weight",
    )
    # a cross-encoder reads the question with each candidate: better lines first, at ~4 ms a candidate on
    # 2 cores, so it is a setting, not the default (issue 18's table in evals/results/README.md)
    rerank: Literal["none", "cross-encoder"] = Field(
        default="none", description="'cross-encoder': the fused top rerank_depth are rescored by rerank_model"
    )
    rerank_model: str = Field(
        default="ms-marco-minilm-l12-v2",
        description="a packaged cross-encoder (memagent models install ...) or a folder with model.onnx and "
        "tokenizer.json",
    )
    rerank_depth: int = Field(default=30, gt=0, description="how many fused candidates the cross-encoder reads")
    rerank_sessions: int = Field(
        default=3, ge=0,
        description="short rounds (a median of at most 100 words, as a transcript's utterances): the best-scored "
        "line of each of this many leading sessions first, then their other rounds; 0, or long rounds: the scores "
        "fused with the fused order only",
    )


class ExpansionConfig(BaseModel):
    """Key expansion at indexing time (LongMemEval §5): what each key gains, and from which model."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["none", "keyphrases", "facts", "summary"] = "none"
    model: str | None = Field(
        default=None, description="default: smollm2-135m-instruct for keyphrases, the reader for facts and summary"
    )
    keyphrases: int = Field(default=12, gt=0, description="surprising words added per value")

    def model_name(self, reader_model: str) -> str:
        """The model that expands keys: the one named, else SmolLM2-135M for keyphrases (one forward
        pass per value: cheap on a CPU) and the reader for facts and summaries (they need generation)."""
        if self.model is not None:
            return self.model
        return "smollm2-135m-instruct" if self.kind == "keyphrases" else reader_model


class ReaderConfig(BaseModel):
    """The LLM that answers from memories: a packaged short name, a folder, a .gguf file, or a server URL."""

    model_config = ConfigDict(extra="forbid")

    model: str = "qwen2.5-coder-1.5b-instruct"
    backend: Literal["auto", "llama.cpp", "transformers"] = Field(
        default="auto",
        description="what runs a GGUF model: llama.cpp when the llama extra is installed (auto), or transformers",
    )
    adapter: str | None = Field(
        default=None,
        description="a LoRA adapter for the reader (R-Tuning: memagent.answer.rtuning), by name or folder; "
                    "it runs on the transformers backend",
    )
    prompt: Literal["notes", "notes-first", "direct-first", "checked-first"] | None = Field(
        default=None,
        description="how the reader is asked (memagent.answer.reader.PROMPTS); None: the best measured for the model",
    )
    k: int = Field(default=5, gt=0, description="memories given to the reader")
    max_new_tokens: int = Field(default=200, gt=0)
    max_memory_chars: int = Field(default=2000, gt=0, description="each memory is cut to this length in the prompt")
    sure_probe: Literal["memories", "internal"] | None = Field(
        default="memories",
        description="after answering, ask the reader whether it is sure (R-Tuning) and mix that into confidence; "
                    "'internal' is R-Tuning's original wording; None: confidence is the answer's likelihood alone",
    )
    refuse_below: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="also refuse when confidence is below this; None: the threshold fitted for the reader, prompt "
                    "and sure-probe (memagent.answer.confidence.FITTED_THRESHOLDS) if there is one; 0: never",
    )


class SalienceConfig(BaseModel):
    """How ``Memory.compact`` judges what to keep (SirLLM's entropy decay for stored records)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(default="smollm2-135m-instruct", description="the LM whose token surprisal scores records")
    measure: Literal["total", "mean"] = Field(
        default="total", description="a record's surprisal summed over its tokens (its information), or their mean",
    )
    decay: float = Field(default=1.0, gt=0.0, le=1.0,
                         description="salience is multiplied by this once per later session of the user")
    max_chars: int = Field(default=2000, gt=0, description="each record's text is cut to this length when scored")


class MacReaderConfig(BaseModel):
    """MAC as a reader, ``Memory.answer(..., reader="mac")``: the user's sessions amortized into a bank of
    vectors that a frozen LM reads as a prefix (``memagent mac train`` writes the checkpoint)."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: Path | None = Field(default=None, description="a folder written by `memagent mac train`")
    device: str | None = Field(default=None, description="'cpu', 'cuda', ...; None picks automatically")
    max_new_tokens: int = Field(default=32, gt=0)


class MemoryConfig(BaseSettings):
    """Everything a ``Memory`` needs to know. All fields can be set by ``MEMAGENT_`` variables."""

    model_config = SettingsConfigDict(env_prefix="MEMAGENT_", env_nested_delimiter="__", extra="forbid")

    store: StoreConfig = Field(default_factory=StoreConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    reader: ReaderConfig = Field(default_factory=ReaderConfig)
    expansion: ExpansionConfig = Field(default_factory=ExpansionConfig)
    salience: SalienceConfig = Field(default_factory=SalienceConfig)
    mac: MacReaderConfig = Field(default_factory=MacReaderConfig)
    granularity: Literal["round", "session"] = Field(
        default="round", description="value unit (LongMemEval §5): one user turn + reply, or a whole session"
    )
    key: Literal["value", "user"] = Field(
        default="value", description="what is indexed: the whole value, or only the user's words in it"
    )
    k: int = Field(default=5, gt=0, description="hits returned by search when k is not given")
    max_message_chars: int = Field(default=100_000, gt=0, description="longest message content accepted")
    max_query_chars: int = Field(default=4_000, gt=0, description="longest search query or question accepted")

    @model_validator(mode="after")
    def _some_retriever(self) -> MemoryConfig:
        if not self.retrieval.retrievers:
            raise ValueError("retrieval.retrievers must name at least one of 'dense', 'lexical', 'session'")
        return self
