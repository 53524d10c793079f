"""A tiny random-weight Llama and byte-level tokenizer, built in code: no files, no downloads.

Real transformers classes end to end (chat template, generate, KV cache, padding), so LocalLLM's
plumbing is tested for real in well under a second per call. Weights are random but seeded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from memagent.llm.local import LocalLLM

SPECIAL_TOKENS = ["<|end|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"]  # ids 256..260
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CONTEXT_WINDOW = 512  # small, so a too-long prompt is cheap to build


def byte_symbols() -> dict[int, str]:
    """GPT-2's byte-level map: each byte to a printable character (what ByteLevel works on)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """One token per byte (256 byte symbols, no merges) plus the chat special tokens."""
    symbols = byte_symbols()
    vocab = {symbols[b]: b for b in range(256)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, eos_token="<|end|>", pad_token="<|pad|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[2:]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_model(seed: int = 0, hidden_size: int = 64) -> LlamaForCausalLM:
    """``hidden_size``: 64, or wider where a test needs the LM as wide as MiniLM (384)."""
    tokenizer_size = 256 + len(SPECIAL_TOKENS)
    config = LlamaConfig(
        vocab_size=tokenizer_size,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=128,
        max_position_embeddings=CONTEXT_WINDOW,
        initializer_range=0.2,  # larger than usual: peakier next-token distributions, fewer near-ties
        bos_token_id=None,
        eos_token_id=256,
        pad_token_id=257,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's RNG state
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    # Random weights would emit arbitrary bytes, i.e. invalid UTF-8 that does not survive a
    # decode/encode round trip; keep generations to printable ASCII (and the end token).
    printable = set(range(0x20, 0x7F)) | {ord("\n")}
    model.generation_config.suppress_tokens = [t for t in range(tokenizer_size) if t not in printable and t != 256]
    model.generation_config.eos_token_id = 256
    model.generation_config.pad_token_id = 257
    return model


def tiny_llm(seed: int = 0, **options: object) -> LocalLLM:
    """A LocalLLM on the tiny model; ``options`` go to LocalLLM (device, dtype)."""
    return LocalLLM(tiny_model(seed), tiny_tokenizer(), name="tiny-llama", **options)  # type: ignore[arg-type]


# llama.cpp's tensor names for the transformers ones (layer i in both)
_GGUF_NAMES = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """The tiny model as a float32 GGUF file with its tokenizer and chat template in the metadata.

    Stands in for the packaged GGUF readers in install and conversion tests (a few hundred KB).
    q/k are written unpermuted: the weights are random, only the file's shape and keys matter.
    """
    import gguf

    model, tokenizer = tiny_model(seed), tiny_tokenizer()
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_attention_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    # llama.cpp wants at least one BPE merge and transformers wants its result in the vocabulary: one
    # merge of bytes 0 and 1 (no test writes them), its token last, with zero embedding and output rows
    vocab_size = config.vocab_size + 1
    writer.add_vocab_size(vocab_size)
    writer.add_tokenizer_model("gpt2")
    tokens = [str(tokenizer.convert_ids_to_tokens(i)) for i in range(config.vocab_size)]
    tokens.append(tokens[0] + tokens[1])
    writer.add_token_list(tokens)
    writer.add_token_types([1] * 256 + [3] * len(SPECIAL_TOKENS) + [1])  # 1 normal, 3 control
    writer.add_token_scores([0.0] * vocab_size)
    writer.add_token_merges([f"{tokens[0]} {tokens[1]}"])
    writer.add_eos_token_id(256)
    writer.add_pad_token_id(257)
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, tensor in model.state_dict().items():
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            tensor = torch.cat([tensor, torch.zeros(1, tensor.shape[1])])  # the merged token's row
        writer.add_tensor(_gguf_name(name), tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _gguf_name(name: str) -> str:
    stem, _, kind = name.rpartition(".")  # kind: weight
    if stem.startswith("model.layers."):
        index, _, module = stem.removeprefix("model.layers.").partition(".")
        return f"blk.{index}.{_GGUF_NAMES[module]}.{kind}"
    return f"{_GGUF_NAMES[stem]}.{kind}"
