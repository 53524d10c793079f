"""Training MAC's networks: answer NLL only, the LM and encoder frozen (Tack et al. 2024, §3).

A step takes a batch of documents, one question about each; the batch's documents are the bank every
question aggregates from, so a question must find its own document among the others. Backprop
dropout: only ``backprop_fraction`` of the documents are amortized with gradients, the rest under
no_grad, which bounds memory by a fraction of the batch. Adam, constant learning rate after a 1%
warm-up (optionally falling to zero over a last stretch: a cool-down, which MAC does not use).
Checkpoints (with the optimizer) are written as it goes and a rerun resumes from the last.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memagent.mac.model import MacModel

STATE = "train_state.pt"  # optimizer, step and RNG: what a resumed run needs beyond the weights


@dataclass(frozen=True)
class Document:
    """A document (a session's text) and questions about it, as (question, answer) pairs."""

    id: str
    text: str
    qa: tuple[tuple[str, str], ...]


def read_documents(path: Path) -> list[Document]:
    """JSONL rows ``{"id", "text", "qa": [{"question", "answer"}, ...]}``."""
    documents = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            qa = tuple((str(q["question"]), str(q["answer"])) for q in row.get("qa", []))
            documents.append(Document(str(row["id"]), str(row["text"]), qa))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}:{line_number}: not a document row ({exc!r}); "
                             'expected {"id", "text", "qa": [{"question", "answer"}]}') from exc
    return documents


def write_documents(documents: Sequence[Document], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as sink:
        for d in documents:
            qa = [{"question": q, "answer": a} for q, a in d.qa]
            sink.write(json.dumps({"id": d.id, "text": d.text, "qa": qa}) + "\n")


def batches(documents: Sequence[Document], size: int, rng: random.Random) -> Iterator[list[tuple[Document, int]]]:
    """Endless batches of distinct documents with one of their questions each, epoch by epoch."""
    usable = [d for d in documents if d.qa]
    if len(usable) < size:
        raise ValueError(f"batch: {size} documents per batch, but only {len(usable)} have questions")
    while True:
        order = rng.sample(usable, len(usable))
        for start in range(0, len(order) - size + 1, size):
            yield [(d, rng.randrange(len(d.qa))) for d in order[start : start + size]]


def step_loss(model: MacModel, batch: Sequence[tuple[Document, int]], rng: random.Random,
              bank_size: int | None = None) -> torch.Tensor:
    """One step's loss: amortize the batch (backprop dropout), aggregate, read the answers. Each question
    reads a bank of ``bank_size`` of the batch's documents (None: all), its own among them."""
    texts = [d.text for d, _ in batch]
    with_grad = max(1, round(len(texts) * model.config.backprop_fraction))
    tracked = model.amortize(texts[:with_grad])
    with torch.no_grad():
        frozen = model.amortize(texts[with_grad:]) if with_grad < len(texts) else tracked[:0].detach()
    documents = torch.cat([tracked, frozen])  # [B, T, width], in batch order
    size = len(texts) if bank_size is None else max(1, min(bank_size, len(texts)))
    picks = []
    for own in range(len(texts)):  # its own document and size - 1 others, in a random order
        row = [own, *rng.sample([n for n in range(len(texts)) if n != own], size - 1)]
        picks.append(rng.sample(row, len(row)))
    bank = documents[torch.tensor(picks, device=documents.device)]  # [Q, size, T, width]
    questions = [d.qa[n][0] for d, n in batch]
    answers = [d.qa[n][1] for d, n in batch]
    # now and then read the bank as two windows, then their outputs: the hierarchical path at inference
    window = max(2, size // 2) if size >= 4 and rng.random() < model.config.hierarchy_p else 0
    return model.loss(questions, answers, model.aggregate(questions, bank, window))


def lr_factor(step: int, steps: int, cooldown: int = 0) -> float:
    """The learning rate at ``step`` as a share of the set one: up over a 1% warm-up (MAC), then
    constant, then down linearly to zero over the last ``cooldown`` steps."""
    warmup = max(1, steps // 100)
    tail = (steps - step) / cooldown if cooldown > 0 else 1.0
    return max(0.0, min(1.0, (step + 1) / warmup, tail))


def train(model: MacModel, documents: Sequence[Document], out: Path, *, steps: int, batch: int = 16,
          lr: float = 1e-4, ramp: int = 0, cooldown: int = 0, seed: int = 0, save_every: int = 100,
          minutes: float | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Train for ``steps`` steps (resuming from ``out`` when it holds a run), saving every ``save_every``;
    returns the log rows (also appended to ``out/log.jsonl``). ``ramp``: over the first ``ramp`` steps
    each question's bank grows from its own document alone to the whole batch (a curriculum: first
    learn to carry a document's facts to the LM, then to find the document among others). ``cooldown``:
    the learning rate falls to zero over the last that many steps; the schedule is a function of the
    step, so a run resumed with more ``steps`` and a cool-down decays from where it stands. ``minutes``:
    stop (and save) once this run has trained that long, wherever the step count is (a leased GPU's
    time); the schedule stays the one of ``steps``, so a rerun with more time resumes it."""
    from tqdm import tqdm

    rng, parameters = random.Random(seed), [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, cooldown))
    start = _resume(model, optimizer, schedule, rng, out)
    stream = batches(documents, batch, rng)
    log, window, started = [], [], time.perf_counter()
    bar = tqdm(total=steps, initial=start, desc="mac train", unit="step", disable=not progress)
    model.train()
    for step in range(start, steps):
        bank_size = 1 + (batch - 1) * step // ramp if step < ramp else None
        loss = step_loss(model, next(stream), rng, bank_size)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        window.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{sum(window) / len(window):.3f}")
        out_of_time = minutes is not None and time.perf_counter() - started >= minutes * 60
        if (step + 1) % save_every == 0 or step + 1 == steps or out_of_time:
            row = {"step": step + 1, "loss": sum(window) / len(window), "seconds": time.perf_counter() - started,
                   "bank": bank_size or batch}
            log.append(row)
            window = []
            _save(model, optimizer, schedule, rng, out, row)
        if out_of_time:
            break
    bar.close()
    model.eval()
    return log


def _save(model: MacModel, optimizer: Any, schedule: Any, rng: random.Random, out: Path, row: dict[str, Any]) -> None:
    model.save(out)
    state = {"step": row["step"], "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
             "rng": rng.getstate()}
    torch.save(state, out / STATE)
    with (out / "log.jsonl").open("a", encoding="utf-8") as sink:
        sink.write(json.dumps(row) + "\n")


def _resume(model: MacModel, optimizer: Any, schedule: Any, rng: random.Random, out: Path) -> int:
    if not (out / STATE).exists():
        return 0
    from safetensors.torch import load_file

    from memagent.mac.model import WEIGHTS

    model.load_state_dict(load_file(str(out / WEIGHTS)))
    state = torch.load(out / STATE, weights_only=False)  # our own file: optimizer state and a Python RNG state
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    rng.setstate(state["rng"])
    return int(state["step"])
