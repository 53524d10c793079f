"""Storage: records, their vectors and their history, in Chroma."""
