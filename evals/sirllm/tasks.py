"""SirLLM's three streaming tasks as episodes of multiple-choice turns (data: Zoeyyao27/SirLLM, data/).

The memory (the cache) is reset between episodes: per grocery item, per DailyDialog dialogue, per
rock-paper-scissors file. Questions are written as the reference code writes them (its double
spaces included); the reference additionally wraps each question in "USER: ...\\n\\nASSISTANT: "
inside the chat template for SirLLM and not for its baseline: here every policy reads the same
chat turns, written by the model's own chat template.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASKS = ("grocery", "dailydialog", "rps")
RPS_MOVES = ("rock", "paper", "scissors")
RPS_FIRST = "Let's play a game of Rock-Paper-Scissors. Choose one option from: (A) rock (B) paper (C) scissors. "
RPS_NEXT = ("I chose [{move}]. Analyze my preferences to maximize your winning rate and proceed to the next round. "
            "Choices: (A) rock (B) paper (C) scissors. You choose:")


@dataclass(frozen=True)
class Step:
    """One turn: the user's text, the answers to choose from (letters), the right one's index."""

    kind: str  # grocery: key | commonsense | recall; dialogue; rps
    question: str
    choices: tuple[str, ...]
    gold: int
    user_move: int | None = None  # rps: the user's move this round (revealed next round)


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _with_choices(stem: str, choices: list[dict[str, str]], lead: str = "") -> tuple[str, tuple[str, ...]]:
    text = lead + stem.strip() + " Choices: " + "".join(f" ({c['label']}) {c['text']}" for c in choices)
    return text, tuple(c["label"] for c in choices)


def grocery(path: Path, distractors: bool = True) -> Iterator[list[Step]]:
    """Episodes: the item to buy, ~20 commonsense questions (``distractors`` False: none), the recall question."""
    episode: list[Step] = []
    for row in _rows(path / "keys.jsonl" if path.is_dir() else path):
        question, ident = row["question"], str(row["id"])
        if ident.startswith("key_"):
            if episode:
                yield episode
            episode = [Step("key", question["stem"].strip(), ("OK",), 0)]
            continue
        text, labels = _with_choices(question["stem"], question["choices"])
        kind = "recall" if ident.startswith("answer_") else "commonsense"
        if kind == "recall" or distractors:
            episode.append(Step(kind, text, labels, labels.index(row["answerKey"])))
    if episode:
        yield episode


def dailydialog(path: Path) -> Iterator[list[Step]]:
    """Episodes: one dialogue each, a step per turn to respond to."""
    episode: list[Step] = []
    current = None
    for row in _rows(path / "dailydialog.jsonl" if path.is_dir() else path):
        dialogue = str(row["id"]).split("_")[0]
        if dialogue != current and episode:
            yield episode
            episode = []
        current = dialogue
        text, labels = _with_choices(row["question"]["stem"], row["question"]["choices"],
                                     lead="Choose the best response for the input: ")
        episode.append(Step("dialogue", text, labels, labels.index(row["answerKey"])))
    if episode:
        yield episode


def rps(path: Path) -> Iterator[list[Step]]:
    """Episodes: one per file of rounds; each round's prompt tells the model the user's last move."""
    files = sorted(path.glob("rock_paper_scissors_dominant_*.jsonl")) if path.is_dir() else [path]
    labels = ("A", "B", "C")
    for file in files:
        steps, last = [], None
        for row in _rows(file):
            question = RPS_FIRST if last is None else RPS_NEXT.format(move=RPS_MOVES[labels.index(last)])
            gold, user_move = labels.index(row["answerKey"]), labels.index(row["user_choice"])
            steps.append(Step("rps", question, labels, gold, user_move))
            last = row["user_choice"]
        yield steps


def rps_outcome(pick: int, step: Step) -> str:
    """'win', 'tie' or 'lose' for the model's move ``pick`` against the user's in this round."""
    return "win" if pick == step.gold else "tie" if pick == step.user_move else "lose"


def counter_most_frequent(steps: Sequence[Step], window: int | None) -> dict[str, int]:
    """Win/tie/lose of a player with no model: the move that beats the user's most frequent of the last
    ``window`` moves (all moves when None; rock on the first round). What a cache of that many rounds
    could give a reader that used it."""
    outcome = {"win": 0, "tie": 0, "lose": 0}
    seen: list[int] = []
    for step in steps:
        assert step.user_move is not None, "rps steps only"
        recent = Counter(seen[-window:] if window else seen)
        pick = (recent.most_common(1)[0][0] + 1) % 3 if recent else 0  # rock < paper < scissors < rock
        outcome[rps_outcome(pick, step)] += 1
        seen.append(step.user_move)
    return outcome


def episodes(task: str, path: Path, distractors: bool = True) -> Iterator[list[Step]]:
    if task == "grocery":
        return grocery(path, distractors)
    if task == "dailydialog":
        return dailydialog(path)
    if task == "rps":
        return rps(path)
    raise ValueError(f"task: {task!r} is not one of {TASKS}")
