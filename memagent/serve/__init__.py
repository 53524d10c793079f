"""Serving memagent: an OpenAI-compatible chat server with the memories REST API (``app.py``, ``rest.py``;
the `server` extra), API keys and their users (``auth.py``), and an MCP server (``mcp.py``; the `mcp` extra)."""
