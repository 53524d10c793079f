"""The memories REST API of ``memagent serve --memory``: the SDK's verbs as routes, under ``/v1``.

    POST   /memories                     Memory.add          201, the records stored
    GET    /memories?user_id=            Memory.get_all
    POST   /memories/search              Memory.search
    POST   /memories/answer              Memory.answer       (with the served model)
    GET    /memories/{id}?user_id=       Memory.get
    PUT    /memories/{id}                Memory.update
    DELETE /memories/{id}?user_id=       Memory.delete
    GET    /memories/{id}/history?user_id=  Memory.history
    DELETE /users/{user_id}/memories     Memory.delete_all

Every route names its user (``user_id``), as every SDK call does, and the caller's API key must
grant that user (403 otherwise, before anything is read). A record id of another user is 404,
exactly like an id that does not exist, because ``Memory`` looks ids up in the named user's
records only: a key for ana asking for bo's record as ana learns nothing about it.

The request models type what a client sends; the rules on values (ids, blank messages, metadata,
k, timestamps, filters) are ``Memory``'s own, raised as ``InputError`` and answered as 400.
Memory calls run in worker threads, so a slow store never blocks the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from memagent.errors import InputError
from memagent.schema import Answer, HistoryEntry, Hit, MemoryRecord, Message
from memagent.serve.auth import OPEN, Grant, KeyRing, Unauthorized

if TYPE_CHECKING:
    from memagent.memory import Memory

Answerer = Callable[..., Awaitable[Answer]]
_bearer = HTTPBearer(auto_error=False, description="an API key from the server's keys (see memagent.serve.auth)")


async def caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Grant:
    """The users the request's API key may touch; every user when the server has no keys."""
    keys: KeyRing | None = request.app.state.keys
    if keys is None:
        return OPEN
    grant = None if credentials is None else keys.grant(credentials.credentials)
    if grant is None:
        raise Unauthorized()
    return grant


Caller = Annotated[Grant, Depends(caller)]
RecordId = Annotated[str, Path(alias="id", description="a record id, as add and search return it")]

_WHEN = "a date and time: ISO 8601, '2023/05/20 (Sat) 02:21', or epoch seconds (UTC when no zone is given)"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is named, not ignored


class _Scope(_Body):
    user_id: str
    agent_id: str | None = None
    run_id: str | None = None


class AddRequest(_Scope):
    messages: list[Message] = Field(description="one session's messages (or one exchange of it)")
    session_id: str | None = Field(default=None, description="the session; a new one when left out")
    timestamp: str | float | None = Field(default=None, description=f"when it was said: {_WHEN}; default now")
    metadata: dict[str, Any] | None = Field(default=None, description="str, int, float or bool values")


class SearchRequest(_Scope):
    query: str
    k: int | None = Field(default=None, description="how many hits (default: the server's config)")
    filters: dict[str, Any] | None = Field(default=None, description="session_ids, start, end, metadata")
    question_date: str | float | None = Field(default=None, description=f"when it is asked: {_WHEN}")


class AnswerRequest(_Scope):
    question: str
    k: int | None = None
    filters: dict[str, Any] | None = None
    question_date: str | float | None = Field(default=None, description=f"when it is asked: {_WHEN}; default now")


class UpdateRequest(_Body):
    user_id: str
    value: str | None = None
    metadata: dict[str, Any] | None = None


class Deleted(BaseModel):
    deleted: int = Field(description="how many records were forgotten")


def memories_router(memory: Memory, answer: Answerer | None = None) -> APIRouter:
    """The routes of the module docstring around ``memory``; ``answer`` serves ``/memories/answer``."""
    router = APIRouter(prefix="/v1", tags=["memories"])

    @router.post("/memories", status_code=201)
    async def add(body: AddRequest, grant: Caller) -> list[MemoryRecord]:
        messages = [m.model_dump() for m in body.messages]
        return await run_in_threadpool(
            memory.add,
            messages,
            user_id=grant.check(body.user_id),
            agent_id=body.agent_id,
            run_id=body.run_id,
            session_id=body.session_id,
            timestamp=body.timestamp,
            metadata=body.metadata,
        )

    @router.get("/memories")
    async def get_all(
        grant: Caller, user_id: str, agent_id: str | None = None, run_id: str | None = None
    ) -> list[MemoryRecord]:
        user = grant.check(user_id)
        return await run_in_threadpool(memory.get_all, user_id=user, agent_id=agent_id, run_id=run_id)

    @router.post("/memories/search")
    async def search(body: SearchRequest, grant: Caller) -> list[Hit]:
        return await run_in_threadpool(
            memory.search,
            body.query,
            user_id=grant.check(body.user_id),
            agent_id=body.agent_id,
            run_id=body.run_id,
            k=body.k,
            filters=body.filters,
            question_date=body.question_date,
        )

    if answer is not None:
        answer_with = answer  # bound here: mypy does not narrow ``answer`` inside the route

        @router.post("/memories/answer")
        async def answer_route(body: AnswerRequest, grant: Caller) -> Answer:
            user = grant.check(body.user_id)
            try:
                return await answer_with(
                    body.question,
                    user_id=user,
                    agent_id=body.agent_id,
                    run_id=body.run_id,
                    k=body.k,
                    filters=body.filters,
                    question_date=body.question_date,
                )
            except InputError as exc:  # Memory.answer checks the question as its search's query
                if exc.field != "query":
                    raise
                raise InputError("question", str(exc).removeprefix("query: ")) from None

    @router.get("/memories/{id}")
    async def get(record_id: RecordId, grant: Caller, user_id: str) -> MemoryRecord:
        return await run_in_threadpool(memory.get, record_id, user_id=grant.check(user_id))

    @router.put("/memories/{id}")
    async def update(record_id: RecordId, body: UpdateRequest, grant: Caller) -> MemoryRecord:
        return await run_in_threadpool(
            memory.update, record_id, user_id=grant.check(body.user_id), value=body.value, metadata=body.metadata
        )

    @router.delete("/memories/{id}")
    async def delete(record_id: RecordId, grant: Caller, user_id: str) -> Deleted:
        await run_in_threadpool(memory.delete, record_id, user_id=grant.check(user_id))
        return Deleted(deleted=1)

    @router.get("/memories/{id}/history")
    async def history(record_id: RecordId, grant: Caller, user_id: str) -> list[HistoryEntry]:
        user = grant.check(user_id)
        entries = await run_in_threadpool(memory.history, record_id, user_id=user)
        if not entries:  # an id the user never had is 404, as in get; a record never changed has none
            await run_in_threadpool(memory.get, record_id, user_id=user)
        return entries

    @router.delete("/users/{user_id}/memories")
    async def delete_all(
        user_id: str, grant: Caller, agent_id: str | None = None, run_id: str | None = None
    ) -> Deleted:
        count = await run_in_threadpool(
            memory.delete_all, user_id=grant.check(user_id), agent_id=agent_id, run_id=run_id
        )
        return Deleted(deleted=count)

    return router
