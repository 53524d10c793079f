"""How records lie in Chroma: one collection per user, and a memagent 0.1 store (every user in one
collection) moved into that layout on first open, nothing embedded again and nothing lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import chromadb
from chromadb.config import Settings

from memagent import Memory
from memagent.store.chroma import collection_name, record_to_metadata
from tests.conftest import exchange


def test_each_user_has_a_collection_holding_only_their_records(memory: Memory) -> None:
    memory.add(exchange("I adopted a greyhound called Pixel"), user_id="ana", session_id="s1")
    memory.add(exchange("My locker code is 4417") + exchange("and my bike is red"), user_id="bo", session_id="s1")
    names = sorted(c.name for c in memory.store.user_collections())
    assert names == sorted(collection_name("memagent", u) for u in ("ana", "bo"))
    for user, count in (("ana", 1), ("bo", 2)):
        found = memory.store.records(user).get(include=["metadatas"])
        assert len(found["ids"]) == count and {m["user_id"] for m in found["metadatas"]} == {user}


def test_a_store_of_one_shared_collection_is_moved_per_user_on_first_open(make_memory, tmp_path: Path) -> None:
    # write records the way memagent 0.1 did: one collection for every user, a where on user_id
    source = make_memory(path=tmp_path / "source")
    records = [*source.add(exchange("I adopted a greyhound called Pixel"), user_id="ana", session_id="s1"),
               *source.add(exchange("My locker code is 4417"), user_id="bo", session_id="s1")]
    vectors = source.embedder.embed_documents([r.key for r in records])
    old = chromadb.PersistentClient(path=str(tmp_path / "old"), settings=Settings(anonymized_telemetry=False))
    old.create_collection("memagent", metadata={"hnsw:space": "cosine"}).add(
        ids=[r.id for r in records], documents=[r.key for r in records],
        metadatas=[record_to_metadata(r) for r in records], embeddings=vectors)
    del old

    memory = make_memory(path=tmp_path / "old")
    assert "memagent" not in {c.name for c in memory.store.client.list_collections()}
    assert memory.get_all(user_id="ana") == [records[0]] and memory.get_all(user_id="bo") == [records[1]]
    (hit,) = memory.search("greyhound Pixel", user_id="ana", k=5)
    assert hit.record == records[0] and hit.why["dense"] == 1
    assert memory.embedder.misses == 1  # the query alone: records moved with their embeddings


def test_reading_every_record_of_a_user_goes_past_one_page(memory: Memory, monkeypatch) -> None:
    # one unbounded chromadb get of 100k records failed ("too many SQL variables"): reads are paged
    monkeypatch.setattr(memory.store, "_batch", 2)
    memory.add(exchange("one") + exchange("two") + exchange("three") + exchange("four") + exchange("five"),
               user_id="ana", session_id="s1")
    assert [r.round_index for r in memory.get_all(user_id="ana")] == [0, 1, 2, 3, 4]
    assert len(memory.search("three", user_id="ana", k=10)) == 5


def test_writes_of_many_users_keep_chromas_write_log_short(make_memory, tmp_path: Path) -> None:
    """Chroma keeps each write in its sqlite log until the collection's vector index is saved, and
    writes slow down as that log grows; under Chroma's default (saved every 1,000 records) users with
    fewer records keep everything in it. A user's collection is saved
    every 50 records, so three users of 60 leave at most a few dozen rows each."""
    memory = make_memory(path=tmp_path / "store")
    for user in ("ana", "bo", "cy"):
        rounds = [m for n in range(60) for m in exchange(f"{user} note number {n}")]
        assert len(memory.add(rounds, user_id=user, session_id="s1")) == 60
    log = sqlite3.connect(tmp_path / "store" / "chroma.sqlite3")
    assert log.execute("select count(*) from embeddings_queue").fetchone()[0] < 60
    assert len(memory.search("ana note number 7", user_id="ana", k=60)) == 60


def test_a_chat_of_one_exchange_per_add_keeps_chromas_write_log_short(make_memory, tmp_path: Path) -> None:
    """A chat adds one exchange at a time, and each add also writes the user's version token to a
    shared collection: both collections save their index every 50 writes, so 60 adds leave a few
    dozen log rows, not the 120 that Chroma's default (every 1,000) would keep."""
    memory = make_memory(path=tmp_path / "store")
    for n in range(60):
        memory.add(exchange(f"today's note number {n}"), user_id="dee", session_id="s1")
    log = sqlite3.connect(tmp_path / "store" / "chroma.sqlite3")
    assert log.execute("select count(*) from embeddings_queue").fetchone()[0] < 40
    assert "note number 42\n" in memory.search("today's note number 42", user_id="dee", k=1)[0].record.value
