"""``MacModel``: the frozen encoder and LM with MAC's three trainable networks between them.

    document ──encoder──▶ Amortizer ──▶ T tokens ──▶ bank [S, T, d]
    question ──encoder──▶ Aggregator(question, bank) ──▶ T tokens ──▶ PrefixGenerator ──▶ LM's past keys/values
    question ─────────────────────────────────────────────────────────────────────────▶ LM ──▶ answer

Only the amortizer, the aggregator and the prefix generator train; the encoder and the LM stay frozen.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from memagent.decay.chat import ChatTurns
from memagent.llm.local import END_OF_TURN_TOKENS
from memagent.mac.aggregator import Aggregator
from memagent.mac.amortizer import Amortizer, TokenEncoder, WordEmbeddings
from memagent.mac.config import MacConfig
from memagent.mac.prefix import PrefixGenerator, WordPrefix, after_prefix, prefix_cache

WEIGHTS = "mac.safetensors"
# One system message and one question form for every reader of the frozen LM (MAC, no memory, the gold
# document, retrieved memories), so a comparison differs only in what the LM is given. Short: MAC's
# training runs the LM forward and backward on it (a chat template's default system prompt is longer).
SYSTEM = "Answer the question in a few words, with no sentence around them."
# Two worked turns before the question, for the untrained readers: small instruct LMs otherwise answer
# in whole sentences, which exact match scores as wrong even when they hold the answer (Qwen2.5-0.5B
# with the gold document: EM 0.32 without them, 0.93 with them, on 60 questions). MAC learns the form
# in training and reads without them. People and values are made up and occur in no data set.
DEMOS = (("Which city does Hugo Brandt live in?", "Marseille"), ("What is Ada Lindgren's job?", "welder"))
PREFIX_START = "What you remember about the user:"  # the text whose keys and values start the prefix


class Reply(NamedTuple):
    text: str
    confidence: float  # geometric mean of the greedy tokens' probabilities


def question_prompt(question: str, context: str | None = None) -> str:
    memory = f"What you remember:\n{context}\n\n" if context else ""
    return f"{memory}Question: {question}"


class MacModel(nn.Module):
    def __init__(self, config: MacConfig, encoder: TokenEncoder, lm: Any, tokenizer: Any) -> None:
        super().__init__()
        self.config, self.encoder, self.tokenizer = config, encoder, tokenizer
        self.lm = [lm.eval().requires_grad_(False)]  # in a list: not a submodule, so never saved nor trained
        # "words": sessions kept as the LM's own embeddings of their key words, which it reads (see MacConfig)
        self.words = WordEmbeddings(lm, tokenizer, config.max_doc_tokens) if config.injection == "words" else None
        word_width = self.words.width if self.words else None
        self.amortizer = Amortizer(config, encoder.width, word_width)
        self.aggregator = Aggregator(config, encoder.width, word_width)
        self.bank_width = word_width or config.width  # the width of what the bank stores
        self.turns = ChatTurns(tokenizer, system=SYSTEM)
        # transformers 5 renamed past_key_values to cache in some models' forward
        self._cache_arg = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
        self.stop_ids = {i for t in END_OF_TURN_TOKENS if isinstance(i := tokenizer.convert_tokens_to_ids(t), int)
                         and i != tokenizer.unk_token_id}
        if tokenizer.eos_token_id is not None:
            self.stop_ids.add(int(tokenizer.eos_token_id))
        # the prefix starts as the LM's keys and values of real text (a checkpoint's weights replace them)
        self.prefix: PrefixGenerator | WordPrefix
        if self.words:
            self.prefix = WordPrefix(lm, torch.tensor(tokenizer(PREFIX_START, add_special_tokens=False)["input_ids"]))
        else:
            self.prefix = PrefixGenerator(config.width, config.tokens, lm.config)
            start = " ".join([PREFIX_START] * (1 + config.tokens // 4))
            self.prefix.start_from(lm, torch.tensor(tokenizer(start, add_special_tokens=False)["input_ids"]))
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.stop_ids))

    @property
    def device(self) -> torch.device:
        return next(self.prefix.parameters()).device

    # --- the three networks --------------------------------------------------------------------------------

    def amortize(self, documents: Sequence[str]) -> torch.Tensor:
        """Documents -> their modulation tokens [S, T, width]: one forward pass, what a bank stores.
        Gradients flow when called under grad mode (training)."""
        states, mask = self.encoder(documents)
        words = self.words(documents) if self.words else (None, None, None)
        tokens: torch.Tensor = self.amortizer(states.to(self.device), mask.to(self.device), *words)
        return tokens

    def aggregate(self, questions: Sequence[str], bank: torch.Tensor, window: int | None = None) -> torch.Tensor:
        """Each question's T tokens [Q, T, width] read from ``bank`` [S, T, width] (or [Q, S, T, width]: a
        bank per question), ``window`` entries at a time (default: the config's; 0: the whole bank at once)."""
        states, mask = self.encoder(questions)
        question = self.aggregator.encode_question(states.to(self.device), mask.to(self.device))
        if window == 0:
            tokens: torch.Tensor = self.aggregator(question, bank)
        else:
            tokens = self.aggregator.hierarchical(question, bank, window)
        return tokens[:, 1:] if self.config.match else tokens  # the prefix reads the T tokens, not the key

    # --- the frozen LM with a prefix ------------------------------------------------------------------------

    def _prompt_ids(self, prompts: Sequence[str], demos: bool = False) -> list[list[int]]:
        if not demos:
            return [self.turns.user(p, first=True) for p in prompts]
        head = self.turns.user(question_prompt(DEMOS[0][0]), first=True) + self.turns.assistant(DEMOS[0][1])
        for question, answer in DEMOS[1:]:
            head += self.turns.user(question_prompt(question), first=False) + self.turns.assistant(answer)
        return [head + self.turns.user(p, first=False) for p in prompts]

    def loss(self, questions: Sequence[str], answers: Sequence[str], tokens: torch.Tensor | None) -> torch.Tensor:
        """Mean NLL of the answers' tokens (MAC trains on this alone), the LM reading the prefix made
        from ``tokens`` [Q, T, width] (None: no prefix)."""
        rows = [(p, self.turns.assistant(a)) for p, a in zip(self._prompt_ids(questions), answers, strict=True)]
        width = max(len(p) + len(a) for p, a in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for n, (prompt, answer) in enumerate(rows):  # right padding
            ids[n, : len(prompt) + len(answer)] = torch.tensor(prompt + answer)
            labels[n, len(prompt) : len(prompt) + len(answer)] = torch.tensor(answer)
            mask[n, : len(prompt) + len(answer)] = 1
        ids, mask, labels = ids.to(self.device), mask.to(self.device), labels.to(self.device)
        hidden = self.hidden(ids, mask, tokens)[:, :-1]
        targets = labels[:, 1:]
        answered = targets != -100
        # the output layer only where an answer token is predicted: most of a row is prompt, and the
        # vocabulary projection (151k × 896 on Qwen2.5) is a large share of a small LM's compute
        logits = self.lm[0].get_output_embeddings()(hidden[answered])
        return F.cross_entropy(logits.float(), targets[answered])

    def hidden(self, ids: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        """The LM's last hidden states [Q, L, d] for right-padded ``ids``, after the prefix from ``tokens``."""
        body = self.lm[0].base_model
        if tokens is None:
            return body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # type: ignore[no-any-return]
        prefix = self.prefix(tokens)
        full, positions = after_prefix(mask, prefix.shape[-2])
        cache = prefix_cache(prefix)
        out = body(input_ids=ids, attention_mask=full, position_ids=positions, use_cache=True,
                   **{self._cache_arg: cache})
        return out.last_hidden_state  # type: ignore[no-any-return]

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], tokens: torch.Tensor | None = None, max_new_tokens: int = 16,
                 demos: bool = False) -> list[Reply]:
        """Greedy answers to ``prompts`` (see ``question_prompt``), with the prefix from ``tokens``
        [Q, T, width], or none; ``demos``: after the two worked turns (for untrained readers)."""
        rows = self._prompt_ids(prompts, demos)
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for n, row in enumerate(rows):  # left padding: every row's next token comes at the same place
            ids[n, width - len(row) :], mask[n, width - len(row) :] = torch.tensor(row), 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        lm, prefix = self.lm[0], None if tokens is None else self.prefix(tokens)
        full, positions = after_prefix(mask, 0 if prefix is None else prefix.shape[-2])
        cache = None if prefix is None else prefix_cache(prefix)
        out, logprobs = [], []
        done = torch.zeros(len(rows), dtype=torch.bool, device=self.device)
        for _ in range(max_new_tokens):
            result = lm(input_ids=ids, attention_mask=full, position_ids=positions, use_cache=True,
                        **{self._cache_arg: cache})
            cache = getattr(result, "cache", None) or result.past_key_values  # the field's name before transformers 5
            scores = result.logits[:, -1].float().log_softmax(-1)
            step = scores.argmax(-1)
            logprobs.append(torch.where(done, 0.0, scores.gather(1, step[:, None])[:, 0]))
            step = torch.where(done, self.pad_id, step)
            out.append(step)
            done |= torch.isin(step, torch.tensor(sorted(self.stop_ids), device=self.device))
            if bool(done.all()):
                break
            ids, positions = step[:, None], positions[:, -1:] + 1
            full = torch.cat([full, torch.ones_like(full[:, :1])], dim=1)
        replies = []
        for row, scores in zip(torch.stack(out, dim=1).tolist(), torch.stack(logprobs, dim=1).tolist(), strict=True):
            kept = [(t, s) for t, s in zip(row, scores, strict=True) if t != self.pad_id]
            cut = next((n for n, (t, _s) in enumerate(kept) if t in self.stop_ids), len(kept))
            text = str(self.tokenizer.decode([t for t, _s in kept[:cut]], skip_special_tokens=True)).strip()
            mean = sum(s for _t, s in kept[: cut + 1]) / max(1, len(kept[: cut + 1]))  # the end of turn counts too
            replies.append(Reply(text, float(torch.tensor(mean).exp())))
        return replies

    def answer(self, questions: Sequence[str], bank: torch.Tensor, max_new_tokens: int = 16,
               window: int | None = None) -> list[Reply]:
        """MAC's reader: each question's prefix aggregated from ``bank`` (see ``aggregate``), then greedy decoding."""
        with torch.no_grad():
            tokens = self.aggregate(questions, bank.to(self.device), window)
        return self.generate([question_prompt(q) for q in questions], tokens, max_new_tokens)

    # --- checkpoints ------------------------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """The trainable networks' weights and the config beside them (never the frozen LM or encoder)."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        self.config.save(folder)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS))

    @classmethod
    def load(cls, folder: Path, *, encoder: TokenEncoder | None = None, lm: Any = None, tokenizer: Any = None,
             device: str | None = None) -> MacModel:
        """A checkpoint written by ``save``; the frozen parts load from the names in its config unless given."""
        from safetensors.torch import load_file

        config = MacConfig.load(folder)
        if encoder is None:
            encoder = TokenEncoder.load(config.encoder, config.max_doc_tokens, device=device)
        if lm is None:
            lm, tokenizer = load_frozen_lm(config.lm, device)
        model = cls(config, encoder, lm, tokenizer)
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
        return model.to(next(lm.parameters()).device)


def load_frozen_lm(name: str, device: str | None = None) -> tuple[Any, Any]:
    """The LM and tokenizer a config names, on transformers (MAC needs its cache as tensors)."""
    import torch

    from memagent.llm.load import load_llm
    from memagent.llm.local import LocalLLM

    # float32 everywhere: the prefix is trained against the LM's float32 activations (the CPU's), and a
    # bfloat16 LM (the CUDA default) would change what it was trained on. TF32 matmuls keep CUDA fast.
    torch.set_float32_matmul_precision("high")
    llm = load_llm(name, backend="transformers", dtype="float32", **({"device": device} if device else {}))
    if not isinstance(llm, LocalLLM):
        raise ValueError(f"lm: {name!r} did not load as an in-process transformers model")
    return llm.model, llm.tokenizer
