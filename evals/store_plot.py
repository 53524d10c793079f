"""One table and one figure for the store benchmark's sizes: search latency and ingest per system.

    python -m memagent_evals.store_plot evals/results/store_benchmark.md --out evals/results/store_benchmark.png

Reads the rows ``bench_store --out`` appended to the markdown file (14 columns: system, rounds, users,
rounds/add, ...) from 10k rounds up; where a size was measured more than once, the last row counts.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .bench_store import COLUMNS  # the columns bench_store writes

SYSTEMS = ("memagent", "mem0", "chroma")


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


def read_rows(markdown: str, smallest: int = 10_000) -> list[dict[str, str]]:
    """The benchmark rows of ``markdown``, the last one per system and size."""
    rows: dict[tuple[str, ...], dict[str, str]] = {}
    for line in markdown.splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) != len(COLUMNS) or cells[0] not in SYSTEMS:
            continue
        row = dict(zip(COLUMNS, cells))
        if _number(row["rounds"]) >= smallest:
            rows[(row["system"], row["rounds"], row["users"], row["rounds/add"])] = row
    return sorted(rows.values(), key=lambda r: (_number(r["rounds"]), SYSTEMS.index(r["system"])))


def table(rows: Sequence[dict[str, str]]) -> str:
    shown = ["system", "rounds", "users", "rounds/add", "search p50 ms", "search p95 ms", "query embed p50 ms",
             "ingest rounds/s", "RSS search MiB"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    return "\n".join(lines + ["| " + " | ".join(r[c] for c in shown) + " |" for r in rows])


def plot(rows: Sequence[dict[str, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for system in SYSTEMS:
        mine = [r for r in rows if r["system"] == system]
        if not mine:
            continue
        sizes = [_number(r["rounds"]) for r in mine]
        line = axes[0].plot(sizes, [_number(r["search p50 ms"]) for r in mine], marker="o", label=f"{system} p50")
        axes[0].plot(sizes, [_number(r["search p95 ms"]) for r in mine], marker="x", linestyle="--",
                     color=line[0].get_color(), label=f"{system} p95")
        axes[1].plot(sizes, [_number(r["RSS search MiB"]) for r in mine], marker="o", label=system)
    axes[0].axhline(50, color="grey", linewidth=0.8, linestyle=":")
    axes[0].set(xscale="log", yscale="log", xlabel="rounds stored (1M: over 1,000 users)", ylabel="search ms",
                title="search latency, query embedding included")
    axes[1].set(xscale="log", xlabel="rounds stored", ylabel="MiB", title="process RSS after the searches")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("markdown", type=Path, help="the file bench_store --out appended to")
    parser.add_argument("--out", type=Path, required=True, help="the figure (png)")
    args = parser.parse_args(argv)
    rows = read_rows(args.markdown.read_text(encoding="utf-8"))
    if not rows:
        parser.error(f"markdown: no benchmark rows of 10k rounds or more in {args.markdown}")
    print(table(rows))
    plot(rows, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
