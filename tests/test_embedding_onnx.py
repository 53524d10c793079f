"""The ONNX embedder backends: same vectors as torch (within int8's error), exported once, chosen by config.

The export (torch.onnx + int8 quantization, ~20 s on 2 cores) runs once per test session into a
temporary models folder; every other test reuses it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from memagent import MemoryConfig, SentenceTransformerEmbedder
from memagent.config import EmbedderConfig
from memagent.embedding import OnnxEmbedder, embedder_from_config, onnx_export_path, resolve_model_path

SENTENCES = [
    "I adopted a grey cat named Miso from the shelter last spring.",
    "What time does the pharmacy on Elm Street close on Sundays?",
    "My sister is getting married in Lisbon next June and I'm the maid of honour.",
    "Can you remind me which dentist I switched to after the insurance change?",
    "The quarterly report is due Friday, but the sales figures are still missing.",
    "I've been training for the Berlin marathon: 60 km a week at the moment.",
    "We replaced the kitchen roof tiles after the storm in March.",
    "user: I think I prefer oat milk now.\nassistant: Noted, oat milk instead of almond milk.",
    "How many hours of sleep do I usually get when I have an early shift?",
    "The vegan bakery near the station sells a great sourdough with walnuts.",
    "Remember that my manager's name is Priya and she prefers email over Slack.",
    "I sold my second-hand bike for 150 euros to a student from the university.",
    "Python's asyncio event loop runs one coroutine at a time on a single thread.",
    "Ich habe gestern mit meinem Bruder Pizza gegessen.",
    "Tickets for the concert on 14 August cost $85 each, plus fees.",
    "ok",
    "My daughter's piano lessons moved from Tuesdays to Thursdays at 5 pm.",
    "The doctor said my vitamin D was low and suggested 1000 IU a day.",
    "Which hotel did we book in Kyoto, the one near the bamboo forest?",
    "I finally finished reading 'The Left Hand of Darkness' on the train home. " * 6,  # long: 256-token truncation
]


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "onnx"  # as models_dir() / "onnx" would be
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def onnx_int8(onnx_folder: Path) -> OnnxEmbedder:
    return OnnxEmbedder("all-MiniLM-L6-v2", quantize=True, folder=onnx_folder)  # exports on first use


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_int8_vectors_match_torch(onnx_int8: OnnxEmbedder, embedder: SentenceTransformerEmbedder) -> None:
    for side in ("embed_documents", "embed_queries"):
        cos = _cosines(getattr(onnx_int8, side)(SENTENCES), getattr(embedder, side)(SENTENCES))
        print(f"{side}: int8 vs torch cosine min {cos.min():.4f} mean {cos.mean():.4f}")
        assert cos.min() >= 0.98, (side, cos.round(4).tolist())


def test_float32_export_matches_torch(onnx_int8: OnnxEmbedder, onnx_folder: Path,
                                      embedder: SentenceTransformerEmbedder) -> None:
    fp32 = OnnxEmbedder("all-MiniLM-L6-v2", quantize=False, folder=onnx_folder)  # the int8 export made it too
    docs = fp32.embed_documents(SENTENCES)
    cos = _cosines(docs, embedder.embed_documents(SENTENCES))
    assert cos.min() >= 0.9999, cos.round(6).tolist()
    alone = np.concatenate([fp32.embed_documents([text]) for text in SENTENCES])  # batching changes nothing
    assert _cosines(alone, docs).min() >= 0.9999


def test_export_is_cached(onnx_int8: OnnxEmbedder, onnx_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = sorted(onnx_folder.glob("*.onnx"))
    assert [f.name.rsplit("-", 1)[1] for f in files] == ["fp32.onnx", "int8.onnx"]
    assert onnx_int8.path in files and not list(onnx_folder.glob("*.tmp*"))
    before = {f: f.stat().st_mtime_ns for f in files}

    def no_export(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr("memagent._onnx.export", no_export)
    again = OnnxEmbedder("all-MiniLM-L6-v2", quantize=True, folder=onnx_folder)
    assert again.path == onnx_int8.path
    assert {f: f.stat().st_mtime_ns for f in files} == before


def test_export_name_carries_the_source_sha256(tmp_path: Path) -> None:
    packaged = Path(resolve_model_path("all-MiniLM-L6-v2"))
    name = onnx_export_path("all-MiniLM-L6-v2", packaged, "int8", tmp_path).name
    assert "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db" in name
    other = tmp_path / "all-MiniLM-L6-v2"  # a local copy with different weights is another export
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"not the same weights")
    assert onnx_export_path(str(other), other, "int8", tmp_path) != onnx_export_path(str(other), packaged, "int8",
                                                                                      tmp_path)
    assert "53aa5117" not in onnx_export_path(str(other), other, "int8", tmp_path).name


def test_queries_and_documents(onnx_int8: OnnxEmbedder) -> None:
    docs = onnx_int8.embed_documents(SENTENCES)
    queries = onnx_int8.embed_queries(["what is my cat called?", "when are the piano lessons?"])
    assert docs.shape == (len(SENTENCES), 384) and docs.dtype == np.float32
    assert queries.shape == (2, 384) and queries.dtype == np.float32
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    best = (queries @ docs.T).argmax(axis=1)
    assert [SENTENCES[i] for i in best] == [SENTENCES[0], SENTENCES[16]]
    assert onnx_int8.embed_documents([]).shape == (0, 384)
    # int8 activations take one scale per batch, so a text's vector moves a little with its batch mates
    alone = np.concatenate([onnx_int8.embed_documents([text]) for text in SENTENCES])
    assert _cosines(alone, docs).min() > 0.99


def test_names_keep_caches_apart(onnx_int8: OnnxEmbedder, embedder: SentenceTransformerEmbedder) -> None:
    assert onnx_int8.name == "all-MiniLM-L6-v2@onnx-int8" != embedder.name


def test_backend_from_config(onnx_int8: OnnxEmbedder, onnx_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert EmbedderConfig().backend == "torch"
    monkeypatch.setattr("memagent._onnx.export", lambda *args: pytest.fail("exported again"))
    monkeypatch.setenv("MEMAGENT_MODELS_DIR", str(onnx_folder.parent))
    monkeypatch.setenv("MEMAGENT_EMBEDDER__BACKEND", "onnx-int8")
    built = embedder_from_config(MemoryConfig().embedder)
    assert isinstance(built, OnnxEmbedder) and built.name == "all-MiniLM-L6-v2@onnx-int8"


def test_bad_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="backend"):
        EmbedderConfig(backend="tensorrt")  # type: ignore[arg-type]
    monkeypatch.setenv("MEMAGENT_EMBEDDER__BACKEND", "int4")
    with pytest.raises(ValidationError, match=r"embedder\.backend"):
        MemoryConfig()
    with pytest.raises(ValidationError, match="runs on the CPU"):
        EmbedderConfig(backend="onnx-int8", device="cuda")
