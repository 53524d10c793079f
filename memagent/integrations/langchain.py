"""LangChain on memagent: a retriever, a chat history that remembers, and memory tools.

    MemagentRetriever     ``BaseRetriever`` over ``Memory.search``: one ``Document`` per hit, best
                          first; its text is the record's value, its metadata the record's id,
                          session, timestamp (ISO 8601, UTC), ``why`` and score (sync and async)
    MemagentChatHistory   ``BaseChatMessageHistory``: the live session in ``messages``, and each
                          exchange (a user message and the reply after it) written into memagent
                          as one round of the session once the reply arrives
    memory_tools          save_memory, search_memory, answer_from_memory, forget_memory; their
                          ``user_id`` is an ``InjectedToolArg``: absent from the schema the model
                          sees, passed by the application with each call (``inject_user``), so a
                          model can never read or write another user's memories

Every object is bound to one ``Memory`` (an ``AsyncMemory`` is taken as its ``sync``); async
calls run the same code in a worker thread, as ``AsyncMemory`` does.
"""

# ruff: noqa: E402  (the imports after require() come after it, so a missing extra is named)
from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from memagent._extras import require

require("langchain", "langchain_core")

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall
from langchain_core.messages.tool import tool_call
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import BaseTool, InjectedToolArg, StructuredTool
from pydantic import ConfigDict, Field

from memagent.errors import InputError
from memagent.memory import MAX_K, AsyncMemory, Filters, Memory
from memagent.schema import (
    Hit,
    SearchFilters,
    coerce_filters,
    validate_id,
    validate_messages,
    validate_scope,
    validate_text,
)

UserId = Annotated[str, InjectedToolArg]  # the application's, never the model's: not in the tool-call schema
MAX_TOOL_K = 20  # the most memories one search_memory call may bring into the model's context


def _sync(memory: Memory | AsyncMemory) -> Memory:
    if isinstance(memory, AsyncMemory):
        return memory.sync
    if not isinstance(memory, Memory):
        raise InputError("memory", f"must be a memagent Memory or AsyncMemory, got {type(memory).__name__}")
    return memory


def _check_k(k: object, most: int = MAX_K) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= most:
        raise InputError("k", f"must be a positive integer, got {k!r:.80} (at most {most})")
    return k


