"""``memagent serve``: an OpenAI-compatible HTTP server around any ``LLM``, optionally with memory.

With a ``Memory``, the memories REST API (``rest.py``) is served beside the chat endpoints, and
OpenAPI docs are at ``/docs`` (the schema at ``/openapi.json``). API keys (``auth.py``) map to the
users each may touch; without keys the server is open to whoever reaches its port.

Endpoints (the OpenAI schema, so any OpenAI client works):

- ``GET /v1/models``
- ``POST /v1/chat/completions``: ``messages``, ``max_tokens`` (or ``max_completion_tokens``),
  ``temperature``, ``stop``, ``logprobs``, ``stream`` (Server-Sent Events ending ``data: [DONE]``),
  ``user``. With a ``Memory`` and a ``user``, the reply is ``Memory.answer`` for the last user
  message, and the response carries an extra top-level ``memagent`` field
  (``refused``, ``confidence``, ``citations``). The key must grant that ``user`` (403 otherwise).
  With ``store_exchanges``, the question and the reply are then added to the user's memories, in
  the session ``metadata.session_id`` names (OpenAI's ``metadata`` field), else in a new one.

Continuation scoring uses vLLM's chat extensions (``prompt_logprobs``, ``add_generation_prompt``,
``continue_final_message``), so ``OpenAICompatibleLLM.continuation_logprobs`` works against vLLM
and against this server alike. The ``LLM`` interface does not expose the rendered prompt, so here
``prompt_logprobs`` holds one opaque ``null`` position for the whole chat prompt, followed by one
entry per token of the final assistant message when ``continue_final_message`` is set. Only the
difference between two such lists is meaningful, which is all the client uses. Entries are keyed
``"-1"`` (token id unknown at this layer).

Requests run one at a time on the model (a lock), in a worker thread so the event loop keeps
serving; bodies over ``max_request_bytes`` get 413 before any parsing, on every route. Errors are
OpenAI's shape everywhere, ``param`` naming the field: 400 bad input, 401 no or wrong key,
403 a user the key may not touch, 404 no such record (of that user), 413, 500 model failure.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from memagent._extras import require

require("server", "fastapi", "uvicorn")

from fastapi import Depends, FastAPI, Request  # noqa: E402
from fastapi.encoders import jsonable_encoder  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse, StreamingResponse  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator  # noqa: E402
from pydantic_core import ErrorDetails  # noqa: E402
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool  # noqa: E402
from starlette.datastructures import Headers  # noqa: E402
from starlette.types import ASGIApp, Message, Receive, Scope, Send  # noqa: E402

from memagent.errors import InputError, RecordNotFound  # noqa: E402
from memagent.llm.base import LLM, Generation, LLMError  # noqa: E402
from memagent.schema import Answer, validate_id  # noqa: E402
from memagent.serve.auth import LOOPBACK, Forbidden, Grant, KeyRing, Unauthorized  # noqa: E402
from memagent.serve.rest import Caller, caller, memories_router  # noqa: E402

if TYPE_CHECKING:
    from memagent.memory import Memory

T = TypeVar("T")
_Body = TypeVar("_Body", bound=BaseModel)


class APIError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self) -> JSONResponse:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status)


# -- request schema ------------------------------------------------------------------------------
class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def _join_text_parts(cls, value: object) -> object:
        """OpenAI also sends content as ``[{"type": "text", "text": ...}]``; only text is supported."""
        if not isinstance(value, list):
            return value
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in value):
            raise ValueError("only text content parts ({'type': 'text', 'text': ...}) are supported")
        return "".join(p["text"] for p in value)

    def as_dict(self) -> dict[str, str]:
        return {"role": "system" if self.role == "developer" else self.role, "content": self.content}


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    # other OpenAI options (top_p, seed, ...) are accepted and ignored, as most local servers do
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # OpenAI's newer name for max_tokens
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)  # None: the model's default (greedy)
    stop: list[str] | None = Field(default=None, max_length=4)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)  # accepted; alternatives are not returned
    n: int = Field(default=1, ge=1, le=1)
    user: str | None = None
    metadata: dict[str, str] | None = None  # OpenAI's; ``session_id`` here names the session an exchange is stored in
    # vLLM extensions, used for continuation scoring (see the module docstring)
    prompt_logprobs: int | None = Field(default=None, ge=0)
    add_generation_prompt: bool = True
    continue_final_message: bool = False

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``LLM.generate``; unset ones keep the model's defaults."""
        options: dict[str, Any] = {"stop": self.stop}
        max_tokens = self.max_completion_tokens or self.max_tokens
        if max_tokens is not None:
            options["max_new_tokens"] = max_tokens
        if self.temperature is not None:
            options["temperature"] = self.temperature
        return options

    def chat(self) -> list[dict[str, str]]:
        return [m.as_dict() for m in self.messages]

    def question(self) -> str:
        """The last user message: what a memory answer answers."""
        asked = [m.content for m in self.messages if m.role == "user"]
        if not asked:
            raise APIError(400, "messages: a memory answer needs a user message", param="messages")
        return asked[-1]


