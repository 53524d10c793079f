"""Score a judge against human labels: how often does it agree, and how often does it say yes to a wrong answer?

A judged accuracy is only as good as its judge. The check set holds (question, reference, response)
triples with a careful human's verdict under LongMemEval's judging rules; a judge is run on each
through the very ``judge`` the QA runner uses, and its decisions are compared with the labels.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from memagent import InputError
from memagent.llm.base import LLM

from ..locomo.convert import QUESTION_TYPES as LOCOMO_TYPES
from ..longmemeval.judge import Judge, as_judge
from ..longmemeval.load import Item

CHECK_SET = Path(__file__).with_name("check_set.jsonl")
DEFAULT_RESULTS = Path("evals/results/judge_check")  # relative to the repository root, like the runner's --out
TRUSTED_AGREEMENT = 0.9
COMMAND = "python -m memagent_evals.judge_check --judge"

LONGMEMEVAL_TYPES = frozenset({"single-session-user", "single-session-assistant", "single-session-preference",
                               "multi-session", "temporal-reasoning", "knowledge-update"})
QUESTION_TYPES = LONGMEMEVAL_TYPES | frozenset(LOCOMO_TYPES.values())
Kind = Literal["exact", "paraphrase", "partial", "wrong-but-close", "off-by-one", "refusal-unanswerable",
               "refusal-answerable", "verbose-correct", "wrong-confident"]
KINDS: tuple[str, ...] = get_args(Kind)


class CheckTriple(BaseModel):
    """One judged case: a question, its reference (or rubric, or abstention explanation), a response, the verdict."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str = Field(min_length=1)
    question_type: str
    question: str = Field(min_length=1)
    reference: str = Field(min_length=1)
    response: str  # may be empty: an empty reply is a case too
    label: bool  # True: a careful human says the response is correct under LongMemEval's rules
    kind: Kind
    why: str = Field(min_length=1)
    abstention: bool = False  # unanswerable: judged with the abstention template


@dataclass(frozen=True)
class Decision:
    id: str
    kind: str
    label: bool
    judged: bool  # the judge's verdict

    @property
    def agrees(self) -> bool:
        return self.judged == self.label


@dataclass(frozen=True)
class KindScore:
    n: int
    agreement: float
    yes_rate: float


@dataclass
class JudgeCheck:
    """What one judge did on the check set."""

    judge: str
    n: int
    agreement: float  # share of triples where the judge matches the human label
    yes_rate_wrong: float | None  # share of wrong responses (label false) the judge accepted: lower is better
    yes_rate_correct: float | None  # share of correct responses the judge accepted: higher is better
    per_kind: dict[str, KindScore]
    seconds: float
    check_set_sha256: str
    decisions: list[Decision] = field(default_factory=list)

    @property
    def trusted(self) -> bool:
        return self.agreement >= TRUSTED_AGREEMENT


# --- the check set ---------------------------------------------------------------------------------------------

