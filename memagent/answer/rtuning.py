"""R-Tuning (Zhang et al., NAACL 2024) for the reader: teach it to say when it is not sure.

Refusal-aware data comes from the reader's own answers: each training question's chat (the memories
memagent retrieved and the question, as the reader saw them), the answer to teach, and the sure
question with "I am sure." where the reader's own answer was judged right and "I am unsure." where it
was not (R-Tuning's ``unsure`` method, which teaches the reference answer either way). A question the
memories cannot answer is always "unsure", its answer a refusal. The ``refuse`` variant (R-Tuning-R)
asks no sure question and teaches a refusal wherever the reader was wrong.

Tuning is LoRA (peft) on the attention projections of the frozen reader, on the transformers backend.
The loss covers the assistant's turns only: R-Tuning's LMFlow run trains on every token of its text,
but here most tokens are the user's memories, which a reader should read, not learn to write.
Adapters are folders under ``adapters_dir()`` (a name) or anywhere (a path), each with
``training.json``: the base model, the data's sha256 and counts, the settings, time and peak memory.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from memagent._extras import require
from memagent.answer.confidence import SURE_QUESTIONS
from memagent.llm.base import LLMError

if TYPE_CHECKING:
    from memagent.llm.local import LocalLLM

Variant = Literal["unsure", "refuse"]
REFUSAL = "I don't know."
SURE, UNSURE = "I am sure.", "I am unsure."
TRAINING_FILE = "training.json"


@dataclass(frozen=True)
class TuningExample:
    """One chat to learn from: the reader's prompt, the answer to teach, and whether to say it is sure
    (None: no sure question, the ``refuse`` variant)."""

    messages: list[dict[str, str]]
    answer: str
    sure: bool | None


def refusal_aware_example(
    messages: Sequence[dict[str, str]], reference: str, correct: bool, unanswerable: bool,
    variant: Variant = "unsure",
) -> TuningExample:
    """The example R-Tuning builds from one question the reader answered (``correct`` as judged)."""
    chat = [dict(m) for m in messages]
    if variant == "unsure":
        return TuningExample(chat, REFUSAL if unanswerable else reference, sure=correct and not unanswerable)
    if variant == "refuse":
        return TuningExample(chat, reference if correct and not unanswerable else REFUSAL, sure=None)
    raise ValueError(f"variant: {variant!r} is not 'unsure' or 'refuse'")


def balanced(examples: Sequence[TuningExample], ratio: float, seed: int = 0) -> list[TuningExample]:
    """At most ``ratio`` times as many "unsure" examples as "sure" ones, the unsure kept at random.

    A weak reader is right on few questions, so R-Tuning's data is then mostly "unsure", and a reader
    tuned on it learns to say "unsure" to everything. Balancing keeps the labels informative. The
    order of what is kept is unchanged; examples without a sure question are all kept."""
    if ratio <= 0:
        raise ValueError(f"ratio: must be positive, not {ratio}")
    unsure = [n for n, e in enumerate(examples) if e.sure is False]
    keep = int(ratio * sum(e.sure is True for e in examples))
    dropped = set(random.Random(seed).sample(unsure, len(unsure) - keep)) if len(unsure) > keep else set()
    return [e for n, e in enumerate(examples) if n not in dropped]


def example_chat(example: TuningExample, wording: str = "memories") -> list[dict[str, str]]:
    """The whole chat the reader learns: its prompt, the answer, and the sure question and reply."""
    chat = [*example.messages, {"role": "assistant", "content": example.answer}]
    if example.sure is not None:
        chat += [{"role": "user", "content": SURE_QUESTIONS[wording]},
                 {"role": "assistant", "content": SURE if example.sure else UNSURE}]
    return chat


def training_tokens(tokenizer: Any, chat: Sequence[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids of ``chat`` and their labels: each assistant turn (with its end-of-turn token) is
    learnt, every other token is -100 (ignored by the loss)."""
    def ids(messages: Sequence[dict[str, str]], opening: bool) -> list[int]:
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=opening)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    full = ids(chat, opening=False)
    labels = [-100] * len(full)
    for n, message in enumerate(chat):
        if message["role"] != "assistant":
            continue
        start, end = len(ids(chat[:n], opening=True)), len(ids(chat[: n + 1], opening=False))
        if full[:end] != ids(chat[: n + 1], opening=False):
            raise LLMError("the chat template does not render a chat's turns as a prefix of the whole chat")
        labels[start:end] = full[start:end]
    return full, labels


@dataclass(frozen=True)
class TuningConfig:
    """LoRA settings (R-Tuning tuned whole models; on a CPU a low-rank adapter is what fits)."""

    rank: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = 1e-4
    epochs: int = 1
    accumulate: int = 8  # examples per optimizer step (one example per forward pass)
    max_tokens: int = 2048  # longer chats are skipped (counted in the report), never cut mid-memory
    wording: str = "memories"
    seed: int = 0


@dataclass
class TuningReport:
    examples: int
    skipped_too_long: int
    steps: int
    losses: list[float] = field(default_factory=list)  # mean loss per optimizer step
    minutes: float = 0.0
    peak_memory_mb: float = 0.0


