"""Compaction on LoCoMo: what survives when a store keeps half or a quarter of its rounds, and retrieval after.

    python -m memagent_evals.sirllm.compaction --data ../shared/data/locomo/locomo_dev6.json \\
        --cache evals/cache --out evals/results/compaction_locomo_dev6

Each conversation is stored as memagent stores it (rounds, the library's default retrieval), copied
to a user of its own per setting, and compacted there with ``Memory.compact``: by salience (token
surprisal under SmolLM2-135M, summed over a round's tokens or their mean, and with a decay per session
of age), by recency, at random. Scores
over the answerable questions (categories 1-4): the share of their evidence rounds still stored, and
turn-level recall_all@5 and session recall_all@5 of a search on the compacted store.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from memagent import MemoryConfig, MemoryRecord
from memagent.embedding import embedder_from_config

from ..longmemeval.load import Item
from ..longmemeval.metrics import gold, score_ranking
from ..longmemeval.retrieval import RETRIEVERS, HaystackIndex, build_corpus, haystack_user, record_key
from ..longmemeval.run import has_user_evidence

SETTINGS = {  # label: (order, surprisal measure, decay per session of age)
    "salience": ("salience", "total", 1.0),
    "salience, decay 0.9": ("salience", "total", 0.9),
    "salience (mean)": ("salience", "mean", 1.0),
    "recency": ("recency", "total", 1.0),
    "random": ("random", "total", 1.0),
}


def question_scores(index: HaystackIndex, item: Item, user: str, records: Sequence[MemoryRecord]) -> dict[str, float]:
    """Evidence rounds still stored (``records``), and recall of a search over them, for one question."""
    corpus = build_corpus(item, index.memory.config.granularity)
    def positions(record: MemoryRecord) -> list[int]:
        return corpus.indices_of_record.get(record_key(record, corpus), [])

    stored = {i for r in records for i in positions(r)}
    # 50 deep (the retrievers' candidate depth): enough for recall@5 at turn level, and for the five
    # distinct sessions the session-level recall@5 counts
    hits = index.memory.search(item.question, user_id=user, k=50)
    ranking = list(dict.fromkeys(i for h in hits for i in positions(h.record)))
    ranking += [i for i in range(len(corpus.ids)) if i not in set(ranking)]  # unscored and forgotten: last
    evidence = [i for i, c in enumerate(corpus.ids) if c in gold(corpus.ids)]
    scores = score_ranking(ranking, corpus.ids, corpus.level)
    return {"evidence_kept": sum(i in stored for i in evidence) / len(evidence),
            "turn_recall_all@5": scores["turn"]["recall_all@5"],
            "session_recall_all@5": scores["session"]["recall_all@5"]}


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="python -m memagent_evals.sirllm.compaction",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="LoCoMo conversations (locomo10.json schema)")
    parser.add_argument("--cache", type=Path, default=Path("evals/cache"))
    parser.add_argument("--keep", type=float, nargs="+", default=[0.5, 0.25], help="fractions of the rounds kept")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--only", nargs="+", default=None, metavar="PREFIX", help="only these conversations")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from ..cli import load_benchmark

    items, _split = load_benchmark("locomo", args.data)
    items = [i for i in items if not i.is_abstention and has_user_evidence(i)
             and (not args.only or i.question_id.startswith(tuple(args.only)))]
    conversations: dict[str, list[Item]] = {}
    for item in items:
        conversations.setdefault(haystack_user(item), []).append(item)
    embedder = embedder_from_config(MemoryConfig().embedder)
    index = HaystackIndex("memagent", RETRIEVERS["memagent"], args.cache, embedder)
    memory = index.memory
    per_question: dict[str, list[dict[str, float]]] = {}
    forgotten_rounds: dict[str, list[int]] = {}
    scenarios = [("all", None, 1.0)] + [(f"{label}, keep {keep:g}", label, keep)
                                        for keep in args.keep for label in args.settings]
    bar = tqdm(total=len(scenarios) * len(items), desc="compaction", unit="question")
    for user, group in conversations.items():
        index.ensure_indexed(group[0])
        exported = io.StringIO()
        total = memory.export(exported, user_id=user)
        for n, (name, label, keep) in enumerate(scenarios):
            target = user if label is None else f"{user}-compacted{n}"
            if label is not None:
                memory.delete_all(user_id=target)  # a rerun starts from the full copy again
                memory.import_(exported.getvalue().splitlines(), user_id=user, as_user=target)
                order, measure, decay = SETTINGS[label]
                # the settings compact reads, switched between runs (eval only)
                memory.config.salience.decay, memory.config.salience.measure = decay, measure  # type: ignore[assignment]
                forgotten = memory.compact(user_id=target, keep=keep, by=order)  # type: ignore[arg-type]
                forgotten_rounds.setdefault(name, []).append(len(forgotten))
            records = memory.get_all(user_id=target)
            for item in group:
                per_question.setdefault(name, []).append(question_scores(index, item, target, records))
                bar.update()
            if label is not None:
                memory.delete_all(user_id=target)
        print(f"{user}: {total} rounds, {len(group)} questions")
    bar.close()
    summary = {name: {metric: sum(q[metric] for q in rows) / len(rows) for metric in rows[0]} | {"questions": len(rows)}
               for name, rows in per_question.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"data": args.data.name, "questions": len(items), "conversations": len(conversations),
              "salience_model": memory.config.salience.model, "results": summary}
    (args.out / "summary.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    text = markdown(result)
    (args.out / "summary.md").write_text(text, encoding="utf-8")
    plot(result, args.out / "compaction.png")
    print(text)
    return 0


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Compaction on {result['data']}: {result['questions']} answerable questions, "
             f"{result['conversations']} conversations (salience: {result['salience_model']})", "",
             "| store | evidence rounds kept | turn recall_all@5 | session recall_all@5 |", "|---|---:|---:|---:|"]
    for name, s in result["results"].items():
        lines.append(f"| {name} | {s['evidence_kept']:.3f} | {s['turn_recall_all@5']:.3f} | "
                     f"{s['session_recall_all@5']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["results"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("evidence_kept", "turn_recall_all@5"), strict=True):
        ax.barh(range(len(names)), [result["results"][n][metric] for n in names])
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(metric.replace("_", " "), fontsize=9)
    fig.suptitle(f"Compaction on {result['data']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
