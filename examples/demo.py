"""memagent in one minute: store a few sessions of a conversation, then ask about them.

Runs fully local: an embedded Chroma folder (./memagent_data/demo) and the packaged MiniLM embedder.
With --answer it also answers from memory with the local reader (install it first:
``memagent models install``; on a 2-core CPU an answer takes a minute or more).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from transformers.utils import logging as transformers_logging

from memagent import Memory

HERE = Path(__file__).parent
QUESTIONS: list[tuple[str, dict]] = [
    ("What is my dog's name?", {}),
    ("Where do I live now?", {}),
    ("Who am I travelling to Japan with?", {}),
    ("What should I avoid cooking with?", {}),
    ("Which days do I work from home?", {}),
    # asked before the move happened: memories from after the question date are not searched
    ("Which city do I live in?", {"question_date": "2024/04/01 (Mon) 09:00"}),
    # a time filter: only what was said in February
    ("What did we talk about?", {"filters": {"start": "2024-02-01", "end": "2024-02-29"}}),
]

# the last one is not in the memories: the reader should say so rather than invent a blood type
ANSWERED = ["What is my dog's name?", "Who am I going to Kyoto with?", "What is my blood type?"]


def main() -> None:
    transformers_logging.disable_progress_bar()
    started = time.perf_counter()
    memory = Memory(path="memagent_data/demo")
    for user in ("maya", "sam"):
        memory.delete_all(user_id=user)  # start fresh each run
    sessions = json.loads((HERE / "data" / "demo_conversation.json").read_text())
    for session in sessions:
        memory.add(session["messages"], user_id=session["user_id"], session_id=session["session_id"],
                   timestamp=session["timestamp"])
    stored = len(memory.get_all(user_id="maya")) + len(memory.get_all(user_id="sam"))
    print(f"Stored {len(sessions)} sessions as {stored} rounds in {time.perf_counter() - started:.1f}s "
          f"(store: {memory.config.store.path})\n")

    for question, options in QUESTIONS:
        hits = memory.search(question, user_id="maya", k=2, **options)
        print(f"Q: {question}" + (f"  {options}" if options else ""))
        for hit in hits:
            user_turn = hit.record.value.splitlines()[0].removeprefix("user: ")
            print(f"   {hit.record.timestamp:%Y-%m-%d}  {hit.score:.4f} {hit.why}  {user_turn}")
        print()
    assert all(h.record.user_id == "maya" for q, _ in QUESTIONS for h in memory.search(q, user_id="maya", k=5))
    print("Every hit above belongs to maya: sam's beagle Pepper never shows up in her searches.\n")

    if "--answer" not in sys.argv:
        print("Run with --answer (after `memagent models install`) to answer these from memory with the local reader.")
        return
    print(f"Answers from the local reader ({memory.config.reader.model}, no API key):")
    for question in ANSWERED:
        started = time.perf_counter()
        answer = memory.answer(question, user_id="maya", question_date="2024/07/01 (Mon) 09:00")
        label = "REFUSED" if answer.refused else "answer"
        print(f"Q: {question}\n   {label}: {answer.text}  (confidence {answer.confidence:.2f}, "
              f"{len(answer.citations)} memories cited, {time.perf_counter() - started:.0f}s)")


if __name__ == "__main__":
    main()
