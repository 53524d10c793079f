"""Optional parts live behind extras; importing one without its extra says which to install."""

from __future__ import annotations

from importlib.util import find_spec

from memagent.errors import MissingExtra


def require(extra: str, *modules: str) -> None:
    """Raise ``MissingExtra`` naming ``extra`` unless every one of ``modules`` is installed."""
    missing = [name for name in modules if find_spec(name) is None]
    if missing:
        raise MissingExtra(extra, missing)
