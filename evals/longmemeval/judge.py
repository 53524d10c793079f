"""QA scoring: LongMemEval's judge prompts per question type, plus token F1 and exact match.

The judge templates are the benchmark's own (src/evaluation/evaluate_qa.py, MIT licence), kept
word for word because they are part of the metric: a paraphrase would measure something else.
"""

from __future__ import annotations

import re
import string
from collections import Counter

from memagent.llm.base import LLM

from .load import Item

_CHECK = (
    "I will give you a question, a correct answer, and a response from a model. Please answer yes if the response "
    "contains the correct answer. Otherwise, answer no. If the response is equivalent to the correct answer or "
    "contains all the intermediate steps to get the correct answer, you should also answer yes. If the response only "
    "contains a subset of the information required by the answer, answer no. "
)
_TAIL = (
    "\n\nQuestion: {}\n\nCorrect Answer: {}\n\nModel Response: {}\n\n"
    "Is the model response correct? Answer yes or no only."
)
TEMPLATES = {
    "default": _CHECK + _TAIL,
    "temporal-reasoning": _CHECK
    + "In addition, do not penalize off-by-one errors for the number of days. If the question asks for the number "
    "of days/weeks/months, etc., and the model makes off-by-one errors (e.g., predicting 19 days when the answer is "
    "18), the model's response is still correct. " + _TAIL,
    "knowledge-update": "I will give you a question, a correct answer, and a response from a model. Please answer "
    "yes if the response contains the correct answer. Otherwise, answer no. If the response contains some previous "
    "information along with an updated answer, the response should be considered as correct as long as the updated "
    "answer is the required answer." + _TAIL,
    "single-session-preference": "I will give you a question, a rubric for desired personalized response, and a "
    "response from a model. Please answer yes if the response satisfies the desired response. Otherwise, answer no. "
    "The model does not need to reflect all the points in the rubric. The response is correct as long as it recalls "
    "and utilizes the user's personal information correctly.\n\nQuestion: {}\n\nRubric: {}\n\nModel Response: {}\n\n"
    "Is the model response correct? Answer yes or no only.",
    "abstention": "I will give you an unanswerable question, an explanation, and a response from a model. Please "
    "answer yes if the model correctly identifies the question as unanswerable. The model could say that the "
    "information is incomplete, or some other information is given but the asked information is not.\n\n"
    "Question: {}\n\nExplanation: {}\n\nModel Response: {}\n\nDoes the model correctly identify the question as "
    "unanswerable? Answer yes or no only.",
}


def judge_prompt(item: Item, hypothesis: str) -> str:
    """The official prompt for the item's type; LoCoMo's types use the generic check."""
    if item.is_abstention:
        template = TEMPLATES["abstention"]
    else:
        template = TEMPLATES.get(item.question_type, TEMPLATES["default"])
    return template.format(item.question, item.answer, hypothesis)


def judge(llm: LLM, item: Item, hypothesis: str) -> bool:
    """The official decision rule: correct when the judge's reply contains 'yes'."""
    reply = llm.generate([{"role": "user", "content": judge_prompt(item, hypothesis)}], max_new_tokens=10)
    return "yes" in reply.text.lower()


def normalize(text: str) -> list[str]:
    """SQuAD's answer normalisation: lower case, no punctuation or articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    predicted, expected = normalize(prediction), normalize(reference)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)
