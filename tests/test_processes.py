"""Several processes on one embedded folder: each sees the others' writes, and a writer killed with
SIGKILL loses nothing it acknowledged. Children are separate Python processes with their own
embedder, each under a timeout (most of it is the child importing torch and loading the model)."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memagent import Memory, MemoryConfig
from tests.conftest import exchange

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and the folder's flock are POSIX")

CHILD_TIMEOUT_S = 120  # a bound, not the expected time: a child takes a few seconds once its imports are done

PRELUDE = """
import json, os, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from memagent import Memory, SentenceTransformerEmbedder
memory = Memory(path=sys.argv[1], embedder=SentenceTransformerEmbedder("all-MiniLM-L6-v2", device="cpu"))
def exchange(text):
    return [{"role": "user", "content": text}, {"role": "assistant", "content": "Noted."}]
"""

# adds three of alice's records and rewrites the one the parent added; prints what it wrote
WRITER = PRELUDE + """
added = [memory.add(exchange(text), user_id="alice", session_id=f"b{i}")[0].id for i, text in enumerate([
    "I play the cello in a string quartet", "My passport expires in March", "I am allergic to peanuts"])]
memory.update(sys.argv[2], user_id="alice", value="user: a volcano erupted near the ski resort")
print(json.dumps(added), flush=True)
"""

# adds rounds one by one and prints each record's id once add() has returned, until it is killed
ACKNOWLEDGER = PRELUDE + """
for i in range(400):
    (record,) = memory.add(exchange(f"probe round {i}: the parcel code is zq{i}x"), user_id="alice", session_id="k")
    print(json.dumps([record.id, f"zq{i}x"]), flush=True)
"""


def child(script: str, *args: str) -> list[str]:
    return [sys.executable, "-c", script, *args]


def dense_only(folder: Path, embedder) -> Memory:
    return Memory(MemoryConfig(retrieval={"retrievers": ["dense"]}), path=folder, embedder=embedder)


def test_a_process_sees_records_another_process_added_and_updated(tmp_path: Path, embedder) -> None:
    folder = tmp_path / "shared"
    memory = Memory(path=folder, embedder=embedder)
    dense = dense_only(folder, embedder)
    (mine,) = memory.add(exchange("I adopted a greyhound called Pixel"), user_id="alice", session_id="a1")
    assert [h.record.id for h in memory.search("greyhound", user_id="alice")] == [mine.id]  # the index is loaded

    done = subprocess.run(child(WRITER, str(folder), mine.id), capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout.splitlines()[-1])

    # the old code raised chromadb's InternalError "Error finding id" here: the dense index lacked them
    hits = memory.search("What instrument do I play?", user_id="alice", k=10)
    assert {h.record.id for h in hits} == {mine.id, *theirs}
    assert dense.search("What instrument do I play?", user_id="alice", k=1)[0].record.id == theirs[0]
    assert dense.search("peanut allergy", user_id="alice", k=1)[0].record.id == theirs[2]
    # the other process's update is ranked by its new embedding, not the one this process loaded
    (top,) = dense.search("volcanic eruption", user_id="alice", k=1)
    assert top.record.id == mine.id and "volcano" in top.record.value


def test_own_writes_reopen_nothing(tmp_path: Path, embedder) -> None:
    folder = tmp_path / "own"
    one = Memory(path=folder, embedder=embedder)
    two = Memory(path=folder, embedder=embedder)  # one process, one folder: they share the open client
    shared = one.store._folder
    assert shared is not None and two.store._folder is shared
    generation = shared.generation
    for i in range(3):
        (record,) = one.add(exchange(f"note {i} about the garden"), user_id="alice", session_id="s")
        two.add(exchange(f"note {i} about the kitchen"), user_id="alice", session_id="t")
        assert record.id in {h.record.id for h in two.search(f"note {i} garden", user_id="alice", k=10)}
        one.delete(record.id, user_id="alice")
        assert two.search("garden", user_id="alice", k=10)
    assert shared.generation == generation


def read_acks(process: subprocess.Popen[str], wanted: int, deadline: float) -> list[list[str]]:
    """Lines the child printed, once it printed ``wanted`` of them or the deadline passed."""
    assert process.stdout is not None
    acks: list[list[str]] = []
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while len(acks) < wanted and time.monotonic() < deadline and process.poll() is None:
            if selector.select(timeout=0.2):
                line = process.stdout.readline()
                if line:
                    acks.append(json.loads(line))
    return acks


def test_every_record_acknowledged_before_a_sigkill_is_kept_and_searchable(tmp_path: Path, embedder) -> None:
    folder = tmp_path / "killed"
    errors = tmp_path / "child-stderr.txt"
    with errors.open("w") as stderr:  # a file, not a pipe: a full pipe would stall the child
        process = subprocess.Popen(child(ACKNOWLEDGER, str(folder)), stdout=subprocess.PIPE, stderr=stderr,
                                   text=True)
    try:
        acks = read_acks(process, 6, time.monotonic() + CHILD_TIMEOUT_S)
        assert len(acks) == 6, f"the child acknowledged {len(acks)} records: {errors.read_text()[-3000:]}"
        os.kill(process.pid, signal.SIGKILL)  # most likely inside an add: its embedding or its write
        rest, _ = process.communicate(timeout=CHILD_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=CHILD_TIMEOUT_S)
    assert process.returncode == -signal.SIGKILL
    acks += [json.loads(line) for line in rest.splitlines() if line.endswith("]")]  # printed before the kill

    reopened = Memory(path=folder, embedder=embedder)
    dense = dense_only(folder, embedder)
    for record_id, code in acks:
        assert code in reopened.get(record_id, user_id="alice").value
        question = f"what is the parcel code {code}?"
        assert record_id in [h.record.id for h in reopened.search(question, user_id="alice", k=3)]
        # dense alone, deep enough for every record: each acknowledged one is in the vector index
        assert record_id in [h.record.id for h in dense.search(question, user_id="alice", k=len(acks) + 1)]
    # the killed writer's lock died with it: the folder takes writes again
    (after,) = reopened.add(exchange("written after the kill"), user_id="alice", session_id="after")
    assert dense.search("written after the kill", user_id="alice", k=1)[0].record.id == after.id
