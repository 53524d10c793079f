"""Question answering end to end: a reader answers from one of three contexts, a judge scores it.

Contexts, side by side on the same questions and within the same reader budget (tokens):
- ``memagent``: the records memagent retrieves (its default configuration), best first, up to k;
- ``full-history``: every session, newest kept first (the long-context baseline);
- ``oracle``: only the evidence, as rounds (a user turn and its reply) holding an evidence turn, or the
  evidence sessions where no turn is marked (the ceiling retrieval could reach).

A run has two passes, each appending to a JSONL file as it goes, so an interrupted run resumes where it
stopped: ``answers.jsonl`` (the reader, every question in every context), then ``judged.jsonl`` (the
judge). The judge's calls run back to back, so a backend that keeps its KV cache (llama.cpp) computes
the judge template's fixed opening once.
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
from memagent.answer.reader import DEFAULT_PROMPT, Passage, read
from memagent.index.decompose import split_rounds
from memagent.llm.base import LLM, ChatMessages, Generation
from memagent.schema import Message, parse_timestamp

from .judge import Judge, as_judge, exact_match, token_f1
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
    resumed: int = 0  # answers found in answers.jsonl from an earlier, interrupted run


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
        started = time.perf_counter()  # the sure-probe's scoring is reader time too
        logprobs = self.inner.continuation_logprobs(messages, continuation)
        self.seconds += time.perf_counter() - started
        return logprobs

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


def evidence_passages(item: Item) -> list[Passage]:
    """The rounds holding an evidence turn, as memagent would store them; the evidence sessions when
    no turn is marked."""
    passages = []
    for sid, date, session in zip(item.haystack_session_ids, item.haystack_dates, item.haystack_sessions):
        turns = [t for t in session if t.role in ("user", "assistant") and t.content.strip()]
        if not any(t.has_answer for t in turns):
            continue
        cursor = 0
        for n, round_ in enumerate(split_rounds([Message(role=t.role, content=t.content) for t in turns])):
            covered = turns[cursor : cursor + len(round_.messages)]
            cursor += len(round_.messages)
            if any(t.has_answer for t in covered):
                passages.append(Passage(f"{sid}#r{n}", parse_timestamp(date), round_.value))
    return passages or session_passages(item, only_evidence=True)


def fit_budget(llm: LLM, passages: list[Passage], budget_tokens: int, min_cut: int = 32,
               newest_first: bool = True) -> list[Passage]:
    """The passages whose tokens fit the budget, newest first (recent history matters most for a
    chat) or in the given order (a ranking: best first).

    The first passage that no longer fits is cut to the room left (its beginning kept), unless
    under ``min_cut`` tokens remain: one LongMemEval session is often larger than a CPU-sized budget,
    and dropping it would leave the oracle context empty.
    """
    kept, used = [], 0
    ordered = sorted(passages, key=lambda p: p.date, reverse=True) if newest_first else passages
    for passage in ordered:
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
        ranked = [Passage(h.record.id, h.record.timestamp, h.record.value) for h in hits]
        return fit_budget(reader, ranked, budget, newest_first=False)
    if context == "oracle":
        return fit_budget(reader, evidence_passages(item), budget)
    return fit_budget(reader, session_passages(item), budget)


def answer_item(context: str, item: Item, index: HaystackIndex, reader: LLM, *, k: int, budget: int,
                prompt: str = DEFAULT_PROMPT, sure_probe: str | None = None) -> dict[str, Any]:
    """The reader's answer to one question from one context, with its cost; not yet judged."""
    started = time.perf_counter()
    passages = context_passages(context, item, index, reader, k, budget)
    metered = Metered(reader)
    answer = read(metered, item.question, passages, parse_timestamp(item.question_date), max_chars=SESSION_CHARS,
                  prompt=prompt, sure_probe=sure_probe)
    return {
        "question_id": item.question_id,
        "question_type": item.question_type,
        "context": context,
        "hypothesis": answer.text,
        "refused": answer.refused,
        "confidence": answer.confidence,
        "prediction_confidence": answer.prediction_confidence,
        "sure_confidence": answer.sure_confidence,
        "passages": len(passages),
        "f1": token_f1(answer.text, item.answer),
        "em": exact_match(answer.text, item.answer),
        "seconds": time.perf_counter() - started,
        "prompt_tokens": metered.prompt_tokens,
        "completion_tokens": metered.completion_tokens,
        "generate_seconds": metered.seconds,
    }