class _BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes (declared, or counted as it streams in) gets 413
    before any route parses it; a body within it is read whole and handed on."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            return await _too_large(int(declared), self.limit).response()(scope, receive, send)
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunks.append(message.get("body", b""))
            size, more = size + len(chunks[-1]), message.get("more_body", False)
            if size > self.limit:
                return await _too_large(size, self.limit).response()(scope, receive, send)
        body: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Message:
            return body.pop() if body else await receive()  # after the body: disconnects, as before

        return await self.app(scope, replay, send)


def _too_large(size: int, limit: int) -> APIError:
    return APIError(413, f"request body has {size} bytes, over the limit of {limit} (max_request_bytes)")


def parse_body(model: type[_Body], body: bytes) -> _Body:
    """Validate JSON against ``model``; the 400 error names the first bad field, e.g. ``messages[0].role``."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc.errors()[0]) from exc


def _invalid(first: ErrorDetails) -> APIError:
    """A 400 naming the field of pydantic's first error (a route's body, query or path, FastAPI's ``loc``
    starting with where it was)."""
    loc = list(first["loc"])
    if loc and loc[0] in ("body", "query", "path"):
        loc = loc[1:]
    param = None if first["type"] == "json_invalid" else _dotted(loc)
    got = "" if first["type"] in ("missing", "json_invalid") else f" (got {first['input']!r:.80})"
    message = f"{param}: {first['msg']}{got}" if param else f"request body: {first['msg']}"
    return APIError(400, message, param=param)


def _dotted(loc: Sequence[int | str]) -> str | None:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or None


# -- responses -----------------------------------------------------------------------------------
def _completion(
    request_id: str,
    model: str,
    message: dict[str, Any],
    finish_reason: str,
    logprobs: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    choice = {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": logprobs}
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        **extra,
    }


def _chunk(request_id: str, model: str, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _token_logprobs(logprobs: Sequence[float]) -> dict[str, Any]:
    # the LLM interface gives no token strings, so "token" is empty; the numbers are exact
    return {"content": [{"token": "", "logprob": lp, "bytes": None, "top_logprobs": []} for lp in logprobs]}


def _memagent_field(answer: Answer) -> dict[str, Any]:
    fields = {"refused": answer.refused, "confidence": answer.confidence, "citations": answer.citations}
    encoded: dict[str, Any] = jsonable_encoder(fields)
    return encoded


def _sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, separators=(',', ':'))}\n\n"


# -- the service ---------------------------------------------------------------------------------
class _ChatService:
    """Answers chat requests with one LLM (and optionally a Memory), one request on the model at a time."""

    def __init__(self, llm: LLM, model_name: str, memory: Memory | None, store_exchanges: bool = False) -> None:
        self.llm, self.model_name, self.memory = llm, model_name, memory
        self.store_exchanges = store_exchanges
        self._lock = asyncio.Lock()  # the local model is not safe to run concurrently

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` in a worker thread, so a slow model never blocks the event loop, under the lock."""
        async with self._lock:
            return await run_in_threadpool(fn, *args, **kwargs)

    async def respond(self, req: ChatRequest, grant: Grant) -> JSONResponse | StreamingResponse:
        if req.model != self.model_name:
            raise APIError(
                404,
                f"model {req.model!r} does not exist; this server serves {self.model_name!r}",
                param="model",
                code="model_not_found",
            )
        if req.continue_final_message:
            return JSONResponse(await self.score(req))
        if self.memory is not None and req.user:
            answer = await self.from_memory(self.memory, req, grant)
            return self.stream_answer(answer) if req.stream else JSONResponse(self.answered(req, answer))
        if req.stream:
            if req.prompt_logprobs is not None:
                raise APIError(400, "prompt_logprobs: not available when stream is true", param="prompt_logprobs")
            return StreamingResponse(self.stream(req), media_type="text/event-stream")
        return JSONResponse(await self.complete(req))

    async def from_memory(self, memory: Memory, req: ChatRequest, grant: Grant) -> Answer:
        """``Memory.answer`` to the last user message; with ``store_exchanges`` the exchange is then added
        (after answering, so the question is not found as its own evidence)."""
        user, question = grant.check(req.user, "user"), req.question()
        session = (req.metadata or {}).get("session_id")
        if self.store_exchanges and session is not None:
            validate_id(session, "metadata.session_id")  # refused before the model runs, not after
        answer = await self.run(memory.answer, question, user_id=user, llm=self.llm)
        if self.store_exchanges:
            exchange = [{"role": "user", "content": question}, {"role": "assistant", "content": answer.text}]
            await run_in_threadpool(memory.add, exchange, user_id=user, session_id=session)
        return answer

    async def complete(self, req: ChatRequest) -> dict[str, Any]:
        generation: Generation = await self.run(self.llm.generate, req.chat(), **req.options())
        extra: dict[str, Any] = {"usage": _usage(generation.prompt_tokens, generation.completion_tokens)}
        if req.logprobs:
            extra["logprobs"] = _token_logprobs(generation.token_logprobs)
        if req.prompt_logprobs is not None:
            extra["prompt_logprobs"] = [None]  # the whole prompt as one opaque position (module docstring)
        message = {"role": "assistant", "content": generation.text}
        return _completion(_new_id(), self.model_name, message, generation.finish_reason, **extra)

    async def score(self, req: ChatRequest) -> dict[str, Any]:
        """vLLM's ``continue_final_message`` + ``prompt_logprobs``: log-probabilities of the final reply."""
        *chat, last = req.chat()
        if req.prompt_logprobs is None or req.stream:
            raise APIError(
                400,
                "continue_final_message: supported for scoring only; set prompt_logprobs, without stream",
                param="continue_final_message",
            )
        if last["role"] != "assistant" or req.add_generation_prompt:
            raise APIError(
                400,
                "continue_final_message: the last message must be the assistant's and "
                "add_generation_prompt must be false",
                param="continue_final_message",
            )
        logprobs = await self.run(self.llm.continuation_logprobs, chat, last["content"]) if last["content"] else []
        entries = [{"-1": {"logprob": lp, "rank": None, "decoded_token": None}} for lp in logprobs]
        # scoring generates nothing, so the reply is empty and stopped by length
        return _completion(
            _new_id(),
            self.model_name,
            {"role": "assistant", "content": ""},
            "length",
            usage=_usage(1 + len(entries), 0),
            prompt_logprobs=[None, *entries],
        )

    def answered(self, req: ChatRequest, answer: Answer) -> dict[str, Any]:
        # the reader's real prompt (with the memories) is not visible here: token counts are estimates
        usage = _usage(self.llm.count_tokens(req.question()), self.llm.count_tokens(answer.text))
        message = {"role": "assistant", "content": answer.text}
        return _completion(_new_id(), self.model_name, message, "stop", usage=usage, memagent=_memagent_field(answer))

    def stream_answer(self, answer: Answer) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            request_id = _new_id()
            yield _sse(_chunk(request_id, self.model_name, {"role": "assistant", "content": answer.text}))
            yield _sse({**_chunk(request_id, self.model_name, {}, "stop"), "memagent": _memagent_field(answer)})
            yield _sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    async def stream(self, req: ChatRequest) -> AsyncIterator[str]:
        request_id, text = _new_id(), ""
        yield _sse(_chunk(request_id, self.model_name, {"role": "assistant", "content": ""}))
        async with self._lock:
            pieces = self.llm.stream(req.chat(), **req.options())
            try:
                # each step runs in a worker thread; a cancelled step still finishes before the lock is freed
                async for piece in iterate_in_threadpool(pieces):
                    text += piece
                    yield _sse(_chunk(request_id, self.model_name, {"content": piece}))
            except LLMError as exc:  # headers are sent: report in the stream, as vLLM and OpenAI do
                yield _sse({"error": {"message": f"model failed: {exc}", "type": "server_error"}})
                return
            finally:
                getattr(pieces, "close", lambda: None)()
        yield _sse(_chunk(request_id, self.model_name, {}, "stop"))
        if req.stream_options and req.stream_options.include_usage:
            prompt = sum(self.llm.count_tokens(m.content) for m in req.messages)  # the stream reports no counts
            usage_chunk = {
                **_chunk(request_id, self.model_name, {}),
                "choices": [],
                "usage": _usage(prompt, self.llm.count_tokens(text)),
            }
            yield _sse(usage_chunk)
        yield _sse("[DONE]")


