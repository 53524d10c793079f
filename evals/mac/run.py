"""MAC against the same frozen LM with no memory, with the gold document, and with memagent's top-5
retrieval, on documents with questions (EM and F1, SQuAD's normalisation).

    memagent mac eval --checkpoint DIR --data test.jsonl --bank 64 --out evals/results/mac_synthetic

Each reader's answers are journalled (``<reader>.jsonl``) and a rerun resumes. ``--hierarchical N``
also reads a bank of N documents flat and window by window (MAC's hierarchical aggregation), on the
same questions. ``--timing`` measures amortizing a new session against one fine-tuning step on it.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from memagent_evals.longmemeval.judge import exact_match, token_f1
from tqdm import tqdm

from memagent.mac.model import MacModel, Reply, question_prompt
from memagent.mac.train import Document, read_documents

READERS = ("none", "gold", "retrieval", "mac")
Asked = tuple[Document, str, str]  # the document a question is about, the question, its answer


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="memagent mac eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="held-out documents with questions (JSONL)")
    parser.add_argument("--bank", type=int, default=64, help="documents in the bank; questions are about them")
    parser.add_argument("--readers", nargs="+", choices=READERS, default=list(READERS))
    parser.add_argument("--hierarchical", type=int, default=0,
                        help="also a bank of this many documents, read flat and window by window")
    parser.add_argument("--questions", type=int, default=0, help="at most this many questions per bank (0: all)")
    parser.add_argument("--k", type=int, default=5, help="memories the retrieval reader reads")
    parser.add_argument("--timing", action="store_true", help="amortizing a session against one fine-tuning step")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def asked(documents: Sequence[Document], limit: int) -> list[Asked]:
    rows = [(d, q, a) for d in documents for q, a in d.qa]
    if limit and len(rows) > limit:  # an even spread over the documents, not the first ones
        rows = [rows[round(i * len(rows) / limit)] for i in range(limit)]
    return rows


def run_reader(label: str, rows: Sequence[Asked], answer: Callable[[Sequence[Asked]], list[str]], out: Path,
               batch: int) -> dict[str, Any]:
    """Answers journalled per question (resumable), then EM and F1 over all of them."""
    path = out / f"{label}.jsonl"
    done = {}
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        done = {(r["document"], r["question"]): r for r in map(json.loads, lines)}
    todo = [r for r in rows if (r[0].id, r[1]) not in done]
    started = time.perf_counter()
    with path.open("a", encoding="utf-8") as sink, tqdm(total=len(todo), desc=label, unit="q") as bar:
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            for (document, question, gold), prediction in zip(chunk, answer(chunk), strict=True):
                row = {"document": document.id, "question": question, "answer": gold, "prediction": prediction,
                       "em": exact_match(prediction, gold), "f1": token_f1(prediction, gold)}
                done[(document.id, question)] = row
                sink.write(json.dumps(row) + "\n")
            bar.update(len(chunk))
    scored = [done[(d.id, q)] for d, q, _a in rows]
    seconds = (time.perf_counter() - started) / max(1, len(todo))
    return {"em": sum(r["em"] for r in scored) / len(scored), "f1": sum(r["f1"] for r in scored) / len(scored),
            "n": len(scored), "seconds_per_question": seconds if todo else None}


def retrieval_answers(model: MacModel, documents: Sequence[Document], k: int) -> Callable[[Sequence[Asked]], list[str]]:
    """memagent's default search over the bank's documents (one session each), its top k read by the LM."""
    from memagent import Memory

    folder = tempfile.mkdtemp(prefix="mac-eval-")
    memory = Memory(path=folder)
    for d in documents:
        memory.add(messages_of(d.text), user_id="eval", session_id=d.id)

    def answer(rows: Sequence[Asked]) -> list[str]:
        contexts = ["\n".join(h.record.value for h in memory.search(q, user_id="eval", k=k)) for _d, q, _a in rows]
        return texts(model.generate([question_prompt(q, c) for (_d, q, _a), c in zip(rows, contexts, strict=True)],
                                    demos=True))

    return answer


def texts(replies: Sequence[Reply]) -> list[str]:
    return [r.text for r in replies]


def messages_of(text: str) -> list[dict[str, str]]:
    """``User: ...`` / ``Assistant: ...`` lines as chat messages; any other line (a named speaker of a
    LoCoMo conversation, a date) is a user message of its own, whole."""
    messages: list[dict[str, str]] = []
    for line in filter(str.strip, text.splitlines()):
        speaker, _, said = line.partition(": ")
        role = {"User": "user", "Assistant": "assistant"}.get(speaker)
        messages.append({"role": role, "content": said} if role else {"role": "user", "content": line})
    return messages


def readers(model: MacModel, documents: Sequence[Document], args: argparse.Namespace,
            ) -> dict[str, Callable[[Sequence[Asked]], list[str]]]:
    bank = amortized(model, documents)
    table: dict[str, Callable[[Sequence[Asked]], list[str]]] = {
        "none": lambda rows: texts(model.generate([question_prompt(q) for _d, q, _a in rows], demos=True)),
        "gold": lambda rows: texts(model.generate([question_prompt(q, d.text) for d, q, _a in rows], demos=True)),
        "mac": lambda rows: texts(model.answer([q for _d, q, _a in rows], bank, window=0)),
    }
    if "retrieval" in args.readers:
        table["retrieval"] = retrieval_answers(model, documents, args.k)
    return {label: table[label] for label in args.readers}


def amortized(model: MacModel, documents: Sequence[Document]) -> torch.Tensor:
    """The documents' bank [S, T, width], 32 documents at a time."""
    with torch.no_grad():
        return torch.cat([model.amortize([d.text for d in documents[i : i + 32]])
                          for i in range(0, len(documents), 32)])


