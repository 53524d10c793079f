"""Dense retrieval: the query's embedding against the stored keys' embeddings, in Chroma."""

from __future__ import annotations

from memagent._text import tokenize
from memagent.embedding import Embedder
from memagent.retrieve.lexical import BM25Index
from memagent.store.chroma import ChromaStore, Where

# below this many records a fraction says little: no word is left out of a query
MIN_RECORDS_FOR_COMMON_NAMES = 20


def dense_ranking(
    store: ChromaStore, embedder: Embedder, query: str, user_id: str, where: Where | None, n: int
) -> list[str]:
    """Ids of the user's ``n`` records whose keys are nearest the query (cosine), best first."""
    vector = embedder.embed_queries([query])[0]
    return [record_id for record_id, _distance in store.nearest(user_id, vector, where, n)]


def without_common_names(query: str, index: BM25Index, fraction: float) -> str:
    """``query`` without the names (capitalised words after the first) that more than ``fraction`` of
    the user's records mention, as a transcript's speaker labels put its two names in every round.

    Such a name cannot tell the records apart, yet a sentence embedding leans on it, so it pulls the
    dense ranking toward everything that person said. BM25 keeps the whole query: its idf already
    gives such a word almost no weight.
    """
    if fraction >= 1 or len(index) < MIN_RECORDS_FOR_COMMON_NAMES:
        return query
    words = query.split()
    kept = [word for position, word in enumerate(words) if position == 0 or not _common_name(word, index, fraction)]
    return " ".join(kept) if len(kept) < len(words) else query


def _common_name(word: str, index: BM25Index, fraction: float) -> bool:
    core = word.strip(".,;:!?\"()[]").removesuffix("'s").removesuffix("\u2019s")
    if len(core) < 2 or not core[0].isupper():
        return False
    terms = tokenize(core)  # a stopword ("The") gives no term and stays
    return bool(terms) and all(index.document_fraction(term) > fraction for term in terms)
