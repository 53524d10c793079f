"""Dense retrieval: the query's embedding against the stored keys' embeddings, in Chroma."""

from __future__ import annotations

from memagent.embedding import Embedder
from memagent.store.chroma import ChromaStore, Where


def dense_ranking(
    store: ChromaStore, embedder: Embedder, query: str, user_id: str, where: Where | None, n: int
) -> list[str]:
    """Ids of the user's ``n`` records whose keys are nearest the query (cosine), best first."""
    vector = embedder.embed_queries([query])[0]
    return [record_id for record_id, _distance in store.nearest(user_id, vector, where, n)]
