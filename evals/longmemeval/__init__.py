"""LongMemEval (Wu et al., ICLR 2025): load the official files, score retrieval and QA as it does."""
