"""Answering from memories: the Chain-of-Note reader, its confidence and refusal."""
