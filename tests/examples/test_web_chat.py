"""examples/web_chat/app.py: its routes, in process, on a real Memory with a scripted reader."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from web_chat.app import create_app

from tests.examples.scripted import FACT, StreamingLLM, reader_reply


@pytest.fixture
def client(make_memory) -> TestClient:
    with TestClient(create_app(make_memory(llm=StreamingLLM(reader_reply)))) as client:
        yield client


def chat(client: TestClient, message: str, session_id: str, user_id: str = "ana") -> list[dict]:
    response = client.post("/api/chat", json={"user_id": user_id, "session_id": session_id, "message": message})
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in response.text.splitlines()]


def new_session(client: TestClient) -> str:
    return client.get("/api/sessions/new").json()["session_id"]


def test_the_page_and_its_files_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'id="messages"' in page.text and 'src="chat.js"' in page.text
    assert "function send" in client.get("/chat.js").text
    assert client.get("/style.css").headers["content-type"].startswith("text/css")


def test_each_new_session_has_its_own_id(client: TestClient) -> None:
    assert len({new_session(client) for _ in range(3)}) == 3


def test_a_fact_is_noted_and_listed_with_its_date_and_session(client: TestClient) -> None:
    session = new_session(client)
    events = chat(client, FACT, session)
    assert events[-1] == {"type": "done", "text": "Noted. I'll remember that.", "answer": None}
    [memory] = client.get("/api/memories", params={"user_id": "ana"}).json()
    assert memory["session_id"] == session and memory["text"].startswith(f"user: {FACT}\n")
    assert datetime.fromisoformat(memory["date"]).tzinfo is not None  # the page shows it in local time
    assert client.get("/api/memories", params={"user_id": "bob"}).json() == []


def test_a_question_in_a_new_session_streams_and_cites_the_memory(client: TestClient) -> None:
    chat(client, FACT, new_session(client))
    [fact] = client.get("/api/memories", params={"user_id": "ana"}).json()
    events = chat(client, "Where does my sister live?", new_session(client))
    assert events[0] == {"type": "memories", "memories": [fact]}
    assert "".join(e["text"] for e in events if e["type"] == "answer") == "Porto"
    assert len([e for e in events if e["type"] in ("notes", "answer")]) > 2  # pieces, not one block
    done = events[-1]
    assert (done["type"], done["text"], done["answer"]["refused"]) == ("done", "Porto", False)
    assert done["answer"]["citations"] == [fact["id"]]


def test_a_refusal_is_marked_as_one(client: TestClient) -> None:
    chat(client, "I work from home on Fridays.", new_session(client))
    [fridays] = client.get("/api/memories", params={"user_id": "ana"}).json()
    done = chat(client, "What is my blood type?", new_session(client))[-1]
    assert (done["text"], done["answer"]["refused"], done["answer"]["citations"]) == (
        "I don't know.",
        True,
        [fridays["id"]],
    )


def test_bad_input_ends_the_stream_with_an_error_event(client: TestClient) -> None:
    assert chat(client, "   ", new_session(client)) == [
        {"type": "error", "message": "message: is empty: say something"}
    ]
    [error] = chat(client, "Where?", "bad\nsession")
    assert error["type"] == "error" and error["message"].startswith("session_id: must not contain control")
    assert client.get("/api/memories", params={"user_id": "ana"}).json() == []


def test_a_request_missing_a_field_or_a_user_is_refused(client: TestClient) -> None:
    assert client.post("/api/chat", json={"user_id": "ana", "message": "hi"}).status_code == 422
    response = client.get("/api/memories", params={"user_id": " "})
    assert response.status_code == 422 and response.json()["detail"].startswith("user_id: must be a non-empty")
