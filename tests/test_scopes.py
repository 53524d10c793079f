"""One rule for user_id (a required keyword wherever a user's data is read or written), and the
optional agent_id / run_id scopes, through the public API."""

from __future__ import annotations

import asyncio
import inspect
import io
import threading
import time

import pytest

from memagent import AsyncMemory, InputError, Memory, RecordNotFound, ScriptedLLM
from tests.conftest import exchange


@pytest.fixture
def two_users(memory: Memory) -> tuple[Memory, str, str]:
    (ana,) = memory.add(exchange("I adopted a greyhound called Pixel"), user_id="ana", session_id="s1")
    (bo,) = memory.add(exchange("My locker code is 4417"), user_id="bo", session_id="s1")
    return memory, ana.id, bo.id


def test_the_calls_mem0_users_type_work_by_keyword(two_users, tmp_path) -> None:
    memory, ana_id, _ = two_users
    assert [r.id for r in memory.get_all(user_id="ana")] == [ana_id]
    out = tmp_path / "ana.jsonl"
    assert memory.export(out, user_id="ana") == 1
    assert memory.delete_all(user_id="ana") == 1
    assert memory.get_all(user_id="ana") == [] and len(memory.get_all(user_id="bo")) == 1


def test_a_record_of_another_user_is_not_found_for_any_one_record_call(two_users) -> None:
    memory, ana_id, _ = two_users
    for call in (lambda: memory.get(ana_id, user_id="bo"),
                 lambda: memory.update(ana_id, user_id="bo", value="user: taken over"),
                 lambda: memory.delete(ana_id, user_id="bo")):
        with pytest.raises(RecordNotFound, match=ana_id):
            call()
    assert memory.history(ana_id, user_id="bo") == []
    assert memory.get(ana_id, user_id="ana").value.startswith("user: I adopted a greyhound")  # unchanged


CALLS = {
    "add": lambda m, **kw: m.add(exchange("hi"), **kw),
    "search": lambda m, **kw: m.search("hi", **kw),
    "answer": lambda m, **kw: m.answer("hi", llm=ScriptedLLM("ANSWER: hi"), **kw),
    "get": lambda m, **kw: m.get("some-id", **kw),
    "get_all": lambda m, **kw: m.get_all(**kw),
    "history": lambda m, **kw: m.history("some-id", **kw),
    "update": lambda m, **kw: m.update("some-id", value="user: x", **kw),
    "delete": lambda m, **kw: m.delete("some-id", **kw),
    "delete_all": lambda m, **kw: m.delete_all(**kw),
    "export": lambda m, **kw: m.export(io.StringIO(), **kw),
    "import_": lambda m, **kw: m.import_([], **kw),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_every_method_refuses_a_missing_user_id(two_users, name: str) -> None:
    memory, _, _ = two_users
    with pytest.raises(TypeError, match="user_id"):
        CALLS[name](memory)
    for bad in (None, "", "  ", "a\x00b", "x" * 257):
        with pytest.raises(InputError, match=r"^user_id: "):
            CALLS[name](memory, user_id=bad)
    assert sorted(r.user_id for u in ("ana", "bo") for r in memory.store.find(u)) == ["ana", "bo"]


def test_agent_and_run_scopes_narrow_every_read_and_stay_inside_the_user(memory: Memory) -> None:
    memory.add(exchange("I water the ferns on Mondays"), user_id="ana", agent_id="gardener", session_id="s1")
    memory.add(exchange("I water the ferns on Fridays"), user_id="ana", agent_id="butler", run_id="r1",
               session_id="s1")
    memory.add(exchange("I water the ferns daily"), user_id="bo", agent_id="gardener", session_id="s1")

    def days(**scope: str) -> set[str]:
        hits = memory.search("when do I water the ferns", k=10, **scope)
        return {h.record.value.splitlines()[0].split()[-1] for h in hits}

    assert days(user_id="ana") == {"Mondays", "Fridays"}  # the user alone: every agent's and run's
    assert days(user_id="ana", agent_id="gardener") == {"Mondays"}
    assert days(user_id="ana", run_id="r1") == {"Fridays"}
    assert days(user_id="ana", agent_id="gardener", run_id="r1") == set()
    assert [r.agent_id for r in memory.get_all(user_id="ana", agent_id="gardener")] == ["gardener"]
    assert [r.run_id for r in memory.get_all(user_id="ana", run_id="r1")] == ["r1"]
    assert memory.get_all(user_id="bo", agent_id="butler") == []
    assert memory.delete_all(user_id="ana", agent_id="butler") == 1
    assert [r.agent_id for r in memory.get_all(user_id="ana")] == ["gardener"]
    assert len(memory.get_all(user_id="bo")) == 1


def test_the_same_exchange_told_to_two_agents_is_two_records(memory: Memory) -> None:
    one = memory.add(exchange("I am allergic to nuts"), user_id="ana", agent_id="chef", session_id="s1")
    two = memory.add(exchange("I am allergic to nuts"), user_id="ana", agent_id="doctor", session_id="s1")
    assert one[0].id != two[0].id
    assert memory.add(exchange("I am allergic to nuts"), user_id="ana", agent_id="chef", session_id="s1") == []


def test_import_takes_only_the_named_users_records_and_moves_them_only_when_asked(two_users) -> None:
    memory, _, _ = two_users
    buffer = io.StringIO()
    memory.export(buffer, user_id="ana")
    lines = buffer.getvalue().splitlines()
    with pytest.raises(InputError, match=r"^line 1\.user_id: is 'ana', not 'bo': pass as_user="):
        memory.import_(lines, user_id="bo")
    assert memory.import_(lines, user_id="ana", as_user="cy") == 1
    (moved,) = memory.get_all(user_id="cy")
    assert moved.value == memory.get_all(user_id="ana")[0].value and moved.id != memory.get_all(user_id="ana")[0].id


def test_async_memory_has_memorys_signatures() -> None:
    for name in ("add", "search", "answer", "get", "get_all", "history", "update", "delete", "delete_all", "compact",
                 "export", "import_"):
        sync, wrapped = inspect.signature(getattr(Memory, name)), inspect.signature(getattr(AsyncMemory, name))
        assert list(wrapped.parameters) == list(sync.parameters), name
        assert inspect.iscoroutinefunction(getattr(AsyncMemory, name)), name
    made = inspect.signature(AsyncMemory.__init__).parameters
    assert made.keys() == inspect.signature(Memory.__init__).parameters.keys()


class Overlap(ScriptedLLM):
    """A model that notes how many callers were inside it at once."""

    def __init__(self) -> None:
        super().__init__("ANSWER: Pixel")
        self.inside, self.most = 0, 0
        self._count = threading.Lock()

    def generate(self, messages, **options):  # type: ignore[no-untyped-def]
        with self._count:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(0.05)
        with self._count:
            self.inside -= 1
        return super().generate(messages, **options)


def test_concurrent_answers_drive_one_model_one_at_a_time(tmp_path, embedder) -> None:
    llm = Overlap()

    async def run() -> None:
        memory = AsyncMemory(path=tmp_path / "store", embedder=embedder, llm=llm)
        await memory.add(exchange("I adopted a greyhound called Pixel"), user_id="ana", session_id="s1")
        answers = await asyncio.gather(*(memory.answer("dog's name?", user_id="ana") for _ in range(4)))
        assert [a.text for a in answers] == ["Pixel"] * 4

    asyncio.run(run())
    assert llm.most == 1
