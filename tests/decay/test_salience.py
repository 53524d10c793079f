"""Salience of stored records and compaction: what is forgotten, in what order, and that it stays forgotten."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from memagent import InputError
from memagent.decay.salience import decayed, keep_count, session_ages, surprisal, to_forget
from memagent.llm.scripted import ScriptedLLM
from memagent.schema import MemoryRecord
from tests.conftest import exchange

DAY = datetime(2024, 5, 1, tzinfo=timezone.utc)


def record(ident: str, session: str, day: int, round_index: int = 0) -> MemoryRecord:
    when = DAY + timedelta(days=day)
    return MemoryRecord(id=ident, user_id="u", session_id=session, round_index=round_index, value=ident, key=ident,
                        timestamp=when, recorded_at=when)


def test_surprisal_leaves_out_the_unpredicted_first_token() -> None:
    pieces = [("a", -9.0), ("b", -1.0), ("c", -3.0)]
    assert surprisal(pieces) == pytest.approx(4.0) and surprisal(pieces, "mean") == pytest.approx(2.0)
    assert surprisal([("a", 0.0)], "mean") == 0.0 and surprisal([]) == 0.0


def test_salience_decays_once_per_later_session() -> None:
    records = [record("a", "s1", 0), record("b", "s2", 1), record("c", "s3", 2), record("d", "s1", 0, 1)]
    assert session_ages(records) == {"s3": 0, "s2": 1, "s1": 2}
    assert decayed(records, [8.0, 8.0, 8.0, 4.0], 0.5) == [2.0, 4.0, 8.0, 1.0]
    with pytest.raises(ValueError, match="decay"):
        decayed(records, [1.0] * 4, 0.0)


def test_what_is_forgotten_by_each_order() -> None:
    records = [record("a", "s1", 0), record("b", "s1", 0, 1), record("c", "s2", 1), record("d", "s3", 2)]
    scores = [5.0, 1.0, 3.0, 2.0]
    assert [r.id for r in to_forget(records, 2, "salience", scores)] == ["b", "d"]
    assert [r.id for r in to_forget(records, 2, "recency")] == ["a", "b"]
    assert [r.id for r in to_forget(records, 1, "recency")] == ["a", "b", "c"]
    randomly = [r.id for r in to_forget(records, 2, "random", seed=3)]
    assert len(randomly) == 2 and randomly == [r.id for r in to_forget(records, 2, "random", seed=3)]
    assert to_forget(records, 10, "salience", scores) == []
    assert keep_count(10, 0.25) == 2 and keep_count(10, 3) == 3 and keep_count(10, 30) == 10
    for bad in (-1, True, "3"):
        with pytest.raises(ValueError, match="keep"):
            keep_count(10, bad)  # type: ignore[arg-type]


# The scripted LM's surprisal of a word is its length: long rare words are salient, "ok" is not.
WORD_LENGTH = ScriptedLLM("")


def test_compact_forgets_the_least_salient_keeps_history_and_other_users(make_memory) -> None:
    memory = make_memory(salience_llm=WORD_LENGTH)
    memory.add(exchange("My greyhound Pixel competes at Wimbledon stadium"), user_id="ana", session_id="s1",
               timestamp="2024-05-01T10:00:00")
    memory.add(exchange("ok so"), user_id="ana", session_id="s2", timestamp="2024-05-02T10:00:00")
    memory.add(exchange("I photograph lighthouses along Cornwall"), user_id="ana", session_id="s3",
               timestamp="2024-05-03T10:00:00")
    memory.add(exchange("ok so"), user_id="bob", session_id="s1", timestamp="2024-05-01T10:00:00")
    before = {r.id: r for r in memory.get_all(user_id="ana")}
    forgotten = memory.compact(user_id="ana", keep=2)
    assert [r.value for r in forgotten] == [before[r.id].value for r in forgotten] and len(forgotten) == 1
    assert "ok so" in forgotten[0].value
    kept = memory.get_all(user_id="ana")
    assert len(kept) == 2 and all("ok so" not in r.value for r in kept)
    assert [h.event for h in memory.history(forgotten[0].id, user_id="ana")] == ["forget"]
    assert memory.history(forgotten[0].id, user_id="ana")[0].previous == before[forgotten[0].id]
    assert all("ok so" not in h.record.value for h in memory.search("ok so", user_id="ana", k=5))  # BM25 in step
    assert len(memory.get_all(user_id="bob")) == 1  # another user's records are untouched


def test_compact_with_decay_prefers_recent_plain_records_to_old_salient_ones(make_memory) -> None:
    memory = make_memory(salience={"decay": 0.1}, salience_llm=WORD_LENGTH)
    memory.add(exchange("Remember Wimbledon greyhound championships"), user_id="ana", session_id="old",
               timestamp="2024-01-01T10:00:00")
    memory.add(exchange("fine then"), user_id="ana", session_id="new", timestamp="2024-06-01T10:00:00")
    forgotten = memory.compact(user_id="ana", keep=1)
    assert "Wimbledon" in forgotten[0].value  # 0.1 × its salience is below the plain record's
    assert memory.compact(user_id="ana", keep=1) == []  # nothing over the budget: nothing forgotten


def test_compact_by_recency_and_bad_input(memory) -> None:
    for day in range(4):
        memory.add(exchange(f"note number {day}"), user_id="ana", session_id=f"s{day}",
                   timestamp=f"2024-05-0{day + 1}T10:00:00")
    forgotten = memory.compact(user_id="ana", keep=0.5, by="recency")
    assert sorted(r.session_id for r in forgotten) == ["s0", "s1"]
    for bad, field in (({"keep": -2}, "keep"), ({"keep": "all"}, "keep"), ({"keep": 1, "by": "lru"}, "by")):
        with pytest.raises(InputError) as caught:
            memory.compact(user_id="ana", **bad)
        assert caught.value.field == field
    assert len(memory.get_all(user_id="ana")) == 2  # a refused compaction changed nothing


def test_a_salience_prior_in_ranking_lifts_salient_records_only_when_weighted(make_memory, tmp_path) -> None:
    plain = make_memory(tmp_path / "a", salience_llm=WORD_LENGTH)
    weighted = make_memory(tmp_path / "b", retrieval={"salience_weight": 10.0}, salience_llm=WORD_LENGTH)
    for memory in (plain, weighted):
        memory.add(exchange("we talked about the weather today"), user_id="ana", session_id="s1",
                   timestamp="2024-05-01T10:00:00")
        memory.add(exchange("weather: extraordinarily unseasonable thunderstorms"), user_id="ana", session_id="s2",
                   timestamp="2024-05-01T11:00:00")
    assert "talked" in plain.search("we talked about the weather", user_id="ana", k=2)[0].record.value
    hits = weighted.search("we talked about the weather", user_id="ana", k=2)
    assert "thunderstorms" in hits[0].record.value and "salience" in hits[0].why