# -- retriever -------------------------------------------------------------------------------
class MemagentRetriever(BaseRetriever):
    """The ``k`` memories of one user (narrowed to an agent or run when given) that best match a query.

    >>> retriever = MemagentRetriever(memory, user_id="ana", k=3)                # doctest: +SKIP
    >>> retriever.invoke("what is my dog called?")[0].metadata["session_id"]
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memory: Memory
    user_id: str
    agent_id: str | None = None
    run_id: str | None = None
    k: int = 5
    filters: SearchFilters | None = None

    def __init__(
        self,
        memory: Memory | AsyncMemory,
        /,
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        k: int = 5,
        filters: Filters = None,
        **kwargs: Any,
    ) -> None:
        # checked here, not by pydantic, so a bad field is memagent's InputError naming it
        validate_scope(user_id, agent_id, run_id)
        fields: dict[str, Any] = {  # a dict: mypy sees only BaseRetriever's own fields in its __init__
            "memory": _sync(memory),
            "user_id": user_id,
            "agent_id": agent_id,
            "run_id": run_id,
            "k": _check_k(k),
            "filters": None if filters is None else coerce_filters(filters),
        }
        super().__init__(**fields, **kwargs)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.memory.search(
            query, user_id=self.user_id, agent_id=self.agent_id, run_id=self.run_id, k=self.k, filters=self.filters
        )
        return [hit_document(hit) for hit in hits]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return await asyncio.to_thread(self._get_relevant_documents, query, run_manager=run_manager.get_sync())


def hit_document(hit: Hit) -> Document:
    """A search hit as a LangChain ``Document`` (JSON-safe metadata: the timestamp is ISO 8601)."""
    record = hit.record
    metadata = {
        "id": record.id,
        "user_id": record.user_id,
        "agent_id": record.agent_id,
        "run_id": record.run_id,
        "session_id": record.session_id,
        "round_index": record.round_index,
        "timestamp": record.timestamp.isoformat(),
        "score": hit.score,
        "why": dict(hit.why),
        "record_metadata": dict(record.metadata),
    }
    return Document(page_content=record.value, metadata=metadata, id=record.id)


# -- chat history ----------------------------------------------------------------------------
class MemagentChatHistory(BaseChatMessageHistory):
    """One session of one user: ``messages`` is the live session; memagent keeps every exchange.

    A user message is held until a reply (or the next user message) follows it, then written with
    its reply as one round of ``session_id`` (memagent continues the session's round index), so
    ``add_user_message`` + ``add_ai_message``, one ``add_messages`` call per exchange, and
    ``RunnableWithMessageHistory`` (deprecated in langchain-core 1.x for LangGraph's persistence)
    all store whole exchanges. System and tool
    messages, and AI messages that say nothing (a tool call), stay in ``messages`` and are not
    remembered. ``clear`` ends the live session; what memagent keeps stays (``Memory.delete_all``
    forgets it).
    """

    def __init__(
        self,
        memory: Memory | AsyncMemory,
        /,
        *,
        user_id: str,
        session_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        self.memory = _sync(memory)
        self.scope = validate_scope(user_id, agent_id, run_id)
        self.session_id = uuid.uuid4().hex if session_id is None else validate_id(session_id, "session_id")
        self._live: list[BaseMessage] = []
        self._unsaved: list[dict[str, str]] = []  # user/assistant turns waiting for the reply that ends them
        self._lock = threading.Lock()

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]  # a copy: callers cannot change the session
        return list(self._live)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Add to the live session and write each completed exchange; bad input changes neither."""
        if isinstance(messages, (str, bytes, BaseMessage)) or not isinstance(messages, Sequence):
            raise InputError("messages", f"must be a list of LangChain messages, got {type(messages).__name__}")
        turns = [_turn(m, f"messages[{i}]") for i, m in enumerate(messages)]
        # checked against the caller's list, so an error names the caller's index; system = not remembered
        validate_messages(turns, max_chars=self.memory.config.max_message_chars)
        with self._lock:
            unsaved = self._unsaved + [t for t in turns if t["role"] != "system"]
            # every round but a last user message still waiting for its reply is whole: write those
            waiting = unsaved[-1:] if unsaved and unsaved[-1]["role"] == "user" else []
            whole = unsaved[: len(unsaved) - len(waiting)]
            if whole:
                scope = self.scope
                self.memory.add(
                    whole,
                    user_id=scope.user_id,
                    agent_id=scope.agent_id,
                    run_id=scope.run_id,
                    session_id=self.session_id,
                )
            self._unsaved = waiting
            self._live.extend(messages)

    def clear(self) -> None:
        with self._lock:
            self._live, self._unsaved = [], []


def _turn(message: object, field: str) -> dict[str, str]:
    """A LangChain message as memagent's ``{"role", "content"}``; ``system`` for what is not remembered."""
    if not isinstance(message, BaseMessage):
        raise InputError(
            field, f"must be a LangChain message (HumanMessage, AIMessage, ...), got {type(message).__name__}"
        )
    text = message.text
    if isinstance(message, HumanMessage):
        return {"role": "user", "content": text}
    if isinstance(message, AIMessage) and text.strip():
        return {"role": "assistant", "content": text}
    return {"role": "system", "content": ""}  # memagent drops system turns; the index still matches the caller's


# -- tools -----------------------------------------------------------------------------------
def memory_tools(
    memory: Memory | AsyncMemory, /, *, agent_id: str | None = None, run_id: str | None = None
) -> list[BaseTool]:
    """save_memory, search_memory, answer_from_memory and forget_memory on ``memory``.

    The model chooses the text, query, question or id; the application gives ``user_id`` with
    every call (``tool.invoke({..., "user_id": user})``, or ``inject_user`` on a model's tool call)
    and fixes ``agent_id``/``run_id`` here. Each tool returns JSON text for the model.
    """
    sync = _sync(memory)
    for name, value in (("agent_id", agent_id), ("run_id", run_id)):
        if value is not None:
            validate_id(value, name)

    def save_memory(text: str, user_id: UserId) -> str:
        """Remember something the user said or asked you to keep, for later conversations."""
        _check_text(text, "text", sync.config.max_message_chars)
        records = sync.add([{"role": "user", "content": text}], user_id=user_id, agent_id=agent_id, run_id=run_id)
        return json.dumps({"saved": [r.id for r in records]})

    def search_memory(query: str, user_id: UserId, k: Annotated[int, Field(ge=1, le=MAX_TOOL_K)] = 5) -> str:
        """Find the user's memories that best match the query, best first, with their dates and ids."""
        hits = sync.search(query, user_id=user_id, agent_id=agent_id, run_id=run_id, k=_check_k(k, MAX_TOOL_K))
        found = [
            {"id": h.record.id, "date": h.record.timestamp.date().isoformat(), "text": h.record.value} for h in hits
        ]
        return json.dumps(found, ensure_ascii=False)

    def answer_from_memory(question: str, user_id: UserId) -> str:
        """Answer a question about the user from their memories; refused is true when they do not say."""
        _check_text(question, "question", sync.config.max_query_chars)
        answer = sync.answer(question, user_id=user_id, agent_id=agent_id, run_id=run_id)
        return json.dumps(
            {
                "answer": answer.text,
                "refused": answer.refused,
                "confidence": round(answer.confidence, 3),
                "citations": answer.citations,
            },
            ensure_ascii=False,
        )

    def forget_memory(memory_id: str, user_id: UserId) -> str:
        """Forget one of the user's memories by its id (from search_memory), when the user asks you to."""
        sync.delete(validate_id(memory_id, "memory_id"), user_id=user_id)
        return json.dumps({"forgot": memory_id})

    return [_tool(f) for f in (save_memory, search_memory, answer_from_memory, forget_memory)]


def _check_text(value: object, field: str, limit: int) -> None:
    """The tool's own argument named, where Memory would name its parameter (messages[0].content, query)."""
    text = validate_text(value, field)
    if not text.strip():
        raise InputError(field, f"must be a non-empty string, got {text!r:.80}")
    if len(text) > limit:
        raise InputError(field, f"has {len(text)} characters, over the limit of {limit}")


def _tool(function: Callable[..., str]) -> StructuredTool:
    """``function`` as a tool, its async form run in a worker thread (as ``AsyncMemory`` does)."""

    async def run(**kwargs: Any) -> str:
        return await asyncio.to_thread(function, **kwargs)

    return StructuredTool.from_function(func=function, coroutine=run)


def inject_user(call: ToolCall | Mapping[str, Any], user_id: str) -> ToolCall:
    """A model's tool call with the application's ``user_id``; a ``user_id`` the model wrote is replaced."""
    args = {**call["args"], "user_id": validate_id(user_id, "user_id")}
    return tool_call(name=call["name"], args=args, id=call.get("id"))


__all__ = ["MemagentChatHistory", "MemagentRetriever", "hit_document", "inject_user", "memory_tools"]
