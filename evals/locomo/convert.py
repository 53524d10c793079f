"""LoCoMo conversations as LongMemEval items, so the LongMemEval runner and scorer run LoCoMo as is.

LoCoMo (snap-research/LoCoMo) holds one long conversation between two people per sample, with
questions about it; LongMemEval holds one question per item, each with its own history. Each
LoCoMo question becomes one item whose history is the whole conversation:

- every turn of both speakers is memory, so each is a "user" turn "Speaker: text", with
  "[shares an image: caption]" when the turn shared a picture;
- turns named in the question's evidence carry has_answer (and every turn keeps its dia_id);
- sessions holding evidence get ids starting with "answer_", the official gold rule;
- the question is asked one day after the last session.

    python -m memagent_evals.locomo.convert locomo10.json locomo_lme.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from ..haystack import format_lme_date

QUESTION_TYPES = {1: "multi-hop", 2: "temporal-reasoning", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
ADVERSARIAL = 5  # the answer is not in the conversation: LongMemEval's abstention ("_abs") case
QUESTION_DELAY = timedelta(days=1)  # question asked this long after the last session

_SESSION_KEY = re.compile(r"session_(\d+)")
_DATE = re.compile(r"(\d{1,2}):(\d{2})\s*([ap])\.?\s*m\.?\s+(?:on\s+)?(\d{1,2})\s+([a-z]+)\.?,?\s*(\d{4})", re.I)
_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_DIA_ID = re.compile(r"D:?(\d+):(\d+)", re.I)


@dataclass
class ConversionStats:
    """What a conversion produced, for the caller to report."""

    questions: int = 0
    per_category: dict[int, int] = field(default_factory=dict)  # LoCoMo category -> questions
    evidence_turns_marked: int = 0  # has_answer turns summed over all items
    # (question_id, evidence id): ids that name no turn, or tokens that are no dia_id at all
    missing_evidence: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Session:
    number: int  # N of session_N
    date: datetime
    turns: list[dict]


@dataclass(frozen=True)
class _Conversation:
    sample_id: str
    sessions: list[_Session]
    dia_ids: frozenset[str]  # normalised ids of the turns that exist


def parse_locomo_date(text: str, key: str) -> datetime:
    """The time of a LoCoMo session stamp such as '1:56 pm on 8 May, 2023'; key names it in errors."""
    match = _DATE.fullmatch(str(text).strip())
    if match is None or match[5][:3].lower() not in _MONTHS or not 1 <= int(match[1]) <= 12:
        raise ValueError(f"{key}: unparseable date {text!r}")
    hour = int(match[1]) % 12 + (12 if match[3].lower() == "p" else 0)
    try:
        return datetime(int(match[6]), _MONTHS[match[5][:3].lower()], int(match[4]), hour, int(match[2]))
    except ValueError as exc:  # 31 June, minute 75 ...
        raise ValueError(f"{key}: unparseable date {text!r}") from exc


def normalise_dia_id(text: str) -> str | None:
    """'D3:7' for 'd3:07' or 'D:3:7'; None when the text is not a dia_id."""
    match = _DIA_ID.fullmatch(text.strip())
    return f"D{int(match[1])}:{int(match[2])}" if match else None


def parse_evidence(entries: Sequence[str]) -> tuple[list[str], list[str]]:
    """Normalised dia_ids named by a qa evidence list, and the tokens that are not dia_ids.

    Real entries may hold several ids ('D1:3 D1:5', 'D8:6; D9:17') or stray spaces ('D1: 3').
    """
    ids: list[str] = []
    junk: list[str] = []
    for entry in entries:
        text = re.sub(r"\s*:\s*", ":", str(entry))  # 'D1: 3' -> 'D1:3' before splitting on spaces
        text = re.sub(r"\b([Dd])\s+(?=[:\d])", r"\1", text)  # 'D 1:3' -> 'D1:3'
        for token in filter(None, re.split(r"[,;\s]+", text)):
            dia_id = normalise_dia_id(token)
            if dia_id is None:
                junk.append(token)
            else:
                ids.append(dia_id)
    return list(dict.fromkeys(ids)), junk


def _conversation(sample: dict) -> _Conversation:
    """The sample's sessions and turn ids; the gold rule forbids 'answer' in a plain session id."""
    sample_id = str(sample["sample_id"])
    if "answer" in sample_id:
        raise ValueError(f"sample_id {sample_id!r} contains 'answer'")
    sessions = _sessions(sample)
    if not sessions:
        raise ValueError(f"{sample_id}: no non-empty session")
    dia_ids = frozenset(normalise_dia_id(turn["dia_id"]) or turn["dia_id"] for s in sessions for turn in s.turns)
    return _Conversation(sample_id, sessions, dia_ids)


def _sessions(sample: dict) -> list[_Session]:
    """The sample's non-empty sessions in numeric order (session_10 after session_9)."""
    conversation = sample["conversation"]
    numbers = sorted(int(match[1]) for key in conversation if (match := _SESSION_KEY.fullmatch(key)))
    sessions = []
    for number in numbers:
        turns = conversation[f"session_{number}"]
        if not turns:
            continue
        key = f"session_{number}_date_time"
        label = f"{sample['sample_id']} {key}"
        if key not in conversation:
            raise ValueError(f"{label}: missing")
        sessions.append(_Session(number, parse_locomo_date(conversation[key], label), turns))
    return sessions


