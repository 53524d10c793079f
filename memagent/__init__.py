"""memagent: long-term memory for chat assistants, local-first."""

from memagent.config import EmbedderConfig, MemoryConfig, RetrievalConfig, StoreConfig
from memagent.embedding import CachedEmbedder, Embedder, SentenceTransformerEmbedder
from memagent.errors import InputError, MemagentError, RecordNotFound
from memagent.memory import AsyncMemory, Memory
from memagent.schema import HistoryEntry, Hit, MemoryRecord, Message, SearchFilters

__version__ = "0.1.0"

__all__ = [
    "AsyncMemory",
    "CachedEmbedder",
    "Embedder",
    "EmbedderConfig",
    "HistoryEntry",
    "Hit",
    "InputError",
    "MemagentError",
    "Memory",
    "MemoryConfig",
    "MemoryRecord",
    "Message",
    "RecordNotFound",
    "RetrievalConfig",
    "SearchFilters",
    "SentenceTransformerEmbedder",
    "StoreConfig",
]