def timing(model: MacModel, documents: Sequence[Document]) -> dict[str, Any]:
    """Seconds to amortize one new session (MAC's adaptation) against one fine-tuning step on it (the
    LM's next-token loss on the session, backward, Adam over all its weights): MAC's baseline."""
    texts = [d.text for d in documents[:8]]
    with torch.no_grad():
        model.amortize(texts[:1])  # warm-up
        started = time.perf_counter()
        for text in texts:
            model.amortize([text])
        amortize = (time.perf_counter() - started) / len(texts)
    lm = model.lm[0]
    weights = [p for p in lm.parameters()]
    for p in weights:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(weights, lr=1e-5)
    try:
        steps = []
        for text in texts[:3]:
            ids = model.tokenizer(text, return_tensors="pt")["input_ids"].to(model.device)
            started = time.perf_counter()
            loss = lm(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps.append(time.perf_counter() - started)
    finally:
        for p in weights:
            p.requires_grad_(False)
        del optimizer
    config = model.config
    return {"amortize_seconds": amortize, "finetune_step_seconds": sum(steps[1:]) / max(1, len(steps) - 1),
            "speedup": (sum(steps[1:]) / max(1, len(steps) - 1)) / amortize,
            "bytes_per_session_float32": config.bank_tokens * model.bank_width * 4,
            "bytes_per_session_float16": config.bank_tokens * model.bank_width * 2}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(torch.get_num_threads())
    model = MacModel.load(args.checkpoint).eval()
    documents = read_documents(args.data)
    results: dict[str, Any] = {}
    bank = documents[: args.bank]
    rows = asked(bank, args.questions)
    for label, answer in readers(model, bank, args).items():
        results[label] = run_reader(label, rows, answer, args.out, args.batch)
    if args.hierarchical:
        large = documents[: args.hierarchical]
        tokens, wide = amortized(model, large), asked(large, args.questions)
        for label, window in ((f"mac-flat-{len(large)}", 0), (f"mac-window{model.config.window}-{len(large)}", None)):
            def read(rows: Sequence[Asked], w: int | None = window) -> list[str]:
                return texts(model.answer([q for _d, q, _a in rows], tokens, window=w))

            results[label] = run_reader(label, wide, read, args.out, args.batch)
    summary: dict[str, Any] = {
        "data": args.data.name, "checkpoint": str(args.checkpoint),
        "config": json.loads((args.checkpoint / "config.json").read_text(encoding="utf-8")),
        "bank": len(bank), "date": f"{datetime.now(tz=timezone.utc):%Y-%m-%d %H:%M} UTC", "results": results}
    if args.timing:
        summary["timing"] = timing(model, bank)
    summary["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    text = summary_markdown(summary)
    (args.out / "summary.md").write_text(text, encoding="utf-8")
    plot(summary, args.out / "mac.png")
    print(text)
    return 0


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [f"# MAC on {summary['data']}: bank of {summary['bank']}, frozen LM {summary['config']['lm']}", "",
             "| reader | questions | EM | F1 | s / question |", "|---|---:|---:|---:|---:|"]
    for label, r in summary["results"].items():
        seconds = "-" if r["seconds_per_question"] is None else f"{r['seconds_per_question']:.2f}"
        lines.append(f"| {label} | {r['n']} | {r['em']:.3f} | {r['f1']:.3f} | {seconds} |")
    if timing := summary.get("timing"):
        lines += ["", f"Adapting to a new session: amortizing {timing['amortize_seconds']:.3f} s, one fine-tuning step "
                      f"{timing['finetune_step_seconds']:.2f} s ({timing['speedup']:.0f}× faster); "
                      f"{timing['bytes_per_session_float32']} bytes per session stored (float32)."]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(summary["results"])
    fig, ax = plt.subplots(figsize=(1.4 * len(labels) + 2, 3.5))
    for n, metric in enumerate(("em", "f1")):
        ax.bar([i + n * 0.4 for i in range(len(labels))], [summary["results"][k][metric] for k in labels], 0.4,
               label=metric.upper())
    ax.set_xticks([i + 0.2 for i in range(len(labels))], labels, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_title(f"MAC, {summary['data']}, bank {summary['bank']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
