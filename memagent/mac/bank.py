"""``MemoryBank``: one user's amortized sessions, saved beside the store.

The bank is a cache of the records, never a second source of truth: a session's rounds are cut into
chunks the encoder can read whole, each chunk is amortized once and kept under the hash of its text,
and the bank a question reads is gathered from the scope's current records. An edited or deleted
round changes its chunk's hash, so the old vectors are never read again (and are pruned when the
whole user's bank is gathered); a bank written by another checkpoint is discarded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from memagent._files import bank_path
from memagent.mac.amortizer import TokenEncoder
from memagent.mac.model import MacModel
from memagent.schema import MemoryRecord


def checkpoint_id(model: MacModel) -> str:
    """A hash of the trainable weights and config: a bank is only read by the networks that wrote it."""
    digest = hashlib.sha256(json.dumps(asdict(model.config), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def session_chunks(records: Sequence[MemoryRecord], encoder: TokenEncoder, max_tokens: int) -> list[str]:
    """Each session's rounds in order, joined into chunks of at most ``max_tokens`` encoder tokens (a
    round longer than that is its own chunk, cut by the encoder)."""
    sessions: dict[str, list[MemoryRecord]] = {}
    for record in records:
        sessions.setdefault(record.session_id, []).append(record)
    chunks = []
    for rounds in sessions.values():
        current: list[str] = []
        for record in sorted(rounds, key=lambda r: r.round_index):
            if current and encoder.count_tokens("\n".join([*current, record.value])) > max_tokens:
                chunks.append("\n".join(current))
                current = []
            current.append(record.value)
        if current:
            chunks.append("\n".join(current))
    return chunks


__all__ = ["MemoryBank", "bank_path", "checkpoint_id", "session_chunks"]


class MemoryBank:
    def __init__(self, path: Path, checkpoint_id: str) -> None:
        self.path, self.checkpoint_id = path, checkpoint_id
        self.rows: dict[str, torch.Tensor] = {}  # chunk hash -> its tokens [T, width]
        if path.exists():
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as stored:
                meta = stored.metadata() or {}
                if meta.get("checkpoint") == checkpoint_id:  # else: written by other networks, unreadable
                    tokens = stored.get_tensor("tokens")
                    self.rows = dict(zip(json.loads(meta["hashes"]), tokens, strict=True))

    def gather(self, model: MacModel, chunks: Sequence[str], prune: bool = False) -> torch.Tensor:
        """The bank [S, T, width] for ``chunks``: stored rows reused, new chunks amortized (once) and saved.
        ``prune``: ``chunks`` are all the user has, so rows for any other text are dropped."""
        hashes = [hashlib.sha256(c.encode()).hexdigest() for c in chunks]
        new = [(h, c) for h, c in dict(zip(hashes, chunks, strict=True)).items() if h not in self.rows]
        changed = bool(new) or (prune and set(self.rows) - set(hashes))
        with torch.no_grad():
            for start in range(0, len(new), 32):
                part = new[start : start + 32]
                for (h, _c), row in zip(part, model.amortize([c for _h, c in part]).cpu(), strict=True):
                    self.rows[h] = row
        if prune:
            self.rows = {h: self.rows[h] for h in hashes}
        if changed:
            self.save()
        if not hashes:
            return torch.zeros(0, model.config.bank_tokens, model.bank_width)
        return torch.stack([self.rows[h] for h in hashes])

    def save(self) -> None:
        from safetensors.torch import save_file

        self.path.parent.mkdir(parents=True, exist_ok=True)
        hashes = list(self.rows)
        tokens = torch.stack([self.rows[h] for h in hashes]) if hashes else torch.zeros(0)
        partial = self.path.with_suffix(".partial")
        save_file({"tokens": tokens.contiguous()}, str(partial),
                  metadata={"checkpoint": self.checkpoint_id, "hashes": json.dumps(hashes)})
        partial.replace(self.path)  # whole or not at all: a crash mid-write leaves the old bank
