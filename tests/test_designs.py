"""LongMemEval's memory designs as switches: session context, time-aware expansion, key expansion."""

from __future__ import annotations

import pytest

from memagent import Memory
from memagent.index.keys import CachedExpander, Expander, merge_key, parse_facts, surprising_words
from memagent.llm.scripted import ScriptedLLM

from .conftest import exchange

SATURDAY = "2024-03-09T18:00:00"  # the question below is asked on Wednesday 2024-03-13


def _lexical(make_memory, **settings) -> Memory:
    retrieval = {"retrievers": settings.pop("retrievers", ["lexical"]), "time_aware": False,
                 **settings.pop("retrieval", {})}
    return make_memory(retrieval=retrieval, **settings)


def test_session_context_lifts_the_rounds_of_the_session_about_the_question(make_memory) -> None:
    def fill(memory: Memory) -> None:
        memory.add(exchange("The ferry to Naxos leaves at seven.") + exchange("I packed snorkels and sunscreen."),
                   user_id="u", session_id="trip", timestamp="2024-05-01")
        memory.add(exchange("My old snorkels cracked, snorkels are cheap anyway."), user_id="u", session_id="shop",
                   timestamp="2024-04-01")
        memory.add(exchange("Naxos snorkels are sold everywhere."), user_id="other", session_id="x",
                   timestamp="2024-04-01")

    plain, with_context = _lexical(make_memory, path=None), None
    fill(plain)
    top_plain = [h.record.session_id for h in plain.search("snorkels for Naxos", user_id="u", k=2)]
    with_context = make_memory(path=plain.config.store.path.parent / "ctx",
                               retrieval={"retrievers": ["lexical", "session"]})
    fill(with_context)
    hits = with_context.search("snorkels for Naxos", user_id="u", k=2)
    assert "shop" in top_plain  # alone, the round that repeats 'snorkels' wins a place
    assert [h.record.session_id for h in hits] == ["trip", "trip"]  # the session about both words wins
    assert all(h.why.get("session") == 1 for h in hits)
    assert all(h.record.user_id == "u" for h in with_context.search("snorkels Naxos", user_id="u", k=10))


def test_round_weight_sets_how_much_a_rounds_own_match_counts_against_its_sessions(make_memory) -> None:
    def search(round_weight: float) -> list:
        memory = _lexical(make_memory, retrievers=["lexical", "session"], retrieval={"round_weight": round_weight})
        memory.add(exchange("Then we ate.") + exchange("The lake hike took four hours."),
                   user_id="u", session_id="hike", timestamp="2024-05-01")
        memory.add(exchange("Ordered new boots."), user_id="u", session_id="boots", timestamp="2024-04-01")
        hits = memory.search("how long was the lake hike?", user_id="u", k=3)
        assert all("lexical@session" in h.why for h in hits if h.record.session_id == "hike")  # sessions got votes
        return [h for h in hits if h.record.session_id == "hike"]

    # only sessions count: the rounds of a session tie
    ate, hike = search(0.0)
    assert ate.score == hike.score
    # a round's own match counts too: inside the session, the round about the hike comes first
    first, second = search(1.0)
    assert "lake hike" in first.record.value and first.score > second.score


def test_time_aware_expansion_moves_the_named_days_to_the_front_and_drops_nothing(make_memory) -> None:
    def fill(memory: Memory) -> None:
        memory.add(exchange("I cook risotto a lot, I cook it every week."), user_id="u",
                   session_id="old", timestamp="2024-02-10T18:00:00")
        memory.add(exchange("Tonight I cook dal for friends and family at home."), user_id="u", session_id="sat",
                   timestamp=SATURDAY)

    question, asked = "What did I cook last Saturday?", "2024-03-13T09:00:00"
    plain = _lexical(make_memory, path=None)
    fill(plain)
    timed = make_memory(path=plain.config.store.path.parent / "timed",
                        retrieval={"retrievers": ["lexical"], "time_aware": True})
    fill(timed)
    before = plain.search(question, user_id="u", k=5, question_date=asked)
    after = timed.search(question, user_id="u", k=5, question_date=asked)
    assert [h.record.session_id for h in before] == ["old", "sat"]
    assert [h.record.session_id for h in after] == ["sat", "old"]
    assert after[0].why.get("time") == 1 and "time" not in after[1].why
    # no time in the question: the order is the plain one
    assert [h.record.session_id for h in timed.search("what did I cook?", user_id="u", k=5)] == \
        [h.record.session_id for h in plain.search("what did I cook?", user_id="u", k=5)]


FACTS_REPLY = '```json\n["The user adopted a greyhound named Pixel."]\n```'


def test_fact_keys_are_merged_first_and_found_by_what_only_the_facts_say(make_memory) -> None:
    llm = ScriptedLLM(FACTS_REPLY)
    memory = make_memory(expansion={"kind": "facts"}, retrieval={"retrievers": ["lexical"]}, llm=llm)
    [record] = memory.add(exchange("We brought her home from the shelter, she is called Pixel."), user_id="u",
                          session_id="s1")
    assert record.value.startswith("user: We brought her home")  # the value is what was said, unchanged
    assert record.key.startswith("The user adopted a greyhound named Pixel.\n")
    assert memory.search("greyhound", user_id="u", k=1)[0].record.id == record.id  # only the fact says it
    calls = len(llm.calls)
    again = make_memory(path=memory.config.store.path, expansion={"kind": "facts"}, llm=llm)
    again.add(exchange("We brought her home from the shelter, she is called Pixel."), user_id="v", session_id="s1")
    assert len(llm.calls) == calls  # the same value is expanded once, from the cache


