"""``memagent mac train`` and ``memagent mac eval``."""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import fields
from pathlib import Path

from memagent.mac.config import MacConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="mac_command", required=True)
    train = commands.add_parser("train", help="train MAC's networks on documents with questions (JSONL)")
    train.add_argument("--data", type=Path, required=True,
                       help='JSONL rows {"id", "text", "qa": [{"question", "answer"}]}')
    train.add_argument("--out", type=Path, required=True, help="checkpoint folder (a rerun resumes from it)")
    train.add_argument("--steps", type=int, default=400)
    train.add_argument("--batch", type=int, default=16, help="documents per step, also the bank each question reads")
    train.add_argument("--lr", type=float, default=2e-4)
    train.add_argument("--ramp", type=int, default=0,
                       help="steps over which each question's bank grows from its own document to the whole batch")
    train.add_argument("--cooldown", type=int, default=0,
                       help="the learning rate falls linearly to zero over the last that many steps")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--save-every", type=int, default=25)
    train.add_argument("--minutes", type=float, default=None,
                       help="stop (saving) after this many minutes of training, e.g. a leased GPU's time")
    train.add_argument("--device", default=None)
    train.add_argument("--init", type=Path, default=None,
                       help="start from this checkpoint's weights (e.g. synthetic pre-training before LoCoMo); "
                            "its settings are taken, the options below are ignored")
    for field in fields(MacConfig):  # every setting of the networks, e.g. --tokens 8 --lm NAME --match
        flag = f"--{field.name.replace('_', '-')}"
        if isinstance(field.default, bool):
            train.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            train.add_argument(flag, type=type(field.default), default=field.default)
    train.set_defaults(run=cmd_train)
    evaluate = commands.add_parser("eval", help="MAC against no memory, the gold document and retrieval (EM, F1)",
                                   add_help=False)
    evaluate.add_argument("rest", nargs=argparse.REMAINDER)
    evaluate.set_defaults(run=cmd_eval)


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    from memagent.mac.amortizer import TokenEncoder
    from memagent.mac.model import MacModel, load_frozen_lm
    from memagent.mac.train import read_documents, train

    torch.manual_seed(args.seed)
    try:
        config = MacConfig(**{f.name: getattr(args, f.name) for f in fields(MacConfig)})
    except ValueError as exc:
        raise SystemExit(f"memagent mac train: {exc}") from exc
    if args.init is not None:
        config = MacConfig.load(args.init)
    if (args.out / "config.json").exists() and MacConfig.load(args.out) != config:
        raise SystemExit(f"{args.out} holds a run with other settings: pass another --out")
    documents = read_documents(args.data)
    lm, tokenizer = load_frozen_lm(config.lm, args.device)
    encoder = TokenEncoder.load(config.encoder, config.max_doc_tokens, device=args.device)
    model = MacModel(config, encoder, lm, tokenizer).to(next(lm.parameters()).device)
    if args.init is not None and not (args.out / "train_state.pt").exists():  # a resumed run has its own weights
        model = MacModel.load(args.init, encoder=encoder, lm=lm, tokenizer=tokenizer)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{len(documents)} documents; {trainable:,} trainable parameters; LM {config.lm} frozen")
    started = time.perf_counter()
    log = train(model, documents, args.out, steps=args.steps, batch=args.batch, lr=args.lr, ramp=args.ramp,
                cooldown=args.cooldown, seed=args.seed, save_every=args.save_every, minutes=args.minutes)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    summary = {"steps": args.steps, "steps_done": log[-1]["step"] if log else None,
               "batch": args.batch, "lr": args.lr, "ramp": args.ramp, "cooldown": args.cooldown, "data": str(args.data),
               "init": None if args.init is None else str(args.init),
               "minutes_this_run": (time.perf_counter() - started) / 60, "peak_memory_mb": peak_mb,
               "last": log[-1] if log else None}
    (args.out / "training.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(summary))


def cmd_eval(args: argparse.Namespace) -> None:
    from memagent._extras import require

    require("eval", "matplotlib")
    from memagent_evals.mac.run import main

    raise SystemExit(main(args.rest))
