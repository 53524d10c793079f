"""The store benchmark's summary: the rows bench_store appended, the last one per system and size."""

from __future__ import annotations

from pathlib import Path

from memagent_evals.store_plot import plot, read_rows, table


def _row(system: str, rounds: str, p50: str, users: str = "1") -> str:
    return f"| {system} | {rounds} | {users} | 50 | 100.0 | 1.0 | 2.0 | 3.0 | {p50} | 9.0 | 4.0 | 500 | 600 | 1,700 |"


def test_rows_are_the_last_per_system_and_size_from_10k_up(tmp_path: Path) -> None:
    markdown = "\n".join([
        "| system | rounds | users | ...", "|---|---|",
        _row("memagent", "2,000", "1.0"),                    # a development run: below 10k
        _row("memagent", "10,000", "30.0"), _row("chroma", "10,000", "60.0"),
        "| embedder | ingest rounds/s | embed s |", "| MiniLM | **151.3** | 47.8 |",  # another table's shape
        _row("memagent", "10,000", "**25.0**"),             # measured again: this one counts
        _row("memagent", "1,000,000", "31.8", users="1,000"),
    ])
    rows = read_rows(markdown)
    assert [(r["system"], r["rounds"], r["search p50 ms"]) for r in rows] == [
        ("memagent", "10,000", "25.0"), ("chroma", "10,000", "60.0"), ("memagent", "1,000,000", "31.8")]
    assert table(rows).splitlines()[2].startswith("| memagent | 10,000 | 1 | 50 | 25.0 |")
    plot(rows, tmp_path / "store.png")
    assert (tmp_path / "store.png").stat().st_size > 0
