"""MAC on the tiny code-built LM and the real MiniLM encoder: shapes, the prefix reaching the LM,
gradients only where training should put them, checkpoints, banks and the Memory reader mode."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from memagent import Memory
from memagent.errors import InputError
from memagent.mac import Document, MacConfig, MacModel, read_documents, train
from memagent.mac.amortizer import TokenEncoder, key_words
from memagent.mac.bank import MemoryBank, bank_path, checkpoint_id, session_chunks
from memagent.mac.prefix import after_prefix
from memagent.mac.train import lr_factor, step_loss
from tests.llm.tiny import tiny_model, tiny_tokenizer

CONFIG = MacConfig(lm="tiny", tokens=4, heads=4, amortizer_blocks=1, aggregator_blocks=1, window=2)
DOCUMENTS = [
    Document("a", "User: My friend Anna lives in Oslo.\nAssistant: Noted.", (("Where does Anna live?", "Oslo"),)),
    Document("b", "User: My cousin Ben works as a baker.\nAssistant: Nice.", (("What is Ben's job?", "baker"),)),
    Document("c", "User: My aunt Cleo loves chess.\nAssistant: Fun!", (("What does Cleo love?", "chess"),)),
    Document("d", "User: My colleague Dev moved to Lyon.\nAssistant: Good.", (("Where is Dev now?", "Lyon"),)),
]


@pytest.fixture(scope="session")
def encoder() -> TokenEncoder:
    return TokenEncoder.load(CONFIG.encoder, CONFIG.max_doc_tokens)


def make_model(encoder: TokenEncoder, seed: int = 0, config: MacConfig = CONFIG) -> MacModel:
    torch.manual_seed(seed)
    return MacModel(config, encoder, tiny_model(), tiny_tokenizer())


def test_shapes_through_the_three_networks(encoder: TokenEncoder) -> None:
    model = make_model(encoder)
    bank = model.amortize([d.text for d in DOCUMENTS])
    assert bank.shape == (4, CONFIG.tokens, CONFIG.width)
    tokens = model.aggregate(["Where does Anna live?", "What is Ben's job?"], bank)
    assert tokens.shape == (2, CONFIG.tokens, CONFIG.width)
    # the tiny Llama: 2 layers, 4 key/value heads of 64 / 4 = 16
    assert model.prefix(tokens).shape == (2, 2, 2, 4, CONFIG.tokens, 16)


def test_the_prefix_changes_what_the_lm_says(encoder: TokenEncoder) -> None:
    model = make_model(encoder)
    torch.nn.init.normal_(model.prefix.linear.weight, std=1.0)  # a prefix that matters, as after training
    questions, answers = ["Where does Anna live?"], ["Oslo"]
    with torch.no_grad():
        bare = model.loss(questions, answers, None)
        one = model.loss(questions, answers, model.aggregate(questions, model.amortize([DOCUMENTS[0].text])))
        other = model.loss(questions, answers, model.aggregate(questions, model.amortize([DOCUMENTS[1].text])))
    assert abs(one.item() - bare.item()) > 1e-3
    assert abs(one.item() - other.item()) > 1e-4  # and it depends on what the bank holds


def test_the_prefix_starts_as_the_lms_own_keys_and_values(encoder: TokenEncoder) -> None:
    model = make_model(encoder).eval()
    lm, tokenizer = model.lm[0], model.tokenizer
    start = torch.tensor(tokenizer("What you remember about the user:", add_special_tokens=False)["input_ids"])
    model.prefix.start_from(lm, start)
    question = torch.tensor([tokenizer("Where is Dev?", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        # the memory's part is zero: the prefix is exactly the start text, so the LM reads the question
        # as if the text's first T tokens came before it
        read = model.hidden(question, torch.ones_like(question), torch.zeros(1, CONFIG.tokens, CONFIG.width))
        whole = lm.base_model(input_ids=torch.cat([start[: CONFIG.tokens][None], question], dim=1)).last_hidden_state
    torch.testing.assert_close(read, whole[:, CONFIG.tokens :], atol=1e-4, rtol=1e-4)


def test_left_padded_positions_start_after_the_prefix() -> None:
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    full, positions = after_prefix(mask, 3)
    assert full.tolist() == [[1, 1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 1, 1, 1]]
    # the first real token of each row sits at position 3, right after the 3 prefix positions
    assert positions.tolist() == [[3, 3, 3, 4], [3, 4, 5, 6]]


def test_gradients_reach_only_the_trainable_networks(encoder: TokenEncoder) -> None:
    model = make_model(encoder, config=MacConfig(**{**CONFIG.__dict__, "backprop_fraction": 0.5}))
    step_loss(model, [(d, 0) for d in DOCUMENTS], random.Random(0)).backward()
    assert all(p.grad is None for p in model.lm[0].parameters())
    assert all(p.grad is None for p in encoder.model.parameters())
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_a_hierarchy_wider_than_the_bank_is_the_flat_aggregation(encoder: TokenEncoder) -> None:
    model = make_model(encoder).eval()
    bank = model.amortize([d.text for d in DOCUMENTS])
    with torch.no_grad():
        flat = model.aggregate(["Where is Dev now?"], bank, window=0)
        wide = model.aggregate(["Where is Dev now?"], bank, window=4)
        windowed = model.aggregate(["Where is Dev now?"], bank, window=2)  # two windows, then their outputs
    torch.testing.assert_close(flat, wide)
    assert windowed.shape == flat.shape and not torch.allclose(windowed, flat)


MATCH = MacConfig(**{**CONFIG.__dict__, "match": True})


def test_match_keeps_each_documents_frozen_sentence_embedding_first(encoder: TokenEncoder) -> None:
    model = make_model(encoder, config=MATCH)
    bank = model.amortize([d.text for d in DOCUMENTS])
    assert bank.shape == (4, MATCH.tokens + 1, MATCH.width) and MATCH.bank_tokens == MATCH.tokens + 1
    pooled = torch.tensor(encoder.model.encode([d.text for d in DOCUMENTS]))  # MiniLM's own sentence embedding
    torch.testing.assert_close(bank[:, 0], torch.nn.functional.normalize(pooled, dim=-1), atol=1e-5, rtol=1e-4)
    assert model.aggregate(["Where does Anna live?"], bank).shape == (1, MATCH.tokens, MATCH.width)


def test_match_steers_the_aggregation_to_the_document_the_question_resembles(encoder: TokenEncoder) -> None:
    model = make_model(encoder, config=MATCH).eval()
    bank = model.amortize([d.text for d in DOCUMENTS])
    question = ["Where does Anna live?"]  # DOCUMENTS[0] is about Anna
    with torch.no_grad():
        model.aggregator.match_scale.fill_(1e4)  # type: ignore[union-attr]  # a hard choice by cosine
        chosen = model.aggregate(question, bank, window=0)
        alone = model.aggregate(question, bank[:1], window=0)
        model.aggregator.match_scale.fill_(0.0)  # type: ignore[union-attr]  # plain MAC attention
        plain = model.aggregate(question, bank, window=0)
    torch.testing.assert_close(chosen, alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(plain, alone, atol=1e-3)


def test_match_reads_a_hierarchy_and_trains_its_scale(encoder: TokenEncoder) -> None:
    model = make_model(encoder, config=MATCH)
    bank = model.amortize([d.text for d in DOCUMENTS])
    with torch.no_grad():
        flat = model.aggregate(["Where is Dev now?"], bank, window=0)
        wide = model.aggregate(["Where is Dev now?"], bank, window=4)
        windowed = model.aggregate(["Where is Dev now?"], bank, window=2)
    torch.testing.assert_close(flat, wide)
    assert windowed.shape == flat.shape and not torch.allclose(windowed, flat)
    step_loss(model, [(d, 0) for d in DOCUMENTS], random.Random(0)).backward()
    assert model.aggregator.match_scale.grad is not None  # type: ignore[union-attr]


# "words": the LM is as wide as MiniLM, so a bank row can hold the frozen key (zero-padded otherwise)
WORDS = MacConfig(**{**CONFIG.__dict__, "match": True, "injection": "words"})


def make_words_model(encoder: TokenEncoder, seed: int = 0) -> MacModel:
    torch.manual_seed(seed)
    return MacModel(WORDS, encoder, tiny_model(hidden_size=384), tiny_tokenizer())


def test_key_words_keeps_the_most_surprising_words_in_the_documents_order() -> None:
    words = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1).expand(-1, -1, 3)  # word n of row b: 5b + n
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    surprisal = torch.tensor([[0.5, 9.0, 0.1, 7.0, 3.0], [1.0, 2.0, 99.0, 99.0, 99.0]])
    kept = key_words(words, mask, surprisal, 3)
    assert kept[0, :, 0].tolist() == [1.0, 3.0, 4.0]  # 9, 7 and 3 nats, in the order they were said
    assert kept[1, :, 0].tolist() == [5.0, 6.0, 0.0]  # padding is never chosen; a short row ends in zeros


def test_words_bank_holds_the_lms_own_embeddings_of_the_surprising_words(encoder: TokenEncoder) -> None:
    model = make_words_model(encoder).eval()
    lm, table = model.lm[0], model.lm[0].get_input_embeddings().weight
    with torch.no_grad():
        bank = model.amortize([d.text for d in DOCUMENTS])
        assert bank.shape == (4, 1 + WORDS.tokens, 384) and model.bank_width == 384
        ids = torch.tensor(model.tokenizer(DOCUMENTS[1].text, add_special_tokens=False)["input_ids"])
        nll = -lm(ids[None]).logits[0, :-1].log_softmax(-1).gather(1, ids[1:, None])[:, 0]  # token 0: not scored
        chosen = (torch.topk(nll, WORDS.tokens).indices + 1).sort().values
    torch.testing.assert_close(bank[1, 1:], table[ids[chosen]], atol=1e-5, rtol=1e-4)


def test_words_aggregate_mixes_the_entries_slot_by_slot(encoder: TokenEncoder) -> None:
    model = make_words_model(encoder).eval()
    with torch.no_grad():
        bank = model.amortize([d.text for d in DOCUMENTS])
        pointer = model.aggregator.pointer
        torch.nn.init.zeros_(pointer.query.weight)  # type: ignore[union-attr]
        torch.nn.init.zeros_(pointer.query.bias)  # type: ignore[union-attr]  # every entry alike: the mean
        model.aggregator.match_scale.fill_(0.0)  # type: ignore[union-attr]
        mixed = model.aggregate(["Where does Anna live?"], bank, window=0)
        torch.testing.assert_close(mixed[0], bank[:, 1:].mean(0), atol=1e-5, rtol=1e-4)
        model.aggregator.match_scale.fill_(1e4)  # type: ignore[union-attr]  # a hard choice: Anna's own words
        chosen = model.aggregate(["Where does Anna live?"], bank, window=0)
        torch.testing.assert_close(chosen[0], bank[0, 1:], atol=1e-5, rtol=1e-4)
        # a soft choice by the match alone: windows of 2, then their outputs, give the flat mixture exactly
        # (each window's key scores the log-sum-exp of its entries')
        model.aggregator.match_scale.fill_(3.0)  # type: ignore[union-attr]
        flat = model.aggregate(["Where does Anna live?"], bank, window=0)
        torch.testing.assert_close(model.aggregate(["Where does Anna live?"], bank, window=2), flat,
                                   atol=1e-5, rtol=1e-4)
        assert not torch.allclose(flat[0], bank[0, 1:], atol=1e-3)  # and it is a mixture, not one entry


def test_words_prefix_is_the_lms_own_cache_of_the_start_and_the_words(encoder: TokenEncoder) -> None:
    model = make_words_model(encoder).eval()
    lm, tokenizer = model.lm[0], model.tokenizer
    start = tokenizer("What you remember about the user:", add_special_tokens=False)["input_ids"]
    words = tokenizer("Anna Oslo", add_special_tokens=False)["input_ids"][: WORDS.tokens]
    question = torch.tensor([tokenizer("Where is Anna?", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        embedded = lm.get_input_embeddings()(torch.tensor([words]))
        assert model.prefix(embedded).shape == (1, 2, 2, 4, len(start) + len(words), 96)
        # the LM reads the question as if the start text and those words came before it
        read = model.hidden(question, torch.ones_like(question), embedded)
        whole = lm.base_model(input_ids=torch.cat([torch.tensor([start + words]), question], dim=1)).last_hidden_state
    torch.testing.assert_close(read, whole[:, len(start) + len(words) :], atol=1e-4, rtol=1e-4)


def test_words_gradients_reach_the_aggregator_and_the_start_not_the_lm(encoder: TokenEncoder) -> None:
    model = make_words_model(encoder)
    model.config = MacConfig(**{**WORDS.__dict__, "backprop_fraction": 0.5})  # a frozen document too
    step_loss(model, [(d, 0) for d in DOCUMENTS], random.Random(0)).backward()
    assert all(p.grad is None for p in model.lm[0].parameters())  # the embedding table it copies from too
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert model.prefix.start.grad is not None  # type: ignore[union-attr]


def test_a_words_checkpoint_reads_back_the_same(encoder: TokenEncoder, tmp_path: Path) -> None:
    model = make_words_model(encoder, seed=3).eval()
    model.save(tmp_path)
    again = MacModel.load(tmp_path, encoder=encoder, lm=model.lm[0], tokenizer=model.tokenizer).eval()
    assert MacConfig.load(tmp_path) == WORDS
    bank = model.amortize([d.text for d in DOCUMENTS])
    torch.testing.assert_close(bank, again.amortize([d.text for d in DOCUMENTS]))
    assert model.answer(["Where does Anna live?"], bank, max_new_tokens=4) == \
        again.answer(["Where does Anna live?"], bank, max_new_tokens=4)


def test_a_checkpoint_reads_back_the_same(encoder: TokenEncoder, tmp_path: Path) -> None:
    model = make_model(encoder, seed=3).eval()
    model.save(tmp_path)
    again = MacModel.load(tmp_path, encoder=encoder, lm=model.lm[0], tokenizer=model.tokenizer).eval()
    assert MacConfig.load(tmp_path) == CONFIG
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    bank = model.amortize([d.text for d in DOCUMENTS])
    assert model.answer(["Where does Anna live?"], bank, max_new_tokens=4) == \
        again.answer(["Where does Anna live?"], bank, max_new_tokens=4)


def test_training_lowers_the_loss_and_resumes(encoder: TokenEncoder, tmp_path: Path) -> None:
    model = make_model(encoder)
    first = train(model, DOCUMENTS, tmp_path, steps=6, batch=4, lr=1e-3, save_every=3, progress=False)
    assert [row["step"] for row in first] == [3, 6]
    more = train(make_model(encoder, seed=9), DOCUMENTS, tmp_path, steps=40, batch=4, lr=1e-3, save_every=50,
                 progress=False)
    assert [row["step"] for row in more] == [40]  # resumed at step 6: 34 more steps, one log row
    assert more[-1]["loss"] < first[0]["loss"]


def test_a_time_budget_stops_training_with_the_step_saved(encoder: TokenEncoder, tmp_path: Path) -> None:
    rows = train(make_model(encoder), DOCUMENTS, tmp_path, steps=500, batch=4, lr=1e-3, save_every=100,
                 minutes=0.0, progress=False)
    assert [row["step"] for row in rows] == [1]  # out of time after the first step, saved there
    more = train(make_model(encoder), DOCUMENTS, tmp_path, steps=3, batch=4, lr=1e-3, save_every=100,
                 progress=False)
    assert [row["step"] for row in more] == [3]  # a rerun resumes from the saved step


def test_the_learning_rate_warms_up_holds_and_cools_down() -> None:
    assert [lr_factor(s, 1000) for s in (0, 4, 9, 10, 999)] == [0.1, 0.5, 1.0, 1.0, 1.0]  # 1% warm-up
    assert [lr_factor(s, 1200, cooldown=300) for s in (899, 900, 1050, 1199)] == [1.0, 1.0, 0.5, 1 / 300]
    assert lr_factor(1200, 1200, cooldown=300) == 0.0


def test_bad_settings_and_rows_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="window"):
        MacConfig(window=1)
    with pytest.raises(ValueError, match="backprop_fraction"):
        MacConfig(backprop_fraction=1.5)
    with pytest.raises(ValueError, match="injection"):
        MacConfig(injection="soft")
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "x", "text": "hi", "qa": []}\n{"text": "no id"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"docs.jsonl:2"):
        read_documents(path)


def test_session_chunks_keep_sessions_apart_and_fit_the_encoder(memory: Memory, encoder: TokenEncoder) -> None:
    long_turn = "I went hiking near the lake and saw herons, " * 6
    for session in ("s1", "s2"):
        messages = [m for n in range(3) for m in ({"role": "user", "content": f"{session}: day {n}, {long_turn}"},
                                                  {"role": "assistant", "content": "Ok."})]
        memory.add(messages, user_id="u", session_id=session)
    chunks = session_chunks(memory.get_all(user_id="u"), encoder, max_tokens=200)
    assert all(encoder.count_tokens(c) <= 200 for c in chunks)
    assert len(chunks) >= 4 and not any("s1:" in c and "s2:" in c for c in chunks)


class CountingModel(MacModel):
    """Counts the documents amortized: a bank must amortize each session once."""

    amortized = 0

    def amortize(self, documents):  # type: ignore[no-untyped-def]
        CountingModel.amortized += len(documents)
        return super().amortize(documents)


@pytest.mark.parametrize("config", [CONFIG, WORDS], ids=["linear", "words"])
def test_memory_answers_from_the_users_own_bank(tmp_path: Path, embedder, encoder: TokenEncoder,
                                                config: MacConfig) -> None:
    torch.manual_seed(0)
    CountingModel.amortized = 0
    lm = tiny_model(hidden_size=384) if config.injection == "words" else tiny_model()
    model = CountingModel(config, encoder, lm, tiny_tokenizer()).eval()
    memory = Memory(path=tmp_path, embedder=embedder, mac=model)
    memory.add([{"role": "user", "content": "My friend Anna lives in Oslo."}], user_id="alice", session_id="s1")
    memory.add([{"role": "user", "content": "Ben is a baker."}], user_id="alice", session_id="s2")
    answer = memory.answer("Where does Anna live?", user_id="alice", reader="mac")
    assert not answer.refused and 0.0 < answer.confidence <= 1.0
    assert CountingModel.amortized == 2
    memory.answer("What is Ben's job?", user_id="alice", reader="mac")
    assert CountingModel.amortized == 2  # both sessions were read from the saved bank
    stored = bank_path(tmp_path / "mac", "alice")
    assert stored.exists()
    rows = MemoryBank(stored, checkpoint_id(model)).rows
    assert {tuple(r.shape) for r in rows.values()} == {(config.bank_tokens, model.bank_width)}
    # another user has no bank and no memories: nothing of alice's is read
    assert memory.answer("Where does Anna live?", user_id="bob", reader="mac").refused
    assert not bank_path(tmp_path / "mac", "bob").exists()
    memory.delete_all(user_id="alice")
    assert not stored.exists()


def test_a_bank_prunes_stale_rows_and_ignores_other_checkpoints(tmp_path: Path, encoder: TokenEncoder) -> None:
    model = make_model(encoder).eval()
    path = tmp_path / "bank.safetensors"
    bank = MemoryBank(path, checkpoint_id(model))
    bank.gather(model, ["one", "two"])
    assert len(MemoryBank(path, checkpoint_id(model)).rows) == 2
    MemoryBank(path, checkpoint_id(model)).gather(model, ["two"], prune=True)
    assert len(MemoryBank(path, checkpoint_id(model)).rows) == 1
    assert MemoryBank(path, checkpoint_id(make_model(encoder, seed=1))).rows == {}


def test_the_mac_reader_needs_a_checkpoint(memory: Memory) -> None:
    memory.add([{"role": "user", "content": "I live in Oslo."}], user_id="u")
    with pytest.raises(InputError, match="mac.checkpoint"):
        memory.answer("Where do I live?", user_id="u", reader="mac")
    with pytest.raises(InputError, match="reader"):
        memory.answer("Where do I live?", user_id="u", reader="oracle")  # type: ignore[arg-type]


def test_mac_train_refuses_bad_settings_before_loading_anything(tmp_path: Path) -> None:
    from memagent.cli import main

    with pytest.raises(SystemExit, match="window: must be at least 2"):
        main(["mac", "train", "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "out"), "--window", "1"])


def test_mac_train_takes_match_as_a_switch() -> None:
    import argparse

    from memagent.mac.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["train", "--data", "d.jsonl", "--out", "out"]
    assert parser.parse_args([*base, "--match"]).match is True
    assert parser.parse_args(base).match is False
    assert parser.parse_args([*base, "--no-match"]).match is False
