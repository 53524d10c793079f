from memagent_evals.longmemeval.judge import exact_match, judge, judge_prompt, normalize, token_f1
from memagent_evals.longmemeval.load import Item

from memagent import ScriptedLLM


def item(qtype: str, qid: str = "q1") -> Item:
    return Item(question_id=qid, question_type=qtype, question="How many days?", answer="18 days",
                question_date="2023/05/01 (Mon) 10:00", haystack_dates=[], haystack_session_ids=[],
                haystack_sessions=[], answer_session_ids=[])


def test_the_prompt_follows_the_question_type() -> None:
    assert "do not penalize off-by-one errors" in judge_prompt(item("temporal-reasoning"), "19 days")
    assert "updated answer" in judge_prompt(item("knowledge-update"), "x")
    assert "Rubric: 18 days" in judge_prompt(item("single-session-preference"), "x")
    assert "identifies the question as unanswerable" in judge_prompt(item("temporal-reasoning", "q1_abs"), "x")
    generic = judge_prompt(item("multi-hop"), "19 days")  # LoCoMo types get the generic check
    assert "off-by-one" not in generic and "Correct Answer: 18 days" in generic and "Model Response: 19 days" in generic


def test_the_official_decision_rule_is_yes_anywhere_in_the_reply() -> None:
    assert judge(ScriptedLLM("Yes."), item("multi-session"), "18")
    assert not judge(ScriptedLLM("No"), item("multi-session"), "18")


def test_f1_and_exact_match_on_hand_cases() -> None:
    assert normalize("The Greyhound, Pixel!") == ["greyhound", "pixel"]
    assert exact_match("the Pixel.", "pixel") == 1.0
    assert exact_match("Pixel the dog", "Pixel") == 0.0
    # prediction [pixel, my, greyhound] vs reference [greyhound, pixel]: 2 common
    # precision 2/3, recall 2/2 -> f1 = 2 * (2/3 * 1) / (2/3 + 1) = 0.8
    assert abs(token_f1("Pixel, my greyhound", "a greyhound Pixel") - 0.8) < 1e-9
    assert token_f1("Rex", "Pixel") == 0.0


def asked(answer: str, qtype: str = "single-session-user", qid: str = "q1") -> Item:
    return item(qtype, qid).model_copy(update={"answer": answer})


def test_the_rules_decide_what_the_prompts_state_and_leave_the_rest() -> None:
    from memagent_evals.longmemeval.judge import rule_decision

    unanswerable = asked("Not in the conversation (not: Lisbon)", "multi-hop", "q1_abs")
    assert rule_decision(unanswerable, "That isn't mentioned anywhere.") is True
    assert rule_decision(unanswerable, "You flew to Lisbon.") is False  # an invented answer
    assert rule_decision(asked("Lisbon"), "I don't have any record of that.") is False  # declined an answerable one
    days = asked("18 days", "temporal-reasoning")
    assert rule_decision(days, "It took nineteen days.") is True  # off by one: right, per the temporal template
    assert rule_decision(days, "20 days") is False
    assert rule_decision(asked("18 days", "multi-session"), "19 days") is None  # no tolerance outside temporal
    assert rule_decision(asked("a greyhound"), "Your dog is a greyhound called Pixel.") is True
    assert rule_decision(asked("Elsa and Jonah"), "Elsa.") is False  # a subset of the answer
    assert rule_decision(asked("Elsa and Jonah"), "Jonah and Elsa") is True
    assert rule_decision(asked("October 14"), "October 4") is None  # a near miss: the model's call
    assert rule_decision(asked("wants quiet places", "single-session-preference"), "wants quiet places") is None


def test_a_rule_first_judge_asks_the_model_only_when_the_rules_leave_it_open() -> None:
    from memagent_evals.longmemeval.judge import RuleFirstJudge, load_judge

    model = ScriptedLLM("yes", name="m")
    decide = RuleFirstJudge(model)
    assert decide.name == "rules+m"
    assert decide(asked("a greyhound"), "a greyhound") and not model.calls
    assert decide(asked("October 14"), "October 4") and len(model.calls) == 1  # the model said yes
    assert load_judge("rules+http://localhost:1/v1#m").name == "rules+m"
    assert load_judge("http://localhost:1/v1#m").name == "m"
