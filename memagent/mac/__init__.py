"""MAC: memory of amortized contexts (Tack et al., NeurIPS 2024), a reader that reads no text.

Each stored session is amortized once into a few vectors (``Amortizer``); a user's vectors form a
``MemoryBank``; for a question, the ``Aggregator`` reads the bank and gives T tokens, which the
``PrefixGenerator`` turns into a key/value prefix for a frozen LM. See ``MacModel``.
"""

from memagent.mac.config import MacConfig
from memagent.mac.model import MacModel, question_prompt
from memagent.mac.train import Document, read_documents, train

__all__ = ["Document", "MacConfig", "MacModel", "question_prompt", "read_documents", "train"]
