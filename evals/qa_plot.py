"""One figure for the QA runs people compare: accuracy and F1 per context, one group per data and reader.

    python -m memagent_evals.qa_plot evals/results/qa_*/qa_summary.json --out evals/results/qa.png
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_qa(summaries: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    contexts = list(dict.fromkeys(c for s in summaries for c in s["scores"]))
    # a run's folder names its data, reader and variant (qa_locomo_qwen0.5b_votes); else data and reader
    groups = [f"{s['run'].replace('_', chr(10), 1)}\n({s['questions']} q)" if "run" in s else  # two lines
              f"{s['data'].removesuffix('.json')}\n{s['reader']}\n({s['questions']} q)" for s in summaries]
    width = 0.8 / len(contexts)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.6 * len(groups)), 4.4), squeeze=False)
    for ax, metric, label in zip(axes[0], ("overall", "f1"), ("judged accuracy (overall)", "token F1")):
        for n, context in enumerate(contexts):
            xs = [g + (n - (len(contexts) - 1) / 2) * width for g in range(len(groups))]
            ax.bar(xs, [s["scores"].get(context, {}).get(metric, 0.0) for s in summaries], width, label=context)
        ax.set_xticks(range(len(groups)), groups, fontsize=7)
        ax.set(ylim=(0, 1), ylabel=label)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    judges = sorted({s["judge"] for s in summaries})
    fewest = min(s["questions"] for s in summaries)
    title = f"QA by context (judge: {', '.join(judges)}); one answer moves a bar by up to {100 / fewest:.1f} points"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summaries", nargs="+", type=Path, help="qa_summary.json files written by memagent eval --qa")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    runs = [{**json.loads(p.read_text(encoding="utf-8")), "run": p.parent.name.removeprefix("qa_")}
            for p in args.summaries]
    plot_qa(runs, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
