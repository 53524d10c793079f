"""LoCoMo conversations as MAC documents: each session cut into chunks MiniLM reads whole, each question
attached to the chunk holding all its evidence (questions whose evidence spans chunks are left out).

Training and test are split by conversation. Training keeps categories 1–4; a test file per
conversation keeps single-hop questions (category 4), and its bank is every chunk of that conversation.

    python -m memagent_evals.mac.locomo ../shared/data/locomo/locomo_dev6.json --out /tmp/mac_locomo \\
        --train conv-26 conv-30 conv-41 --test conv-42 conv-43 conv-44
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from memagent_evals.locomo.convert import _sessions, load_locomo, normalise_dia_id, parse_evidence

from memagent.mac.train import Document, write_documents

SINGLE_HOP = 4
MAX_WORDS = 170  # ≈ 230 MiniLM word pieces: a chunk fits the encoder's 256 whole


def chunks(sample: dict) -> list[tuple[str, set[str]]]:
    """(text, dia_ids) of each chunk: a session's turns in order, a new chunk when MAX_WORDS would be passed."""
    out = []
    for session in _sessions(sample):
        header = f"[{session.date:%d %B %Y}]"
        lines: list[str] = []
        ids: set[str] = set()
        for turn in session.turns:
            line = f"{turn['speaker']}: {turn.get('text', '')}"
            if turn.get("blip_caption"):
                line += f" [shares an image: {turn['blip_caption']}]"
            if lines and len(" ".join([header, *lines, line]).split()) > MAX_WORDS:
                out.append(("\n".join([header, *lines]), ids))
                lines, ids = [], set()
            lines.append(line)
            ids.add(normalise_dia_id(turn["dia_id"]) or turn["dia_id"])
        out.append(("\n".join([header, *lines]), ids))
    return out


def documents(sample: dict, categories: Sequence[int]) -> list[Document]:
    parts = chunks(sample)
    questions: list[list[tuple[str, str]]] = [[] for _ in parts]
    for qa in sample["qa"]:
        if qa.get("category") not in categories or "answer" not in qa:
            continue
        evidence, _junk = parse_evidence(qa.get("evidence", []))
        home = [n for n, (_text, ids) in enumerate(parts) if evidence and set(evidence) <= ids]
        if home:
            questions[home[0]].append((str(qa["question"]), str(qa["answer"])))
    return [Document(f"{sample['sample_id']}-{n}", text, tuple(qa))
            for n, ((text, _ids), qa) in enumerate(zip(parts, questions, strict=True))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", nargs="+", default=["conv-26", "conv-30", "conv-41"])
    parser.add_argument("--test", nargs="+", default=["conv-42", "conv-43", "conv-44"])
    args = parser.parse_args(argv)
    samples = {s["sample_id"]: s for s in load_locomo(args.data)}
    train = [d for c in args.train for d in documents(samples[c], (1, 2, 3, 4))]
    write_documents(train, args.out / "train.jsonl")
    print(f"train: {len(train)} chunks, {sum(len(d.qa) for d in train)} questions")
    for conversation in args.test:
        test = documents(samples[conversation], (SINGLE_HOP,))
        write_documents(test, args.out / f"test_{conversation}.jsonl")
        print(f"{conversation}: {len(test)} chunks, {sum(len(d.qa) for d in test)} single-hop questions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