def test_a_fact_reply_that_fails_validation_adds_nothing_and_stores_the_round(make_memory) -> None:
    memory = make_memory(expansion={"kind": "facts"}, llm=ScriptedLLM("Sure! Here are some facts about the user."))
    [record] = memory.add(exchange("I moved to Lyon."), user_id="u", session_id="s1")
    assert record.key == record.value
    assert memory.expander.inner.rejected == 1


def test_session_records_are_expanded_as_a_whole(make_memory) -> None:
    memory = make_memory(granularity="session", expansion={"kind": "facts"},
                         llm=ScriptedLLM(lambda messages: f'["fact about: {messages[-1]["content"][6:21]}"]'))
    memory.add(exchange("I moved to Lyon."), user_id="u", session_id="s1")
    [record] = memory.add(exchange("I work at a bakery."), user_id="u", session_id="s1")
    assert record.key.splitlines()[0] == "fact about: I moved to Lyon"  # one expansion, first, for the whole session
    assert "I work at a bakery." in record.key and record.key.count("fact about") == 1


@pytest.mark.parametrize(
    ("reply", "facts"),
    [
        ('["The user lives in Lyon."]', ["The user lives in Lyon."]),
        ('Facts:\n```json\n["A", "B  c"]\n```', ["A", "B c"]),
        ("[]", []),
        ('["The user lives in Lyon.", "The user has a cat", "The user',
         ["The user lives in Lyon.", "The user has a cat"]),
        ('["B", "A", "b", "A"]', ["B", "A"]),  # a looping model's repeats count once, first place kept
    ],
)
def test_parse_facts_accepts_a_json_list_of_short_strings(reply: str, facts: list[str]) -> None:
    assert parse_facts(reply) == facts


@pytest.mark.parametrize("reply", ["no list here", '["unterminated]', "[1, 2]", '[""]', f'["{"x" * 301}"]',
                                   "[" + ",".join(['"f"'] * 13) + "]"])
def test_parse_facts_rejects_bad_replies_naming_the_field(reply: str) -> None:
    with pytest.raises(ValueError, match="facts"):
        parse_facts(reply)


def test_facts_copied_from_the_few_shot_examples_are_dropped() -> None:
    from memagent.index.keys import FACTS_EXAMPLES, LLMFacts

    leaked = FACTS_EXAMPLES[1][1][1]
    facts = LLMFacts(ScriptedLLM(f'["The user opened a bakery in Lyon.", "{leaked}"]'))
    assert facts.expand(["user: I opened a bakery in Lyon."]) == ["The user opened a bakery in Lyon."]


def test_an_expander_name_changes_with_its_prompt(monkeypatch) -> None:
    from memagent.index import keys

    before = keys.LLMFacts(ScriptedLLM("[]")).name
    monkeypatch.setattr(keys, "FACTS_SYSTEM", keys.FACTS_SYSTEM + " Be brief.")
    assert keys.LLMFacts(ScriptedLLM("[]")).name != before  # so the cache cannot serve the old prompt's facts
    assert keys.prompt_version("keyphrases") == ""  # no prompt: keyphrase names do not change


def test_merge_key_puts_the_expansion_first_and_ignores_an_empty_one() -> None:
    assert merge_key("user: hi", "greyhound, Pixel") == "greyhound, Pixel\nuser: hi"
    assert merge_key("user: hi", "  ") == "user: hi"


def test_surprising_words_sum_token_surprisal_and_skip_stopwords_and_roles() -> None:
    pieces = [("user", 0.0), (":", -1.0), (" my", -9.0), (" grey", -3.0), ("hound", -2.5), (" Pix", -4.0),
              ("el", -0.5), (" likes", -1.0), (" Pixel", -0.1), ("\nassistant", -8.0), (":", -0.1), (" nice", -2.0)]
    # 'greyhound' = 5.5, 'pixel' counts once at its best (4.5), 'nice' 2.0, 'likes' 1.0; 'my' is a stopword
    assert surprising_words(pieces, 3) == ["greyhound", "pixel", "nice"]
    assert "user" not in surprising_words(pieces, 10) and "assistant" not in surprising_words(pieces, 10)


def test_keyphrase_expansion_runs_on_the_scripted_model(make_memory) -> None:
    from memagent.index.keys import Keyphrases

    memory = make_memory(expansion={"kind": "keyphrases", "keyphrases": 2}, expander=Keyphrases(ScriptedLLM(""), n=2))
    [record] = memory.add(exchange("We adopted a greyhound", "Lovely"), user_id="u", session_id="s1")
    # the scripted model scores a word by its length: the two longest content words lead the key
    assert record.key.splitlines()[0] == "greyhound, adopted"


class Counting(Expander):
    name = "counting"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def expand(self, values):  # type: ignore[no-untyped-def]
        self.seen += values
        return [v.upper() for v in values]


def test_the_expansion_cache_computes_each_distinct_value_once(tmp_path) -> None:
    inner = Counting()
    cache = CachedExpander(inner, tmp_path / "x.sqlite")
    assert cache.expand(["a", "b", "a"]) == ["A", "B", "A"]
    assert CachedExpander(inner, tmp_path / "x.sqlite").expand(["b", "c"]) == ["B", "C"]
    assert inner.seen == ["a", "b", "c"]