def _turn(turn: dict, evidence: set[str]) -> dict:
    """One LoCoMo turn as a LongMemEval user turn."""
    content = f"{turn['speaker']}: {turn.get('text', '')}"
    if turn.get("blip_caption"):
        content += f" [shares an image: {turn['blip_caption']}]"
    dia_id = turn["dia_id"]
    return {"role": "user", "content": content,
            "has_answer": (normalise_dia_id(dia_id) or dia_id) in evidence, "dia_id": dia_id}


def _question_id(sample_id: str, index: int, category: int) -> str:
    return f"{sample_id}_q{index:03d}" + ("_abs" if category == ADVERSARIAL else "")


def _answer(qa: dict, category: int) -> str:
    """The reference answer as text.

    An adversarial question has no answer in the conversation; LoCoMo's ``adversarial_answer`` is
    the tempting wrong one. LongMemEval's abstention judge reads ``answer`` as the explanation, so
    it says plainly that the right reply is to decline, and names the trap.
    """
    if category == ADVERSARIAL:
        trap = qa.get("adversarial_answer", qa.get("answer"))
        return "The conversation does not say; the right reply is that it is not known" + (
            f" (not: {trap})" if trap not in (None, "") else ""
        )
    return str(qa.get("answer", ""))


def _question_item(conversation: _Conversation, index: int, qa: dict, stats: ConversionStats) -> dict:
    """One LongMemEval item for the index-th question of a conversation; records what it marks in stats."""
    sample_id, sessions = conversation.sample_id, conversation.sessions
    category = int(qa["category"])
    if category not in QUESTION_TYPES:
        raise ValueError(f"{sample_id} qa[{index}]: unknown category {qa['category']!r}")
    question_id = _question_id(sample_id, index, category)
    wanted, junk = parse_evidence(qa.get("evidence") or [])
    absent = [dia_id for dia_id in wanted if dia_id not in conversation.dia_ids]
    stats.missing_evidence += [(question_id, token) for token in junk + absent]
    evidence = set(wanted)
    ids, turns = [], []
    for session in sessions:
        session_turns = [_turn(turn, evidence) for turn in session.turns]
        marked = sum(turn["has_answer"] for turn in session_turns)
        stats.evidence_turns_marked += marked
        ids.append(f"{'answer_' if marked else ''}{sample_id}_s{session.number}")
        turns.append(session_turns)
    stats.questions += 1
    stats.per_category[category] = stats.per_category.get(category, 0) + 1
    return {
        "question_id": question_id,
        "question_type": QUESTION_TYPES[category],
        "question": qa["question"],
        "answer": _answer(qa, category),
        "question_date": format_lme_date(sessions[-1].date + QUESTION_DELAY),
        "haystack_dates": [format_lme_date(session.date) for session in sessions],
        "haystack_session_ids": ids,
        "haystack_sessions": turns,
        "answer_session_ids": [session_id for session_id in ids if "answer" in session_id],
    }


def convert_locomo(samples: list[dict]) -> tuple[list[dict], ConversionStats]:
    """One LongMemEval item per LoCoMo question, in sample then qa order, with what was marked."""
    stats = ConversionStats()
    items = []
    for sample in samples:
        conversation = _conversation(sample)
        items += [_question_item(conversation, index, qa, stats) for index, qa in enumerate(sample["qa"])]
    return items, stats


def load_locomo(path: str | Path) -> list[dict]:
    """The samples of a LoCoMo JSON file (a list of samples as in snap-research/LoCoMo)."""
    samples = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(samples, list) or not samples:
        raise ValueError(f"{path}: expected a non-empty list of LoCoMo samples")
    for index, sample in enumerate(samples):
        if not isinstance(sample, dict):
            raise ValueError(f"{path}: sample {index} is not an object")
        absent = [key for key in ("sample_id", "conversation", "qa") if key not in sample]
        if absent:
            raise ValueError(f"{path}: sample {index} lacks {', '.join(absent)}")
    return samples


def convert_file(path: str | Path, out_path: str | Path) -> ConversionStats:
    """Convert a LoCoMo file into a LongMemEval-schema file (json.dump, indent=4, like the official)."""
    items, stats = convert_locomo(load_locomo(path))
    with Path(out_path).open("w", encoding="utf-8") as handle:
        json.dump(items, handle, indent=4)
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memagent_evals.locomo.convert",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("locomo", type=Path, help="LoCoMo JSON (list of samples)")
    parser.add_argument("out", type=Path, help="output, LongMemEval schema")
    args = parser.parse_args(argv)
    stats = convert_file(args.locomo, args.out)
    categories = ", ".join(f"{QUESTION_TYPES[c]} {n}" for c, n in sorted(stats.per_category.items()))
    print(f"{stats.questions} items ({categories}); {stats.evidence_turns_marked} evidence turns marked; "
          f"{len(stats.missing_evidence)} evidence ids missing", file=sys.stderr)
    for question_id, evidence_id in stats.missing_evidence:
        print(f"  missing: {question_id} {evidence_id}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
