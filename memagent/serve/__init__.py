"""Serving memagent over HTTP: an OpenAI-compatible chat server (the `server` extra)."""
