"""``memagent mcp``: one user's memory as MCP tools (the ``mcp`` extra), over stdio or streamable HTTP.

Tools: ``add_memory``, ``search_memory``, ``answer_from_memory``, ``list_memories``, ``delete_memory``.

Whose memories a tool touches is never one of its arguments, since the model writes those:

- stdio (and an in-process client): the server's ``user_id`` (``memagent mcp --user ana``);
- streamable HTTP: each request's bearer API key (``auth.py``) is checked, then the user is the
  server's ``user_id`` when set, else the one the ``X-Memagent-User`` header names (the client's
  configuration, not the model's), else the key's only user; the key must grant it. A request
  without a valid key gets 401, one for a user the key does not grant 403, before any tool runs.

The SDK ignores arguments a tool does not declare, so a model passing ``user_id`` changes nothing.
Tools are plain functions, which the SDK runs in worker threads: Memory calls stay off the event
loop. A ``MemagentError`` (bad input, unknown id, model failure) is the tool's error result,
naming the argument at fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from memagent._extras import require

require("mcp", "mcp")

from mcp.server import MCPServer  # noqa: E402
from mcp.server.mcpserver import Context  # noqa: E402
from mcp.server.mcpserver.exceptions import ToolError  # noqa: E402
from starlette.datastructures import Headers  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.types import ASGIApp, Receive, Scope, Send  # noqa: E402

from memagent.errors import InputError, MemagentError, RecordNotFound  # noqa: E402
from memagent.schema import Answer, Hit, MemoryRecord, validate_id  # noqa: E402
from memagent.serve.auth import OPEN, Forbidden, KeyRing, Unauthorized  # noqa: E402

if TYPE_CHECKING:
    from memagent.memory import Memory

USER_HEADER = "X-Memagent-User"
_USER = "memagent.user"  # the ASGI scope key the HTTP layer leaves the request's user under
INSTRUCTIONS = (
    "Long-term memory of one user's conversations. Search it before answering questions about the user's "
    "past; add what the user tells you that is worth remembering. Dates are ISO 8601 (UTC if no zone)."
)


def create_mcp_server(memory: Memory, *, user_id: str | None = None) -> MCPServer:
    """The five tools over ``memory``. ``user_id``: the user every call acts for; without it, each call
    must come through ``http_app``, which names the user of each request."""
    fixed = None if user_id is None else validate_id(user_id, "user_id")
    server: MCPServer = MCPServer("memagent", instructions=INSTRUCTIONS, log_level="WARNING")

    def whose(ctx: Context) -> str:
        scope = getattr(ctx.request_context.request, "scope", None)  # an HTTP request's, or None
        user = scope.get(_USER) if isinstance(scope, dict) else None
        if user is None and fixed is None:
            raise ToolError("this session has no user: start the server with --user, or connect over HTTP")
        return str(user or fixed)

    @server.tool()
    def add_memory(
        text: str, ctx: Context, session_id: str | None = None, timestamp: str | None = None
    ) -> list[MemoryRecord]:
        """Remember something the user said. ``session_id`` groups memories of one conversation; ``timestamp``
        is when it was said (default now). Returns the records stored (none if it was stored already)."""
        with _tool_errors(text="messages[0].content"):
            message = [{"role": "user", "content": text}]
            return memory.add(message, user_id=whose(ctx), session_id=session_id, timestamp=timestamp)

    @server.tool()
    def search_memory(query: str, ctx: Context, k: int | None = None, question_date: str | None = None) -> list[Hit]:
        """The ``k`` memories that best match ``query``, best first. ``question_date``: when the question is
        asked; memories from after it are left out, and "last week" counts back from it."""
        with _tool_errors():
            return memory.search(query, user_id=whose(ctx), k=k, question_date=question_date)

    @server.tool()
    def answer_from_memory(question: str, ctx: Context, question_date: str | None = None) -> Answer:
        """Answer a question from the memories with the local reader; ``refused`` is true when they do not
        hold the answer. ``citations`` are the ids of the memories used."""
        with _tool_errors(question="query"):
            return memory.answer(question, user_id=whose(ctx), question_date=question_date)

    @server.tool()
    def list_memories(ctx: Context, limit: int = 50) -> list[MemoryRecord]:
        """The ``limit`` most recent memories, oldest first."""
        with _tool_errors():
            if limit < 1:
                raise InputError("limit", f"must be a positive integer, got {limit}")
            return memory.get_all(user_id=whose(ctx))[-limit:]

    @server.tool()
    def delete_memory(memory_id: str, ctx: Context) -> str:
        """Forget one memory, by the id search_memory or list_memories gave."""
        with _tool_errors(memory_id="record_id"):
            memory.delete(memory_id, user_id=whose(ctx))
        return f"deleted {memory_id}"

    return server


@contextmanager
def _tool_errors(**renamed: str) -> Iterator[None]:
    """A MemagentError as the tool's error, naming the tool's argument: ``renamed`` maps an argument to
    the field Memory names for it (``text`` is ``messages[0].content`` of the one message added)."""
    fields = {memory_field: argument for argument, memory_field in renamed.items()}
    try:
        yield
    except RecordNotFound as exc:
        raise ToolError(f"{fields.get('record_id', 'id')}: no memory with id {exc.record_id!r}") from exc
    except InputError as exc:
        message = str(exc).removeprefix(f"{exc.field}: ")
        raise ToolError(f"{fields.get(exc.field, exc.field)}: {message}") from exc
    except MemagentError as exc:
        raise ToolError(str(exc)) from exc


# -- streamable HTTP -----------------------------------------------------------------------------
class _RequestUser:
    """ASGI middleware: authenticates each HTTP request by its API key and leaves the user it acts for
    in the scope, where the tools find it (see the module docstring)."""

    def __init__(self, app: ASGIApp, keys: KeyRing | None, user_id: str | None) -> None:
        self.app, self.keys, self.user_id = app, keys, user_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: the session manager starts and stops
            return await self.app(scope, receive, send)
        try:
            user = self.user_of(Headers(scope=scope))
        except (Unauthorized, Forbidden, InputError) as exc:
            status = 401 if isinstance(exc, Unauthorized) else 403 if isinstance(exc, Forbidden) else 400
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            response = JSONResponse({"error": {"message": str(exc)}}, status_code=status, headers=headers)
            return await response(scope, receive, send)
        return await self.app({**scope, _USER: user}, receive, send)

    def user_of(self, headers: Headers) -> str:
        grant = OPEN
        if self.keys is not None:
            scheme, _, key = headers.get("authorization", "").partition(" ")
            found = self.keys.grant(key.strip()) if scheme.lower() == "bearer" else None
            if found is None:
                raise Unauthorized()
            grant = found
        named = headers.get(USER_HEADER)
        if self.user_id is not None and named not in (None, self.user_id):
            raise Forbidden(USER_HEADER, named or "")  # this server serves one user only
        user = named or self.user_id or grant.only_user
        if user is None:
            raise InputError(USER_HEADER, "name the user this session acts for: this key may touch several")
        return grant.check(user, USER_HEADER)


def http_app(memory: Memory, *, user_id: str | None = None, keys: KeyRing | None = None, **options: Any) -> ASGIApp:
    """The tools over streamable HTTP at ``/mcp``, each request authenticated (module docstring).
    ``options`` go to the SDK's ``streamable_http_app`` (e.g. ``host``, for its DNS-rebinding guard)."""
    server = create_mcp_server(memory, user_id=user_id)
    return _RequestUser(server.streamable_http_app(**options), keys, user_id)