def load_check_set(path: str | Path | None = None) -> list[CheckTriple]:
    """Every triple of a JSONL check set (the packaged one by default); errors name the line and the field."""
    path = Path(path) if path is not None else CHECK_SET
    triples: list[CheckTriple] = []
    first_line: dict[str, int] = {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        triple = _parse_line(text, f"{path.name} line {number}")
        if triple.id in first_line:
            raise InputError(f"{path.name} line {number}: id", f"duplicate id {triple.id!r} (first on line "
                                                                f"{first_line[triple.id]})")
        first_line[triple.id] = number
        triples.append(triple)
    if not triples:
        raise InputError(str(path), "no triples")
    return triples


def _parse_line(text: str, where: str) -> CheckTriple:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(where, f"not JSON: {exc.msg}") from exc
    if not isinstance(raw, dict):
        raise InputError(where, f"expected a JSON object, got {type(raw).__name__}")
    try:
        triple = CheckTriple.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"]) or "line"
        raise InputError(f"{where}: field '{name}'", first["msg"]) from exc
    _check_rules(triple, where)
    return triple


def _check_rules(triple: CheckTriple, where: str) -> None:
    """Rules across fields: the judge would pick the wrong template otherwise."""
    if triple.question_type not in QUESTION_TYPES:
        raise InputError(f"{where}: field 'question_type'",
                         f"{triple.question_type!r} is not one of {sorted(QUESTION_TYPES)}")
    if (triple.kind == "refusal-unanswerable" or triple.question_type == "adversarial") and not triple.abstention:
        raise InputError(f"{where}: field 'abstention'", "unanswerable questions need \"abstention\": true")
    if triple.kind == "off-by-one" and triple.question_type != "temporal-reasoning":
        raise InputError(f"{where}: field 'question_type'", "off-by-one cases are temporal-reasoning questions "
                                                            "(only that template forgives off-by-one counts)")


def fingerprint(triples: list[CheckTriple]) -> str:
    """sha256 of the triples' content, saved with a result so a later reader can tell which set it was."""
    text = "\n".join(json.dumps(t.model_dump(), sort_keys=True) for t in triples)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- running a judge --------------------------------------------------------------------------------------------

def as_item(triple: CheckTriple) -> Item:
    """The triple as the LongMemEval item the QA judge reads; '_abs' in the id selects the abstention template."""
    return Item(question_id="judge-check" + ("_abs" if triple.abstention else ""),
                question_type=triple.question_type, question=triple.question, answer=triple.reference,
                question_date="", haystack_dates=[], haystack_session_ids=[], haystack_sessions=[],
                answer_session_ids=[])


def check_judge(judge: Judge | LLM, triples: list[CheckTriple], *, progress: bool = True) -> JudgeCheck:
    """Run ``judge`` (a model is judged with the official prompts) on every triple and compare its
    verdicts with the human labels."""
    decide = as_judge(judge)
    start = time.perf_counter()
    decisions = [
        Decision(t.id, t.kind, t.label, decide(as_item(t), t.response))
        for t in tqdm(triples, desc=f"judge check ({decide.name})", unit="triple", disable=not progress)
    ]
    return summarize(decide.name, decisions, time.perf_counter() - start, fingerprint(triples))


def summarize(judge_name: str, decisions: list[Decision], seconds: float, check_set_sha256: str) -> JudgeCheck:
    if not decisions:
        raise ValueError("no decisions to summarize")
    kinds = [k for k in KINDS if any(d.kind == k for d in decisions)]
    per_kind = {k: _kind_score([d for d in decisions if d.kind == k]) for k in kinds}
    return JudgeCheck(judge=judge_name, n=len(decisions), agreement=_agreement(decisions),
                      yes_rate_wrong=_yes_rate([d for d in decisions if not d.label]),
                      yes_rate_correct=_yes_rate([d for d in decisions if d.label]), per_kind=per_kind,
                      seconds=seconds, check_set_sha256=check_set_sha256, decisions=decisions)


def _agreement(decisions: list[Decision]) -> float:
    return sum(d.agrees for d in decisions) / len(decisions)


def _yes_rate(decisions: list[Decision]) -> float | None:
    return sum(d.judged for d in decisions) / len(decisions) if decisions else None


def _kind_score(decisions: list[Decision]) -> KindScore:
    return KindScore(n=len(decisions), agreement=_agreement(decisions), yes_rate=_yes_rate(decisions) or 0.0)


# --- results on disk --------------------------------------------------------------------------------------------

def safe_name(judge_name: str) -> str:
    """A file name for a judge: 'http://h:8000/v1#Qwen/Qwen2.5-7B' -> 'http_h_8000_v1_Qwen_Qwen2.5-7B'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", judge_name).strip("._") or "judge"


def to_json(check: JudgeCheck) -> dict[str, Any]:
    data = asdict(check)
    data["date"] = f"{datetime.now(tz=timezone.utc):%Y-%m-%d %H:%M} UTC"
    data["trusted"] = check.trusted
    data["decisions"] = {d.id: {"kind": d.kind, "label": d.label, "judged": d.judged} for d in check.decisions}
    return data


def markdown(check: JudgeCheck, triples: list[CheckTriple] | None = None) -> str:
    """The overall and per-kind table, then each disagreement (with the label's reason when triples are given)."""
    why = {t.id: t.why for t in triples or []}
    verdict = "trusted" if check.trusted else "not trusted"
    lines = [
        f"# Judge check: `{check.judge}`",
        "",
        f"- {check.n} triples (check set sha256 `{check.check_set_sha256[:12]}`), {check.seconds:.1f} s",
        f"- agreement with the human labels: **{check.agreement:.3f}** ({verdict}: the bar is {TRUSTED_AGREEMENT})",
        "",
        "| part | n | agreement | yes on correct | yes on wrong |",
        "|---|---:|---:|---:|---:|",
        f"| overall | {check.n} | {check.agreement:.3f} | {_rate(check.yes_rate_correct)} "
        f"| {_rate(check.yes_rate_wrong)} |",
    ]
    for kind, score in check.per_kind.items():
        correct, wrong = _split_yes_rates(check.decisions, kind)
        lines.append(f"| {kind} | {score.n} | {score.agreement:.3f} | {correct} | {wrong} |")
    wrong_calls = [d for d in check.decisions if not d.agrees]
    lines += ["", f"## Disagreements ({len(wrong_calls)})", ""]
    lines += [f"- `{d.id}` ({d.kind}): label {_yes_no(d.label)}, judge {_yes_no(d.judged)}"
              + (f"; {why[d.id]}" if d.id in why else "") for d in wrong_calls] or ["none"]
    return "\n".join(lines) + "\n"


def _split_yes_rates(decisions: list[Decision], kind: str) -> tuple[str, str]:
    of_kind = [d for d in decisions if d.kind == kind]
    return _rate(_yes_rate([d for d in of_kind if d.label])), _rate(_yes_rate([d for d in of_kind if not d.label]))


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def write_results(check: JudgeCheck, out: Path, triples: list[CheckTriple] | None = None) -> tuple[Path, Path]:
    """``<out>/<safe judge name>.json`` (aggregates and each decision by id) and ``.md``."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{safe_name(check.judge)}.json", out / f"{safe_name(check.judge)}.md"
    json_path.write_text(json.dumps(to_json(check), indent=1, ensure_ascii=False), encoding="utf-8")
    md_path.write_text(markdown(check, triples), encoding="utf-8")
    return json_path, md_path


# --- the warning ------------------------------------------------------------------------------------------------

def judge_agreement(judge_name: str, results_dir: str | Path = DEFAULT_RESULTS) -> float | None:
    """The agreement saved for this judge, or None when it was never checked (or the file is unreadable)."""
    path = Path(results_dir) / f"{safe_name(judge_name)}.json"
    try:
        agreement = json.loads(path.read_text(encoding="utf-8"))["agreement"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(agreement) if isinstance(agreement, (int, float)) else None


def warn_untrusted_judge(judge_name: str, *, spec: str | None = None,
                         results_dir: str | Path = DEFAULT_RESULTS) -> str | None:
    """A warning (printed to stderr, and returned) when the judge is unchecked or below the bar; None otherwise.

    stderr rather than ``warnings.warn``: the QA runner should say it every time, and the test suite
    turns warnings into errors.
    """
    agreement = judge_agreement(judge_name, results_dir)
    if agreement is not None and agreement >= TRUSTED_AGREEMENT:
        return None
    command = f"{COMMAND} {shlex.quote(spec or judge_name)} --out {shlex.quote(str(results_dir))}"
    if agreement is None:
        message = (f"judge {judge_name!r} has no judge-check result in {results_dir}: its QA accuracy is "
                   f"unverified (trusted at agreement >= {TRUSTED_AGREEMENT}). Check it: {command}")
    else:
        message = (f"judge {judge_name!r} agrees with the human labels on {agreement:.3f} of the judge-check set, "
                   f"below {TRUSTED_AGREEMENT}: its QA accuracy may be off. Re-check: {command}")
    print(f"warning: {message}", file=sys.stderr)
    return message
