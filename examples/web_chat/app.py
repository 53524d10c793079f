"""A chat page that remembers: pick a user, tell it things, ask about them in a later session.

    python examples/web_chat/app.py [--path FOLDER] [--model NAME] [--port 8010]

then open http://127.0.0.1:8010. One FastAPI app and one static page (static/index.html, no build step).
Answers stream from a packaged reader on llama.cpp (installed on first use); beside the chat, a panel
shows the memories each answer was given, with their dates, the ones it cited marked; a refusal (the
memories do not hold the answer) is shown as one. Every exchange is stored in the user's memories.

    GET  /api/sessions/new                 {"session_id": ...}: a new session
    GET  /api/memories?user_id=            the user's memories, oldest first
    POST /api/chat {user_id, session_id, message}
         NDJSON events, one a line: {"type": "memories", "memories": [...]}, {"type": "notes" | "answer",
         "text": more}, then {"type": "done", "text", "answer": {...} | null} or {"type": "error", "message"}
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # memory_chat.py, which the terminal chat shares

import uvicorn  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, StreamingResponse  # noqa: E402
from fastapi.staticfiles import StaticFiles  # noqa: E402
from memory_chat import DEFAULT_READER, Delta, Done, Recalled, memory_with_reader, reply  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from memagent import Memory, MemoryRecord  # noqa: E402
from memagent.errors import InputError, MemagentError  # noqa: E402


class ChatTurn(BaseModel):
    user_id: str
    session_id: str
    message: str


def as_json(record: MemoryRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "date": record.timestamp.isoformat(),
        "session_id": record.session_id,
        "text": record.value,
    }


def events(memory: Memory, turn: ChatTurn) -> Iterator[str]:
    """The reply as NDJSON lines. The response has begun before the reply can fail, so a failure is the
    last event rather than an HTTP status."""
    try:
        for event in reply(memory, turn.message, user_id=turn.user_id, session_id=turn.session_id):
            if isinstance(event, Recalled):
                line: dict[str, Any] = {"type": "memories", "memories": [as_json(r) for r in event.memories]}
            elif isinstance(event, Delta):
                line = {"type": event.part, "text": event.text}
            elif isinstance(event, Done):
                answer = None if event.answer is None else event.answer.model_dump()
                line = {"type": "done", "text": event.text, "answer": answer}
            yield json.dumps(line) + "\n"
    except MemagentError as exc:  # bad input (a blank message, a bad id) or a model failure
        yield json.dumps({"type": "error", "message": str(exc)}) + "\n"


def create_app(memory: Memory) -> FastAPI:
    app = FastAPI(title="memagent web chat")

    @app.exception_handler(InputError)
    async def bad_input(_: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/api/sessions/new")
    def new_session() -> dict[str, str]:
        return {"session_id": uuid.uuid4().hex}

    @app.get("/api/memories")
    def memories(user_id: str) -> list[dict[str, Any]]:
        return [as_json(r) for r in memory.get_all(user_id=user_id)]

    @app.post("/api/chat")
    def chat(turn: ChatTurn) -> StreamingResponse:
        # a sync iterator: Starlette runs it in worker threads, so the model never blocks the event loop
        return StreamingResponse(events(memory, turn), media_type="application/x-ndjson")

    app.mount("/", StaticFiles(directory=HERE / "static", html=True), name="page")
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="memagent_data/chat", help="the memory folder (default: %(default)s)")
    parser.add_argument("--model", default=DEFAULT_READER, help="the reader (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8010)
    args = parser.parse_args()
    memory = memory_with_reader(args.path, args.model)
    _ = memory.llm  # load the reader now, rather than at the first question
    uvicorn.run(create_app(memory), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
