"""Question answering end to end: a reader answers from one of three contexts, a judge scores it.

Contexts, side by side on the same questions:
- ``memagent``: the top-k records memagent retrieves (its default configuration);
- ``full-history``: every session, newest kept first, cut to the reader's token budget (the
  long-context baseline);
- ``oracle``: only the evidence sessions (the ceiling retrieval could reach).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from memagent import Embedder
from memagent.answer.reader import Passage, read
from memagent.llm.base import LLM, ChatMessages, Generation
from memagent.schema import parse_timestamp

from .judge import exact_match, judge, token_f1
from .load import Item
from .retrieval import RETRIEVERS, HaystackIndex

CONTEXTS = ("memagent", "full-history", "oracle")
SESSION_CHARS = 24_000  # a whole session may be long; the token budget below is what binds


@dataclass
class QARun:
    rows: list[dict[str, Any]] = field(default_factory=list)
    reader: str = ""
    judge: str = ""
    seconds: float = 0.0


class Metered(LLM):
    """Delegates to a model and adds up the tokens and seconds its generations take."""

    def __init__(self, inner: LLM) -> None:
        self.inner, self.name, self.context_window = inner, inner.name, inner.context_window
        self.prompt_tokens = self.completion_tokens = 0
        self.seconds = 0.0

    def generate(self, messages: ChatMessages, **options: Any) -> Generation:
        started = time.perf_counter()
        generation = self.inner.generate(messages, **options)
        self.seconds += time.perf_counter() - started
        self.prompt_tokens += generation.prompt_tokens
        self.completion_tokens += generation.completion_tokens
        return generation

    def continuation_logprobs(self, messages: ChatMessages, continuation: str) -> list[float]:
        return self.inner.continuation_logprobs(messages, continuation)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def session_passages(item: Item, only_evidence: bool = False) -> list[Passage]:
    passages = []
    for sid, date, session in zip(item.haystack_session_ids, item.haystack_dates, item.haystack_sessions):
        if only_evidence and sid not in item.answer_session_ids:
            continue
        text = "\n".join(f"{t.role}: {t.content}" for t in session)
        passages.append(Passage(sid, parse_timestamp(date), text))
    return passages


def fit_budget(llm: LLM, passages: list[Passage], budget_tokens: int, min_cut: int = 32) -> list[Passage]:
    """The newest passages whose tokens fit the budget (recent history matters most for a chat).

    The first passage that no longer fits is cut to the room left (its beginning kept), unless
    under ``min_cut`` tokens remain: one LongMemEval session is often larger than a CPU-sized budget,
    and dropping it would leave the oracle context empty.
    """
    kept, used = [], 0
    for passage in sorted(passages, key=lambda p: p.date, reverse=True):
        text = passage.text[:SESSION_CHARS]
        cost = llm.count_tokens(text)
        if used + cost > budget_tokens:
            if budget_tokens - used >= min_cut:
                kept.append(replace(passage, text=cut_to_tokens(llm, text, budget_tokens - used)))
            break
        kept.append(replace(passage, text=text))
        used += cost
    return kept


def cut_to_tokens(llm: LLM, text: str, tokens: int) -> str:
    """The longest beginning of ``text`` (to a few percent) that is at most ``tokens`` tokens."""
    while text and (cost := llm.count_tokens(text)) > tokens:
        text = text[: int(len(text) * tokens / cost * 0.95)]
    return text


def context_passages(context: str, item: Item, index: HaystackIndex, reader: LLM, k: int, budget: int) -> list[Passage]:
    if context == "memagent":
        hits = index.memory.search(item.question, user_id=index.ensure_indexed(item), k=k,
                                   question_date=item.question_date)
        return [Passage(h.record.id, h.record.timestamp, h.record.value) for h in hits]
    if context == "oracle":
        return fit_budget(reader, session_passages(item, only_evidence=True), budget)
    return fit_budget(reader, session_passages(item), budget)


def answer_item(context: str, item: Item, index: HaystackIndex, reader: LLM, judge_llm: LLM, *, k: int,
                budget: int, max_chars: int) -> dict[str, Any]:
    started = time.perf_counter()
    passages = context_passages(context, item, index, reader, k, budget)
    chars = max_chars if context == "memagent" else SESSION_CHARS
    metered = Metered(reader)
    answer = read(metered, item.question, passages, parse_timestamp(item.question_date), max_chars=chars)
    seconds = time.perf_counter() - started
    return {
        "question_id": item.question_id,
        "question_type": item.question_type,
        "context": context,
        "hypothesis": answer.text,
        "refused": answer.refused,
        "confidence": answer.confidence,
        "passages": len(passages),
        "label": judge(judge_llm, item, answer.text),
        "f1": token_f1(answer.text, item.answer),
        "em": exact_match(answer.text, item.answer),
        "seconds": seconds,
        "prompt_tokens": metered.prompt_tokens,
        "completion_tokens": metered.completion_tokens,
        "generate_seconds": metered.seconds,
    }


def run_qa(items: Sequence[Item], contexts: Sequence[str], *, reader: LLM, judge_llm: LLM, cache: Path,
           embedder: Embedder, out: Path, k: int = 5, budget: int = 6000, max_chars: int = 2000) -> QARun:
    """Answer and judge every item in every context; hypotheses go to ``out`` in the official format."""
    index = HaystackIndex("memagent", RETRIEVERS["memagent"], cache, embedder)
    run, started = QARun(reader=reader.name, judge=judge_llm.name), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    sinks = {c: (out / f"hypotheses_{c}.jsonl").open("w", encoding="utf-8") for c in contexts}
    try:
        for item in tqdm(items, desc="questions", unit="q"):
            for context in contexts:
                row = answer_item(context, item, index, reader, judge_llm, k=k, budget=budget, max_chars=max_chars)
                run.rows.append(row)
                official = {"question_id": item.question_id, "hypothesis": row["hypothesis"],
                            "autoeval_label": {"model": judge_llm.name, "label": row["label"]}}
                sinks[context].write(json.dumps(official) + "\n")
                sinks[context].flush()
    finally:
        for sink in sinks.values():
            sink.close()
    run.seconds = time.perf_counter() - started
    return run


def qa_scores(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per context: accuracy per type, task-averaged, overall and on abstention items; F1, EM,
    refusals, seconds per question, mean prompt tokens and reader tokens per second."""
    by_context: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_context[row["context"]].append(row)
    types = sorted({r["question_type"] for r in rows})
    scores = {}
    for context, mine in by_context.items():
        per_type = {t: float(np.mean([r["label"] for r in mine if r["question_type"] == t])) for t in types}
        abstention = [r["label"] for r in mine if r["question_id"].endswith("_abs")]
        generate_seconds = sum(r.get("generate_seconds", 0.0) for r in mine)
        tokens = sum(r.get("prompt_tokens", 0) + r.get("completion_tokens", 0) for r in mine)
        scores[context] = {
            "per_type": per_type,
            "task_avg": float(np.mean(list(per_type.values()))),
            "overall": float(np.mean([r["label"] for r in mine])),
            "abstention": float(np.mean(abstention)) if abstention else None,
            "abstention_n": len(abstention),
            "f1": float(np.mean([r["f1"] for r in mine])),
            "em": float(np.mean([r["em"] for r in mine])),
            "refused": float(np.mean([r["refused"] for r in mine])),
            "seconds_per_question": float(np.mean([r["seconds"] for r in mine])),
            "prompt_tokens": float(np.mean([r.get("prompt_tokens", 0) for r in mine])),
            # prompt and generated tokens per second of reader time (prefill and decode together)
            "tokens_per_second": tokens / generate_seconds if generate_seconds else None,
        }
    return scores


def qa_table(rows: Sequence[dict[str, Any]]) -> str:
    """``qa_scores`` as a markdown table, one line per context."""
    scores = qa_scores(rows)
    types = sorted({r["question_type"] for r in rows})
    head = ["context", *types, "task-avg", "overall", "abstention", "F1", "EM", "refused", "s/question",
            "prompt tok", "tok/s"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for context, score in scores.items():
        rate = score["tokens_per_second"]
        cells = [f"{score['per_type'][t]:.3f}" for t in types] + [
            f"{score['task_avg']:.3f}",
            f"{score['overall']:.3f}",
            f"{score['abstention']:.3f} ({score['abstention_n']})" if score["abstention_n"] else "-",
            f"{score['f1']:.3f}",
            f"{score['em']:.3f}",
            f"{score['refused']:.2f}",
            f"{score['seconds_per_question']:.1f}",
            f"{score['prompt_tokens']:.0f}",
            "-" if rate is None else f"{rate:.1f}",
        ]
        lines.append(f"| {context} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