def _new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


# -- the app -------------------------------------------------------------------------------------
def create_app(
    llm: LLM,
    *,
    model_name: str,
    api_key: str | None = None,
    keys: KeyRing | None = None,
    max_request_bytes: int = 1_000_000,
    memory: Memory | None = None,
    store_exchanges: bool = False,
) -> FastAPI:
    """An OpenAI-compatible app serving ``llm`` as ``model_name``; with ``memory``, also the memories
    REST API. ``keys`` map API keys to users; ``api_key`` is one more key, for every user (admin)."""
    if max_request_bytes <= 0:
        raise InputError("max_request_bytes", f"must be a positive integer, got {max_request_bytes!r}")
    if store_exchanges and memory is None:
        raise InputError("store_exchanges", "needs a memory to store the exchanges in")
    if api_key:
        keys = (keys or KeyRing({})).with_admin(api_key)
    service = _ChatService(llm, model_name, memory, store_exchanges)
    app = FastAPI(title="memagent", dependencies=[Depends(caller)], redoc_url=None)
    app.state.keys = keys
    app.add_middleware(_BodyLimit, limit=max_request_bytes)
    _answer_errors_as_json(app)
    started = int(time.time())

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        model = {"id": model_name, "object": "model", "created": started, "owned_by": "memagent"}
        return {"object": "list", "data": [model]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request, grant: Caller) -> JSONResponse | StreamingResponse:
        req = parse_body(ChatRequest, await request.body())
        return await service.respond(req, grant)

    if memory is not None:

        async def answer(question: str, **scope: Any) -> Answer:
            return await service.run(memory.answer, question, llm=llm, **scope)

        app.include_router(memories_router(memory, answer))
    return app


