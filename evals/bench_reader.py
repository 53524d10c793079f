"""Benchmark: how fast a reader prefills and decodes here, and what its KV-cache reuse saves.

    python -m memagent_evals.bench_reader qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct
    python -m memagent_evals.bench_reader qwen2.5-coder-1.5b-instruct --backend transformers

Per model: load seconds; a ~1,550-token prompt answered cold, the same prompt again (served from
the cache on llama.cpp), a prompt sharing all but its question; decode tokens/s over 100 tokens.
The prompt is generated here. Run it on an otherwise idle machine: shared cores read 3-6x slower.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

FILLER = " ".join(
    f"On day {i} I walked my dog Rex to the park and met my neighbour Tom, who told me about his garden."
    for i in range(60)
)


def bench(spec: str, backend: str) -> None:
    from memagent.llm.load import load_llm

    started = time.perf_counter()
    llm = load_llm(spec, backend=backend)  # type: ignore[arg-type]
    print(f"{spec} on {type(llm).__name__}: load {time.perf_counter() - started:.1f} s", flush=True)

    def ask(question: str) -> None:
        messages = [{"role": "system", "content": "You are helpful."},
                    {"role": "user", "content": f"{FILLER}\n{question} Answer in a few words."}]
        started = time.perf_counter()
        out = llm.generate(messages, max_new_tokens=32)
        seconds = time.perf_counter() - started
        print(f"  {out.prompt_tokens} prompt + {out.completion_tokens} new tokens: {seconds:.2f} s "
              f"({out.prompt_tokens / seconds:.0f} prompt tok/s overall)  {out.text[:40]!r}", flush=True)

    ask("What is my dog's name?")  # cold
    ask("What is my dog's name?")  # the same prompt again
    ask("Who is Tom?")  # all but the question shared
    started = time.perf_counter()
    out = llm.generate([{"role": "user", "content": "Count from 1 to 100 separated by commas."}], max_new_tokens=100)
    seconds = time.perf_counter() - started
    print(f"  decode: {out.completion_tokens} tokens in {seconds:.2f} s = {out.completion_tokens / seconds:.1f} tok/s",
          flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="python -m memagent_evals.bench_reader", description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model specs, as load_llm takes them")
    parser.add_argument("--backend", default="auto", choices=("auto", "llama.cpp", "transformers"))
    args = parser.parse_args(argv)
    for spec in args.models:
        bench(spec, args.backend)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
