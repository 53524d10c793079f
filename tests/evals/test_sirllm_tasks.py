"""SirLLM's task files read into episodes, and episodes streamed through the tiny model (data written here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from memagent_evals.sirllm.run import run_episode, totals
from memagent_evals.sirllm.tasks import RPS_FIRST, counter_most_frequent, episodes

from memagent.decay.chat import ChatTurns
from memagent.decay.streaming import CachePolicy, StreamingLM
from tests.llm.tiny import tiny_model, tiny_tokenizer


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def mcq(ident: str, stem: str, labels: str, answer: str) -> dict:
    return {"id": ident, "question": {"stem": stem, "choices": [{"label": c, "text": f"option {c}"} for c in labels]},
            "answerKey": answer}


def grocery_file(tmp_path: Path) -> Path:
    rows = []
    for episode, item in enumerate(("kiwis", "oat milk")):
        rows.append({"id": f"key_{episode}", "question": {"stem": f"Please buy [{item}]. ",
                                                          "choices": [{"text": "OK", "label": "A"}]}, "answerKey": "A"})
        rows += [mcq(str(episode), f"Puzzle {n}?", "ABCDE", "B") for n in range(3)]
        rows.append(mcq(f"answer_{episode}", "Which item did I ask for?", "ABCD", "C"))
    return write(tmp_path / "keys.jsonl", rows)


def test_grocery_episodes_with_and_without_distractors(tmp_path: Path) -> None:
    path = grocery_file(tmp_path)
    with_them = list(episodes("grocery", path))
    assert [[s.kind for s in e] for e in with_them] == [["key", *["commonsense"] * 3, "recall"]] * 2
    assert with_them[0][0].question == "Please buy [kiwis]." and with_them[0][0].choices == ("OK",)
    options = " ".join(f"({c}) option {c}" for c in "ABCDE")
    assert with_them[0][1].question == f"Puzzle 0? Choices:  {options}"
    assert with_them[0][-1].gold == 2
    assert [[s.kind for s in e] for e in episodes("grocery", path, distractors=False)] == [["key", "recall"]] * 2


def test_rps_rounds_reveal_the_user_s_last_move_and_outcomes_follow_the_reference(tmp_path: Path) -> None:
    moves = [("A", "B"), ("C", "A"), ("B", "C")]  # (user's move, the move that beats it)
    rows = [{"id": n, "question": {"stem": "play"}, "user_choice": u, "answerKey": g} for n, (u, g) in enumerate(moves)]
    write(tmp_path / "rock_paper_scissors_dominant_rock.jsonl", rows)
    (steps,) = list(episodes("rps", tmp_path))
    assert steps[0].question == RPS_FIRST and steps[1].question.startswith("I chose [rock].")
    assert steps[2].question.startswith("I chose [scissors].")
    assert [(s.gold, s.user_move) for s in steps] == [(1, 0), (0, 2), (2, 1)]
    stream = StreamingLM(tiny_model().eval(), CachePolicy("streaming", start=4, budget=200))
    row = run_episode(stream, ChatTurns(tiny_tokenizer()), steps, greedy_first=False)
    assert sum(row["rps"].values()) == 3 and row["counts"]["rps"][1] == 3
    assert row["counts"]["rps"][0] == row["rps"]["win"]
    assert stream.length <= 204


def test_the_no_model_rps_player_beats_the_most_frequent_move_in_its_window(tmp_path: Path) -> None:
    moves = "AAACC"  # rock, rock, rock, scissors, scissors
    rows = [{"id": n, "question": {"stem": "play"}, "user_choice": u, "answerKey": "BCA"["ABC".index(u)]}
            for n, u in enumerate(moves)]
    write(tmp_path / "rock_paper_scissors_dominant_rock.jsonl", rows)
    (steps,) = list(episodes("rps", tmp_path))
    # all moves: rock (nothing seen, a tie), paper, paper (wins), paper, paper (rock still leads: losses)
    assert counter_most_frequent(steps, None) == {"win": 2, "tie": 1, "lose": 2}
    # the last move only: the fifth round answers the fourth's scissors with rock, a win
    assert counter_most_frequent(steps, 1) == {"win": 3, "tie": 1, "lose": 1}


def test_dailydialog_episodes_split_by_dialogue(tmp_path: Path) -> None:
    rows = [mcq("0_1", "Hi there ?", "ABCD", "D"), mcq("0_3", "How are you ?", "ABCD", "A"),
            mcq("1_1", "Bye .", "ABCD", "B")]
    dialogues = list(episodes("dailydialog", write(tmp_path / "dailydialog.jsonl", rows)))
    assert [len(d) for d in dialogues] == [2, 1]
    assert dialogues[0][0].question.startswith("Choose the best response for the input: Hi there ? Choices:  (A)")


@torch.inference_mode()
def test_a_grocery_episode_streams_through_a_small_cache_and_totals_add_up(tmp_path: Path) -> None:
    stream = StreamingLM(tiny_model().eval(), CachePolicy("sirllm", start=4, budget=60, decay=0.9))
    turns = ChatTurns(tiny_tokenizer())
    rows = []
    for n, steps in enumerate(episodes("grocery", grocery_file(tmp_path))):
        row = run_episode(stream, turns, steps, greedy_first=True)
        assert row["counts"]["key"] == [1, 1]  # one choice: always right
        rows.append(row | {"episode": n, "seconds": 1.0, "evicted": 5})
        assert stream.length <= 64 + 60  # at most the cache and one turn
    result = totals(rows)
    assert result["recall"]["n"] == 2 and result["commonsense"]["n"] == 6 and result["episodes"] == 2
    assert 0.0 <= result["recall"]["accuracy"] <= 1.0
    assert result["seconds_per_step"] == pytest.approx(2 / 10)


def test_the_summary_shows_every_policy_journalled_with_the_same_setup(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from memagent_evals.cli import main

    import memagent.llm.load
    from tests.llm.tiny import tiny_llm

    monkeypatch.setattr(memagent.llm.load, "load_llm", lambda *_a, **_k: tiny_llm())
    data, out = grocery_file(tmp_path), tmp_path / "out"
    common = ["sirllm", "--task", "grocery", "--data", str(data), "--budget", "60", "--out", str(out)]
    assert main([*common, "--policies", "streaming"]) == 0
    assert main([*common, "--policies", "full", "--episodes", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["results"]) == ["full", "streaming"]  # the earlier run's policy too, in a fixed order
    assert summary["results"]["streaming"]["episodes"] == 1  # counted over this run's first episode only
    assert "| streaming | 1 |" in (out / "summary.md").read_text()
    (out / "summary.json").unlink()
    monkeypatch.setattr(memagent.llm.load, "load_llm", lambda *_a, **_k: pytest.fail("--report loads no model"))
    assert main([*common, "--report", "--model", "tiny-llama"]) == 0
    assert [(label, r["episodes"]) for label, r in json.loads((out / "summary.json").read_text())["results"].items()] \
        == [("full", 1), ("streaming", 2)]
    monkeypatch.setattr(memagent.llm.load, "load_llm", lambda *_a, **_k: tiny_llm())
    assert main([*common, "--policies", "sirllm", "--recent", "8"]) == 0  # recent tokens too: another setup
    assert list(json.loads((out / "summary.json").read_text())["results"]) == ["sirllm"]
    assert "cache 4 + 60 + 8 recent" in (out / "summary.md").read_text()
    assert json.loads((out / "sirllm.jsonl").read_text().splitlines()[0])["setup"]["policy"]["recent"] == 8
    # another dtype is another setup: the float32 journals are not in a bfloat16 table
    assert main([*common, "--report", "--model", "tiny-llama", "--dtype", "bfloat16"]) == 0
    assert json.loads((out / "summary.json").read_text())["results"] == {}
    assert "tiny-llama (bfloat16)" in (out / "summary.md").read_text()
