"""Read path: dense and lexical rankings, fused."""