def _answer_errors_as_json(app: FastAPI) -> None:
    """Every error in OpenAI's shape, ``param`` naming the field (see the module docstring)."""

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(LLMError)
    async def llm_error(_: Request, exc: LLMError) -> JSONResponse:
        return APIError(500, f"model failed: {exc}", type="server_error").response()

    @app.exception_handler(InputError)
    async def input_error(_: Request, exc: InputError) -> JSONResponse:
        return APIError(400, str(exc), param=exc.field).response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _invalid(exc.errors()[0]).response()

    @app.exception_handler(RecordNotFound)
    async def not_found(_: Request, exc: RecordNotFound) -> JSONResponse:
        return APIError(404, str(exc), param="id", code="not_found").response()

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return APIError(401, str(exc), code="invalid_api_key").response()

    @app.exception_handler(Forbidden)
    async def forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return APIError(403, str(exc), type="permission_error", param=exc.field, code="forbidden_user").response()


def serve(
    llm: LLM,
    *,
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    keys: KeyRing | None = None,
    max_request_bytes: int = 1_000_000,
    memory: Memory | None = None,
    store_exchanges: bool = False,
    log_level: str = "info",
) -> None:
    """Run the app with uvicorn until interrupted. Binds to loopback unless ``host`` says otherwise."""
    import uvicorn  # only the server needs it

    app = create_app(
        llm,
        model_name=model_name,
        api_key=api_key,
        keys=keys,
        max_request_bytes=max_request_bytes,
        memory=memory,
        store_exchanges=store_exchanges,
    )
    print(f"memagent: serving {model_name!r} at http://{host}:{port}/v1", flush=True)
    if memory is not None:
        print(
            f"memagent: memories API at http://{host}:{port}/v1/memories, docs at http://{host}:{port}/docs", flush=True
        )
    if app.state.keys is None and host not in LOOPBACK:
        print(
            f"memagent: warning: no API keys, and {host} is not loopback: anyone who reaches the port can read "
            "and change every user's memories",
            file=sys.stderr,
            flush=True,
        )
    uvicorn.run(app, host=host, port=port, log_level=log_level)
