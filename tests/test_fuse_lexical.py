import pytest

from memagent.retrieve.fuse import reciprocal_rank_fusion
from memagent.retrieve.lexical import BM25Index, tokenize


def test_rrf_adds_reciprocal_ranks() -> None:
    fused = reciprocal_rank_fusion({"dense": ["a", "b", "c"], "lexical": ["c", "a"]}, k=60)
    scores = {i: s for i, s, _ in fused}
    # a: 1/61 + 1/62 = 0.032522...; c: 1/63 + 1/61 = 0.032266...; b: 1/62 = 0.016129...
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert [i for i, _, _ in fused] == ["a", "c", "b"]
    assert fused[1][2] == {"dense": 3, "lexical": 1}


def test_rrf_is_invariant_to_ranking_names_and_stable_on_ties() -> None:
    one = reciprocal_rank_fusion({"x": ["a", "b"], "y": ["b", "a"]})
    two = reciprocal_rank_fusion({"p": ["a", "b"], "q": ["b", "a"]})
    assert [i for i, _, _ in one] == [i for i, _, _ in two] == ["a", "b"]  # tie: first seen wins


def test_tokenize_drops_stopwords_and_plural_s() -> None:
    assert tokenize("What are my dogs' names?") == ["dog", "name"]


def test_bm25_prefers_rare_terms_and_hand_worked_score() -> None:
    index = BM25Index(k1=1.5, b=0.75)
    index.add(["d1", "d2", "d3"], ["greyhound pixel", "pixel camera phone", "camera lens"])
    ranked = index.search("greyhound camera", n=3)
    assert [i for i, _ in ranked][0] == "d1"
    # d1 for 'greyhound': N=3, df=1 -> idf = ln(1 + 2.5/1.5) = 0.98083; tf=1, dl=2, avgdl=7/3
    # norm = 1.5*(0.25 + 0.75*2/(7/3)) = 1.33929 -> 0.98083 * 2.5 / 2.33929 = 1.04821
    assert ranked[0][1] == pytest.approx(1.04821, abs=1e-4)


def test_bm25_allowed_restricts_candidates() -> None:
    index = BM25Index()
    index.add(["d1", "d2"], ["pixel the greyhound", "pixel the phone"])
    assert [i for i, _ in index.search("pixel", n=5, allowed={"d2"})] == ["d2"]
    assert index.search("nothing matches", n=5) == []
