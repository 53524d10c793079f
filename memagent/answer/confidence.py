"""How sure the reader is of an answer, and when that is too little to answer at all (R-Tuning).

R-Tuning (Zhang et al., NAACL 2024) scores an answer twice: by the model's likelihood of it (the
geometric mean of its tokens' probabilities, greedy) and by asking the model afterwards "Are you sure
you accurately answered the question ...? I am" and reading one next-token step,
p(sure) / (p(sure) + p(unsure)). Its confidence is the mean of the two.

Adapted to a memory-grounded chat reader: the question follows the reader's reply as the user's next
turn, the reply to it begins "I am", and "your internal knowledge" becomes "the memories above"
(``SURE_QUESTIONS`` keeps the original wording for comparison). The prompt and reply are what the
reader just computed, so a backend that keeps its KV cache (llama.cpp) adds only the ~25 tokens of
the question.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from memagent.llm.base import LLM, ChatMessages

SURE_QUESTIONS = {
    "memories": "Are you sure you accurately answered the question based on the memories above?",
    "internal": "Are you sure you accurately answered the question based on your internal knowledge?",  # R-Tuning's
}
LEAD = "I am"
SAME = 1e-4  # log-probabilities closer than this are one shared token scored twice


def answer_confidence(token_logprobs: Sequence[float], answer_tokens: int) -> float:
    """Geometric-mean probability of the answer's tokens, the last ``answer_tokens`` generated."""
    tail = list(token_logprobs)[-answer_tokens:] if answer_tokens > 0 else []
    if not tail:
        return 0.0
    return min(1.0, math.exp(sum(tail) / len(tail)))


def sure_messages(messages: ChatMessages, reply: str, wording: str = "memories") -> list[dict[str, str]]:
    """The reader's chat, its reply, and the question whether it is sure."""
    if wording not in SURE_QUESTIONS:
        raise ValueError(f"sure_probe: {wording!r} is not one of {sorted(SURE_QUESTIONS)}")
    return [
        *(dict(m) for m in messages),
        {"role": "assistant", "content": reply},
        {"role": "user", "content": SURE_QUESTIONS[wording]},
    ]


def sure_confidence(llm: LLM, messages: ChatMessages, reply: str, wording: str = "memories") -> float:
    """p(sure) / (p(sure) + p(unsure)) for the first token of each word after "I am" in the reply to
    the sure question: for BPE tokenizers the token with the leading space, as R-Tuning's; where the
    words share leading tokens (a byte-level tokenizer's space), the first token they differ in."""
    asked = sure_messages(messages, reply, wording)
    lead = len(llm.continuation_logprobs(asked, LEAD))
    sure = llm.continuation_logprobs(asked, f"{LEAD} sure")
    unsure = llm.continuation_logprobs(asked, f"{LEAD} unsure")
    # a token both words share has the same log-probability in both (to float noise between two calls)
    first = next((i for i in range(lead, min(len(sure), len(unsure))) if abs(sure[i] - unsure[i]) > SAME), None)
    if first is None:
        return 0.5
    return 1.0 / (1.0 + math.exp(unsure[first] - sure[first]))


def combined_confidence(prediction: float, sure: float) -> float:
    """R-Tuning's confidence: the mean of the answer's likelihood and the sure-probe."""
    return 0.5 * prediction + 0.5 * sure


# Refusal thresholds on c fitted on LoCoMo's training conversations with memagent's retrieval, by (reader,
# prompt, sure-probe wording), for the most right answers among thresholds that cost answerable questions at
# most 3 points (evals/results/README.md, "Refusal"). Other setups refuse in words only.
FITTED_THRESHOLDS: dict[tuple[str, str, str], float] = {
    # untuned: conv-26/30/41, 181 questions (refusal_locomo_train_qwen0.5b/thresholds.json)
    ("qwen2.5-coder-0.5b-instruct", "direct-first", "memories"): 0.799494,
    # R-Tuned on conv-26/30 (adapter rtuning-qwen0.5b-locomo-v2), fitted on conv-41, which it was not tuned on
    # (refusal_locomo_fit41_qwen0.5b_rtuning2/thresholds.json)
    ("qwen2.5-coder-0.5b-instruct+rtuning-qwen0.5b-locomo-v2", "direct-first", "memories"): 0.575056,
}


def fitted_threshold(model_name: str, prompt: str, wording: str) -> float | None:
    return FITTED_THRESHOLDS.get((model_name, prompt, wording))


def fit_threshold(
    confidences: Sequence[float], correct: Sequence[bool], unanswerable: Sequence[bool],
    max_answerable_drop: float | None = None,
) -> float:
    """The refusal threshold that makes the most final answers right on labelled questions.

    Below the threshold the reader refuses: right on a question the memories cannot answer, wrong on
    one they can. At or above it the answer stands as judged. ``max_answerable_drop``: only thresholds
    that cost the answerable questions at most this much accuracy (a reader that is rarely right would
    otherwise be told to refuse nearly everything). Ties go to the lowest threshold (refuse least);
    0.0 means never refuse on confidence."""
    if not len(confidences) == len(correct) == len(unanswerable):
        raise ValueError("confidences, correct and unanswerable must have one entry per question")
    answerable = max(1, sum(not u for u in unanswerable))

    def right(threshold: float) -> int:
        return sum((abstain if c < threshold else ok) for c, ok, abstain in zip(confidences, correct, unanswerable))

    def lost(threshold: float) -> float:  # answerable questions answered right, then refused
        return sum(c < threshold and ok and not u for c, ok, u in zip(confidences, correct, unanswerable)) / answerable

    candidates = [0.0, *sorted(set(confidences))]
    if max_answerable_drop is not None:
        candidates = [t for t in candidates if lost(t) <= max_answerable_drop + 1e-12]
    return max(candidates, key=lambda t: (right(t), -t))
