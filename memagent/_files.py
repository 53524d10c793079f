"""File helpers shared by the packaged-weights checks and the evaluation runner."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so multi-GB weights need no memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bank_path(folder: Path, user_id: str) -> Path:
    """A user's MAC bank file in ``folder``; named by a hash, as user ids may hold any character."""
    return folder / f"{hashlib.sha256(user_id.encode()).hexdigest()[:32]}.safetensors"
