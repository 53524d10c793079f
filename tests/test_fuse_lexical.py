from pathlib import Path

import pytest

from memagent import Memory, MemoryConfig
from memagent.retrieve.dense import without_common_names
from memagent.retrieve.fuse import reciprocal_rank_fusion
from memagent.retrieve.lexical import BM25Index, session_ranks, sessions_of_ranking, tokenize
from tests.fakes import HashEmbedder


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


def test_tokenize_stems_so_word_forms_meet() -> None:
    assert tokenize("We camped by the lake") == tokenize("camping lakes") == ["camp", "lake"]
    assert tokenize("painted") == tokenize("painting") == tokenize("paints")
    assert tokenize("pass") == ["pass"]  # not cut to 'pas'


def test_bm25_matches_another_form_of_the_word() -> None:
    index = BM25Index()
    index.add(["d1", "d2"], ["We went camping at the lake", "I bought a lamp"])
    assert [i for i, _ in index.search("where have I camped?", n=2)] == ["d1"]


def test_rrf_weights_scale_a_rankings_votes() -> None:
    fused = reciprocal_rank_fusion({"round": ["a", "b"], "session": ["b", "a"]}, k=10, weights={"round": 0.5})
    scores = {i: s for i, s, _ in fused}
    assert scores["a"] == pytest.approx(0.5 / 11 + 1 / 12)
    assert scores["b"] == pytest.approx(0.5 / 12 + 1 / 11)
    assert [i for i, _, _ in fused] == ["b", "a"]  # unweighted, a and b would tie and a would win


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


def test_rrf_takes_tied_ranks_from_a_mapping() -> None:
    fused = reciprocal_rank_fusion({"round": ["r2", "r1"], "session": {"r1": 1, "r2": 1, "r3": 2}}, k=60)
    scores = {i: s for i, s, _ in fused}
    assert scores["r1"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["r2"] == pytest.approx(1 / 61 + 1 / 61)
    assert [i for i, _, _ in fused] == ["r2", "r1", "r3"]


def test_session_bm25_scores_a_session_as_one_document() -> None:
    index = BM25Index()
    # neither round of s1 holds both words; together s1 matches the query best
    index.add(["a1", "a2", "b1", "c1"], ["ferry to the island", "rented bikes", "bikes for sale", "island weather"],
              ["s1", "s1", "s2", "s3"])
    ranked = index.search_groups("island bikes", n=3)
    assert ranked[0][0] == "s1" and ranked[0][1] > ranked[1][1]
    # s1 as one text scores exactly what a one-document-per-session index gives it
    whole = BM25Index()
    whole.add(["s1", "s2", "s3"], ["ferry to the island rented bikes", "bikes for sale", "island weather"])
    assert dict(ranked) == pytest.approx(dict(whole.search("island bikes", n=3)))


def test_session_ranks_give_every_round_its_sessions_rank_within_allowed() -> None:
    index = BM25Index()
    index.add(["a1", "a2", "b1"], ["ferry to the island", "rented bikes", "island weather"], ["s1", "s1", "s2"])
    assert session_ranks(index, "island bikes", sessions=5) == {"a1": 1, "a2": 1, "b1": 2}
    assert session_ranks(index, "island bikes", sessions=1) == {"a1": 1, "a2": 1}
    assert session_ranks(index, "island bikes", sessions=5, allowed={"a2", "b1"}) == {"a2": 1, "b1": 2}


def test_a_round_ranking_votes_for_sessions_by_their_best_round() -> None:
    index = BM25Index()
    index.add(["a1", "a2", "b1", "b2", "c1"], ["", "", "", "", ""], ["s1", "s1", "s2", "s2", "s3"])
    # s2's best round ranks first, s1's third; s3 has no round in the ranking
    assert sessions_of_ranking(index, ["b2", "a1", "a2", "b1"]) == {"a1": 2, "a2": 2, "b1": 1, "b2": 1}
    assert sessions_of_ranking(index, ["b2", "a1"], allowed={"a1", "b1"}) == {"a1": 2, "b1": 1}
    assert sessions_of_ranking(index, ["gone"]) == {}  # ids the index does not hold vote for nothing


def transcript_index(rounds: int = 30) -> BM25Index:
    """A two-person transcript: every round carries its speaker's name, one round names a third person."""
    index = BM25Index()
    texts = [f"{'Nadia' if n % 2 else 'Omar'}: line {n} about the garden and the weather" for n in range(rounds)]
    texts[3] = "Nadia: Lucia came over and we baked bread"
    index.add([f"r{n}" for n in range(rounds)], texts)
    return index


def test_names_every_round_carries_leave_the_dense_query() -> None:
    index = transcript_index()
    assert index.document_fraction("nadia") == 0.5 and index.document_fraction("lucia") == 1 / 30
    # the speakers' names go (possessive too); a rarer name, the first word and a stopword stay
    asked = "When did Nadia bake bread with Lucia?"
    assert without_common_names(asked, index, 0.2) == "When did bake bread with Lucia?"
    assert without_common_names("What is Omar's garden like?", index, 0.2) == "What is garden like?"
    assert without_common_names("Nadia, what did The Omar say?", index, 0.2) == "Nadia, what did The say?"
    assert without_common_names("When did Nadia bake?", index, 1.0) == "When did Nadia bake?"  # 1 keeps all
    # a small store says too little to call a name common
    assert without_common_names("When did Nadia bake?", transcript_index(10), 0.2) == "When did Nadia bake?"


def test_search_embeds_the_query_without_the_speakers_names(tmp_path: Path) -> None:
    class Recording(HashEmbedder):
        def __init__(self) -> None:
            self.queries: list[str] = []

        def embed_queries(self, texts):  # type: ignore[no-untyped-def]
            self.queries.extend(texts)
            return super().embed_queries(texts)

    recording = Recording()
    memory = Memory(path=tmp_path / "store", embedder=recording)
    session = [{"role": "user", "content": f"{'Nadia' if n % 2 else 'Omar'}: note {n} on the allotment"}
               for n in range(24)]
    memory.add(session, user_id="u", session_id="s1")
    memory.search("What did Nadia plant at the allotment?", user_id="u")
    assert recording.queries[-1] == "What did plant at the allotment?"
    off = Memory(MemoryConfig(retrieval={"common_names": 1.0}), path=tmp_path / "store", embedder=recording)
    off.search("What did Nadia plant at the allotment?", user_id="u")
    assert recording.queries[-1] == "What did Nadia plant at the allotment?"
