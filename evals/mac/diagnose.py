"""Do facts travel through MAC's prefix at all? A check with every shortcut closed.

Each question's bank is its own session alone, and the aggregator is given the same blank question
every time, so the prefix cannot depend on the question (that path can memorise training answers).
The LM still reads the question. If the answer loss falls below what the value lists alone allow,
the session's facts reach the LM through the prefix.

    python -m memagent_evals.mac.diagnose --data /tmp/mac_data/train.jsonl --steps 60 --out /tmp/mac_diag
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path

import torch

from memagent.mac.amortizer import TokenEncoder
from memagent.mac.config import MacConfig
from memagent.mac.model import MacModel, load_frozen_lm
from memagent.mac.train import batches, read_documents


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--lm", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    config = MacConfig(lm=args.lm)
    lm, tokenizer = load_frozen_lm(config.lm)
    model = MacModel(config, TokenEncoder.load(config.encoder, config.max_doc_tokens), lm, tokenizer)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=args.lr)
    rng = random.Random(0)
    stream = batches(read_documents(args.data), args.batch, rng)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "diagnose.tsv").open("w", encoding="utf-8") as sink:
        sink.write("step\tloss\n")
        for step in range(1, args.steps + 1):
            batch = next(stream)
            questions, answers = [d.qa[n][0] for d, n in batch], [d.qa[n][1] for d, n in batch]
            own = model.amortize([d.text for d, _ in batch])[:, None]  # [Q, 1, T, width]: its own session only
            tokens = model.aggregate(["?"] * len(batch), own, window=0)  # a blank question for the aggregator
            loss = model.loss(questions, answers, tokens)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            sink.write(f"{step}\t{loss.item():.4f}\n")
            sink.flush()
            print(f"step {step} loss {loss.item():.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
