"""A LangGraph agent with long-term memory, all local: memagent is searched before each reply and
the exchange is saved after it, so a later session (a new thread, an empty state) still knows.

    START -> recall -> reply -> remember -> END

    recall    MemagentRetriever: the user's memories that best match the last message
    reply     memagent's local LLM (a packaged GGUF on llama.cpp), given the memories and the thread
    remember  MemagentChatHistory: the question and the reply, one round of the session

The thread (short-term memory) is LangGraph's checkpointer; the user and session come in the run's
context, chosen by the application, never by the model.

    pip install 'memagent[langchain,llama]'
    memagent models install qwen2.5-coder-0.5b-instruct
    python examples/langgraph_agent.py [--model smollm2-135m-instruct] [--path memagent_data/langgraph_agent]
"""

from __future__ import annotations

import argparse
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from memagent import LLM, Memory, MemoryConfig, ReaderConfig
from memagent.integrations.langchain import MemagentChatHistory, MemagentRetriever

SYSTEM = (
    "You are a friendly assistant with a long-term memory. Use what you remember about the user when it "
    "helps, and say so when you do not know. Answer in one or two sentences.\n\nWhat you remember:\n"
)
# two sessions: the second starts a new thread, so only memagent can bring back what the first said
SESSIONS = [
    ["Hi! I just adopted a greyhound called Pixel.", "I'm allergic to peanuts, so I cook without them."],
    ["What is my dog called?", "Can you suggest a snack I could bake this weekend?"],
]


@dataclass(frozen=True)
class Context:
    """Who is speaking, from the application (a login, a request), never from the model."""

    user_id: str
    session_id: str


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    memories: list[Document]


def build_agent(memory: Memory, llm: LLM, *, k: int = 3, max_new_tokens: int = 96) -> CompiledStateGraph[Any, Any]:
    """The graph above; ``InMemorySaver`` keeps each thread's messages, memagent everything after."""

    def recall(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        retriever = MemagentRetriever(memory, user_id=runtime.context.user_id, k=k)
        return {"memories": retriever.invoke(state["messages"][-1].text)}

    def reply(state: State) -> dict[str, Any]:
        remembered = "\n".join(f"- {d.metadata['timestamp'][:10]}: {d.page_content}" for d in state["memories"])
        chat = [{"role": "system", "content": SYSTEM + (remembered or "(nothing yet)")}]
        chat += [{"role": "user" if m.type == "human" else "assistant", "content": m.text} for m in state["messages"]]
        text = llm.generate(chat, max_new_tokens=max_new_tokens).text.strip()
        return {"messages": [AIMessage(text or "(no reply)")]}

    def remember(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        user, session = runtime.context.user_id, runtime.context.session_id
        MemagentChatHistory(memory, user_id=user, session_id=session).add_messages(state["messages"][-2:])
        return {}

    graph = StateGraph(State, context_schema=Context)
    graph.add_node("recall", recall)
    graph.add_node("reply", reply)
    graph.add_node("remember", remember)
    graph.add_edge(START, "recall")
    graph.add_edge("recall", "reply")
    graph.add_edge("reply", "remember")
    graph.add_edge("remember", END)
    return graph.compile(checkpointer=InMemorySaver())


def chat(agent: CompiledStateGraph[Any, Any], user_id: str, sessions: list[list[str]]) -> list[dict[str, Any]]:
    """Each session a thread of its own; prints every turn with the memories it recalled."""
    results: list[dict[str, Any]] = []  # the state after each turn
    for number, messages in enumerate(sessions, start=1):
        session = f"session-{number}-{uuid.uuid4().hex[:8]}"
        print(f"--- session {session} (a new thread: the graph's state starts empty)")
        for text in messages:
            state = agent.invoke(
                {"messages": [HumanMessage(text)]},
                config={"configurable": {"thread_id": session}},
                context=Context(user_id=user_id, session_id=session),
            )
            results.append(state)
            print(f"user: {text}")
            for doc in state["memories"]:
                print(f"   recalled {doc.metadata['session_id']}: {doc.page_content.splitlines()[0]}")
            print(f"assistant: {state['messages'][-1].text}\n")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="a packaged reader, GGUF or URL")
    parser.add_argument("--path", default="memagent_data/langgraph_agent", help="the memagent store folder")
    parser.add_argument("--user", default="maya")
    args = parser.parse_args(argv)
    memory = Memory(MemoryConfig(reader=ReaderConfig(model=args.model)), path=args.path)
    memory.delete_all(user_id=args.user)  # start fresh each run
    chat(build_agent(memory, memory.llm), args.user, SESSIONS)
    print(f"memagent now holds {len(memory.get_all(user_id=args.user))} rounds of {args.user}'s.")


if __name__ == "__main__":
    main()
