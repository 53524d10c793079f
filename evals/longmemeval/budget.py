"""Evidence recall within a reader budget: does all the evidence fit in the first B tokens a retriever returns?

The official metrics count units (recall_all@5 is five whole sessions for a session retriever and
five rounds for a round retriever); a reader has a token budget. For one question and one retriever:

- the retriever's **full** ranking is walked in order (every unit of the corpus: records the
  search returned, then the ones it did not score, in corpus order, exactly as the official
  ranking ends), each unit costing the tokens of its text as a reader gets it: the stored record
  value (a whole session for a session retriever, a round for a round retriever); records the
  corpus has no id for (a round opened by an assistant greeting) cost their tokens too;
- evidence is the official gold of the retriever's level (ids holding 'answer': the user turns
  with ``has_answer`` at turn level, the sessions holding them at session level, so a session
  unit covers its evidence turns);
- ``tokens_needed`` is the token count of the shortest prefix of whole units that covers every
  evidence unit (null when the ranking never does), ``units_needed`` its length, and
  ``evidence_recall@B`` is 1 when ``tokens_needed <= B``.

Units count whole (an evidence turn at the start of a long last session still costs the whole
session), and no prompt overhead, separator or date is counted.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUDGETS = (512, 1024, 2048, 4096)
CHARS_PER_TOKEN = 4
CHARS = "chars/4"
DEFAULT_TOKENIZER = "qwen2.5-coder-1.5b-instruct"  # the packaged default reader


@dataclass(frozen=True)
class Unit:
    """One thing a retriever returns, in reader order: its text and the corpus positions it covers."""

    text: str
    positions: tuple[int, ...]


class TokenCounter:
    """Counts tokens of texts in batches, each distinct text once per run (texts repeat across retrievers)."""

    def __init__(self, name: str, encode: Callable[[list[str]], list[int]]) -> None:
        self.name = name
        self._encode = encode
        self._counts: dict[bytes, int] = {}  # keyed by a digest: a run's texts need not stay in memory

    def count(self, texts: Sequence[str]) -> list[int]:
        keys = [hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in texts]
        missing = {key: text for key, text in zip(keys, texts) if key not in self._counts}
        if missing:
            self._counts.update(zip(missing, self._encode(list(missing.values()))))
        return [self._counts[key] for key in keys]


def char_counter(note: str = "") -> TokenCounter:
    """The fallback: ceil(characters / 4), about what English text costs in a sub-word tokenizer."""
    name = CHARS + (f" (fallback: {note})" if note else "")
    return TokenCounter(name, lambda texts: [math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts])


def _sources(spec: str) -> list[tuple[Path | str, str | None]]:
    """Where a tokenizer for ``spec`` may be: (folder or hub id, GGUF file name in it or None)."""
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        return [(path.parent, path.name)] if path.is_file() else []
    from memagent.llm import models  # read only: where packaged models are installed

    folder: Path | None = path if path.is_dir() else None
    gguf_names: list[str] = []
    registry = getattr(models, "REGISTRY", {})
    if folder is None and spec in registry:
        folder = Path(models.models_dir()) / spec
        gguf_names.append(getattr(registry[spec], "gguf", ""))
    if folder is None:
        return [(spec, None)]  # a hub id: only from the local cache (HF_HUB_OFFLINE)
    found: list[tuple[Path | str, str | None]] = []
    for candidate in (folder / "hf", folder):  # a converted transformers folder, or the folder itself
        if (candidate / "tokenizer_config.json").is_file() or (candidate / "tokenizer.json").is_file():
            found.append((candidate, None))
    if folder.is_dir():
        gguf_names += sorted(p.name for p in folder.glob("*.gguf"))
    found += [(folder, name) for name in dict.fromkeys(gguf_names) if name and (folder / name).is_file()]
    return found


def _encoder(tokenizer: Any) -> Callable[[list[str]], list[int]]:
    def encode(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    return encode


def hf_counter(spec: str) -> TokenCounter:
    """The tokenizer of a packaged model name, a transformers folder, a .gguf file or a cached hub id."""
    from transformers import AutoTokenizer

    failures = []
    for where, gguf_file in _sources(spec):
        try:
            options = {"gguf_file": gguf_file} if gguf_file else {}
            tokenizer = AutoTokenizer.from_pretrained(str(where), **options)
        except Exception as exc:  # noqa: BLE001 - any loader failure means: try the next source
            failures.append(f"{where}{'/' + gguf_file if gguf_file else ''}: {type(exc).__name__}: {exc}")
            continue
        tokenizer.model_max_length = 1 << 40  # counting only: no "sequence too long" warnings

        source = f"{where}/{gguf_file}" if gguf_file else str(where)
        return TokenCounter(f"{spec} tokenizer (`{source}`)", _encoder(tokenizer))
    raise ValueError(f"no tokenizer found for {spec!r}" + (": " + "; ".join(failures) if failures else
                                                           " (not installed: no folder, hf/ or .gguf)"))


def load_counter(spec: str | None = None) -> TokenCounter:
    """``spec``: 'chars/4', or where a tokenizer is (see hf_counter). None: the packaged reader's
    tokenizer if installed, else chars/4 with the reason in its name. A named tokenizer that cannot
    load is an error (the figures would silently mean something else)."""
    if spec in (CHARS, "chars"):
        return char_counter()
    try:
        return hf_counter(spec or DEFAULT_TOKENIZER)
    except (ImportError, ValueError) as exc:
        if spec is not None:
            raise ValueError(f"--budget-tokenizer {spec}: {exc}") from exc
        return char_counter(f"{DEFAULT_TOKENIZER}'s tokenizer unavailable: {str(exc)[:200]}")


def tokens_to_cover(units: Sequence[Unit], evidence: Iterable[int], counter: TokenCounter) -> tuple[int, int] | None:
    """(tokens, units) of the shortest prefix of whole ``units`` that covers every ``evidence``
    position; None when the units never cover them all. Only the prefix is tokenized."""
    missing = set(evidence)
    end = 0
    while missing and end < len(units):
        missing.difference_update(units[end].positions)
        end += 1
    if missing:
        return None
    return sum(counter.count([u.text for u in units[:end]])), end


def budget_scores(units: Sequence[Unit], evidence: Iterable[int], counter: TokenCounter,
                  budgets: Sequence[int] = BUDGETS) -> dict[str, Any]:
    """What a row of per_question.jsonl stores: tokens and units needed, and recall at each budget."""
    covered = tokens_to_cover(units, evidence, counter)
    tokens, count = covered if covered else (None, None)
    return {"tokens_needed": tokens, "units_needed": count,
            **{f"evidence_recall@{b}": float(tokens is not None and tokens <= b) for b in budgets}}
