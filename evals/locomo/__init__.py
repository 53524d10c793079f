"""LoCoMo (snap-research/LoCoMo) in the LongMemEval schema."""