def run_qa(items: Sequence[Item], contexts: Sequence[str], *, reader: LLM, judge_llm: Judge | LLM, cache: Path,
           embedder: Embedder, out: Path, k: int = 5, budget: int = 1024, prompt: str = DEFAULT_PROMPT,
           sure_probe: str | None = None) -> QARun:
    """Answer every item in every context, then judge every answer; both passes resume from ``out``.

    ``sure_probe``: also ask the reader whether it is sure (R-Tuning; ``memagent.answer.confidence``).
    Hypotheses also go to ``hypotheses_<context>.jsonl`` in the official format."""
    out.mkdir(parents=True, exist_ok=True)
    decide = as_judge(judge_llm)
    setup: dict[str, Any] = {"reader": reader.name, "prompt": prompt, "k": k, "budget": budget}
    if sure_probe is not None:  # absent otherwise, so journals written before the probe existed resume
        setup["sure_probe"] = sure_probe
    run, started = QARun(reader=reader.name, judge=decide.name), time.perf_counter()
    answers = _Journal(out / "answers.jsonl", setup)
    run.resumed = len(answers.rows)
    index = HaystackIndex("memagent", RETRIEVERS["memagent"], cache, embedder)
    # context by context: consecutive questions on one conversation then share the full history's prompt
    # prefix, which a backend that keeps its KV cache (llama.cpp) does not compute again
    todo = [(item, c) for c in contexts for item in items if (item.question_id, c) not in answers.rows]
    with answers:
        for item, context in tqdm(todo, desc="answer", unit="answer"):
            answers.add(answer_item(context, item, index, reader, k=k, budget=budget, prompt=prompt,
                                    sure_probe=sure_probe))
    by_id = {item.question_id: item for item in items}
    wanted = [answers.rows[(item.question_id, c)] for item in items for c in contexts]
    with _Journal(out / "judged.jsonl", {"judge": decide.name}) as judged:
        for row in tqdm([r for r in wanted if _key(r) not in judged.rows], desc="judge", unit="answer"):
            label = decide(by_id[row["question_id"]], row["hypothesis"])
            judged.add({"question_id": row["question_id"], "context": row["context"], "label": label})
    run.rows = [{**row, "label": judged.rows[_key(row)]["label"]} for row in wanted]
    _write_official(run.rows, contexts, decide.name, out)
    run.seconds = time.perf_counter() - started
    return run


def _key(row: dict[str, Any]) -> tuple[str, str]:
    return row["question_id"], row["context"]


class _Journal:
    """A JSONL file of rows keyed by (question, context), opened for appending after what it holds.

    Its first line records the setup; resuming with another setup (reader, prompt, judge...) is refused
    rather than mixing two runs in one table."""

    def __init__(self, path: Path, setup: dict[str, Any]) -> None:
        self.path, self.rows = path, {}
        if path.exists() and path.stat().st_size:
            lines = path.read_text(encoding="utf-8").splitlines()
            found = json.loads(lines[0]).get("setup")
            if found != setup:
                raise ValueError(f"{path} was written with {found}, not {setup}: pass another --out to start afresh")
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # the line being written when the run was killed
                    continue
                self.rows[_key(row)] = row
        else:
            path.write_text(json.dumps({"setup": setup}) + "\n", encoding="utf-8")
        self._sink = path.open("a", encoding="utf-8")

    def __enter__(self) -> _Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sink.close()

    def add(self, row: dict[str, Any]) -> None:
        self._sink.write(json.dumps(row) + "\n")
        self._sink.flush()
        self.rows[_key(row)] = row


def _write_official(rows: Sequence[dict[str, Any]], contexts: Sequence[str], judge_name: str, out: Path) -> None:
    for context in contexts:
        lines = [json.dumps({"question_id": r["question_id"], "hypothesis": r["hypothesis"],
                             "autoeval_label": {"model": judge_name, "label": r["label"]}})
                 for r in rows if r["context"] == context]
        (out / f"hypotheses_{context}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")


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
