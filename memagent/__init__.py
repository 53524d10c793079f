"""memagent: long-term memory for chat assistants, local-first."""

from memagent.config import EmbedderConfig, ExpansionConfig, MemoryConfig, ReaderConfig, RetrievalConfig, StoreConfig
from memagent.embedding import CachedEmbedder, Embedder, OnnxEmbedder, SentenceTransformerEmbedder
from memagent.errors import InputError, MemagentError, RecordNotFound
from memagent.llm.base import LLM, Generation, LLMError
from memagent.llm.scripted import ScriptedLLM
from memagent.memory import AsyncMemory, Memory
from memagent.schema import Answer, HistoryEntry, Hit, MemoryRecord, Message, SearchFilters

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "AsyncMemory",
    "CachedEmbedder",
    "Embedder",
    "EmbedderConfig",
    "ExpansionConfig",
    "Generation",
    "HistoryEntry",
    "Hit",
    "InputError",
    "LLM",
    "LLMError",
    "MemagentError",
    "Memory",
    "MemoryConfig",
    "MemoryRecord",
    "Message",
    "OnnxEmbedder",
    "ReaderConfig",
    "RecordNotFound",
    "RetrievalConfig",
    "ScriptedLLM",
    "SearchFilters",
    "SentenceTransformerEmbedder",
    "StoreConfig",
]