def tune_reader(
    llm: LocalLLM, examples: Sequence[TuningExample], out: Path, config: TuningConfig = TuningConfig(), *,
    data: dict[str, Any] | None = None, progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> TuningReport:
    """Train a LoRA adapter on ``llm`` (left unchanged) and save it with ``training.json`` in ``out``.

    ``data`` describes where the examples came from (file, sha256, split); it is recorded as given."""
    require("train", "peft")
    import torch
    from peft import LoraConfig, get_peft_model

    started = time.perf_counter()
    encoded = [training_tokens(llm.tokenizer, example_chat(e, config.wording)) for e in examples]
    kept = [(ids, labels) for ids, labels in encoded if len(ids) <= config.max_tokens]
    if not kept:
        raise ValueError(f"examples: none is within max_tokens={config.max_tokens}")
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0,
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    torch.manual_seed(config.seed)
    model = get_peft_model(llm.model, lora)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
    order = random.Random(config.seed)
    report = TuningReport(examples=len(kept), skipped_too_long=len(encoded) - len(kept), steps=0)
    pending: list[float] = []
    try:
        for _ in range(config.epochs):
            batch = list(kept)
            order.shuffle(batch)
            for n, (ids, labels) in enumerate(progress(batch) if progress else batch, start=1):
                loss = model(input_ids=torch.tensor([ids], device=llm.device),
                             labels=torch.tensor([labels], device=llm.device)).loss
                (loss / config.accumulate).backward()
                pending.append(loss.item())
                if n % config.accumulate == 0 or n == len(batch):
                    optimizer.step()
                    optimizer.zero_grad()
                    report.losses.append(sum(pending) / len(pending))
                    report.steps += 1
                    pending = []
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out), save_embedding_layers=False)  # LoRA layers only; no vocab check
    finally:
        model.eval()
        llm.model = model.unload()  # the reader is left as it was given: the adapter lives only in `out`
        llm.model.eval()
    report.minutes = (time.perf_counter() - started) / 60
    report.peak_memory_mb = _peak_memory_mb()
    sure = sum(e.sure is True for e in examples)
    described = {
        "method": "R-Tuning (LoRA)", "base_model": llm.name, "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "config": asdict(config), "data": data or {},
        "examples": {"total": len(examples), "sure": sure, "unsure": sum(e.sure is False for e in examples),
                     "refusals_taught": sum(e.answer == REFUSAL for e in examples)},
        "report": asdict(report), "torch": torch.__version__,
    }
    (out / TRAINING_FILE).write_text(json.dumps(described, indent=1), encoding="utf-8")
    return report


def _peak_memory_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def adapters_dir() -> Path:
    return Path(os.environ.get("MEMAGENT_ADAPTERS_DIR", Path.home() / ".cache" / "memagent" / "adapters"))


def adapter_path(spec: str) -> Path:
    """An adapter by name (a folder in ``adapters_dir()``) or by path; it must hold ``training.json``."""
    path = Path(spec).expanduser()
    folder = path if path.is_dir() else adapters_dir() / spec
    if not (folder / TRAINING_FILE).is_file():
        raise LLMError(f"adapter: {spec!r} is neither a folder nor a name in {adapters_dir()} holding {TRAINING_FILE}")
    return folder


def adapter_for(spec: str, base_name: str) -> Path:
    """The adapter's folder; refused when it was trained on another base model than ``base_name``."""
    folder = adapter_path(spec)
    trained = json.loads((folder / TRAINING_FILE).read_text(encoding="utf-8"))
    if trained.get("base_model") != base_name:
        raise LLMError(f"adapter: {spec!r} was trained on {trained.get('base_model')!r}, not {base_name!r}")
    return folder


def with_adapter(llm: LocalLLM, spec: str) -> LocalLLM:
    """``llm`` with the adapter merged into its weights (as fast as the base model at inference);
    refused when the adapter was trained on another base model."""
    require("train", "peft")
    from peft import PeftModel

    folder = adapter_for(spec, llm.name)
    llm.model = PeftModel.from_pretrained(llm.model, str(folder)).merge_and_unload().eval()
    llm.name = f"{llm.name}+{folder.name}"
    return llm



# peft's module names -> llama.cpp's tensor names (per layer)
_GGUF_TENSORS = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
                 "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
_LORA_NAME = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


def gguf_adapter(spec: str, base_name: str, metadata: dict[str, str]) -> Path:
    """The adapter ``spec`` as a llama.cpp LoRA file (``adapter.gguf`` in its folder, written once),
    for the base GGUF whose metadata is given; refused when trained on another base model."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    folder = adapter_for(spec, base_name)
    out = folder / "adapter.gguf"
    if out.is_file() and out.stat().st_mtime >= (folder / "adapter_model.safetensors").stat().st_mtime:
        return out
    arch = metadata["general.architecture"]
    heads = int(metadata[f"{arch}.attention.head_count"])
    kv_heads = int(metadata.get(f"{arch}.attention.head_count_kv", heads))
    alpha = float(json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))["lora_alpha"])
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name, weights in sorted(load_file(str(folder / "adapter_model.safetensors")).items()):
        found = _LORA_NAME.search(name)
        if found is None or found[2] not in _GGUF_TENSORS:
            raise LLMError(f"adapter: {spec!r} holds {name!r}, which llama.cpp adapters do not take")
        layer, module, part = found.groups()
        if arch == "llama" and part == "B" and module in ("q_proj", "k_proj"):
            # llama.cpp's llama files store q and k rows in the order its rotary embedding reads
            weights = _rope_order(weights, heads if module == "q_proj" else kv_heads)
        writer.add_tensor(f"blk.{layer}.{_GGUF_TENSORS[module]}.weight.lora_{part.lower()}",
                          np.ascontiguousarray(weights, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _rope_order(rows: Any, heads: int) -> Any:
    """Rows of a q or k projection in the order llama.cpp's llama architecture stores them."""
    return rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)
