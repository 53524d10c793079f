"""SirLLM's bounded cache on tiny code-built rotary models: shifted keys, eviction order, decay, scores."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM

from memagent.decay.entropy import reference_surprisal, surprisal
from memagent.decay.streaming import CachePolicy, StreamingLM, kept_positions, rotary_of, shift_keys
from tests.llm.tiny import tiny_model


def tiny_qwen2(seed: int = 0) -> Qwen2ForCausalLM:
    """Grouped-query attention (4 query heads, 2 key/value heads) and q/k/v biases, as in Qwen2."""
    config = Qwen2Config(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Qwen2ForCausalLM(config).eval()


MODELS = {"llama": lambda: tiny_model().eval(), "qwen2": tiny_qwen2}
IDS = torch.tensor([5, 77, 13, 200, 42, 9, 120, 33, 250, 7, 64, 18])


@pytest.mark.parametrize("name", sorted(MODELS))
@torch.inference_mode()
def test_keys_run_at_an_offset_then_shifted_back_equal_the_plain_cache(name: str) -> None:
    model = MODELS[name]()
    plain, offset = DynamicCache(), DynamicCache()
    model(input_ids=IDS[None], cache=plain, use_cache=True)
    model(input_ids=IDS[None], cache=offset, use_cache=True, position_ids=torch.arange(100, 100 + len(IDS))[None])
    rotary = rotary_of(model)
    for here, there in zip(plain.layers, offset.layers, strict=True):
        assert not torch.allclose(here.keys, there.keys, atol=1e-2)  # the offset did change the keys
        shifted = shift_keys(there.keys, torch.full((len(IDS),), -100), rotary)
        torch.testing.assert_close(shifted, here.keys, atol=1e-4, rtol=0)
        torch.testing.assert_close(there.values, here.values, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", sorted(MODELS))
@torch.inference_mode()
def test_after_eviction_the_next_token_sees_the_kept_tokens_at_their_new_positions(name: str) -> None:
    """The first layer's keys and values depend only on token and position: after evicting, the kept
    ones equal a fresh run over the kept tokens, and so do the next token's first-layer states."""
    model = MODELS[name]()
    stream = StreamingLM(model, CachePolicy("streaming", start=2, budget=4))
    stream.begin_turn(len(IDS))
    stream.feed(IDS)
    stream.end_turn()
    stream.begin_turn(2)  # 12 + 2 > 6: keep tokens 0, 1 and the 2 most recent
    assert stream.length == 4 and stream.evicted == 8
    kept = IDS[[0, 1, 10, 11]]
    fresh = DynamicCache()
    model(input_ids=kept[None], cache=fresh, use_cache=True)
    torch.testing.assert_close(stream.cache.layers[0].keys, fresh.layers[0].keys, atol=1e-4, rtol=0)
    torch.testing.assert_close(stream.cache.layers[0].values, fresh.layers[0].values, atol=1e-4, rtol=0)


@torch.inference_mode()
def test_a_bfloat16_cache_takes_one_rounding_however_many_evictions_shift_a_key() -> None:
    """One token a turn through a cache of 2 + 30: each kept key is shifted by one position at each
    of ~30 evictions. Rotating the bfloat16 keys each time would drift by ~0.2% of their norm per
    eviction; the float32 copies keep the first layer's keys as close to a fresh bfloat16 run over
    the kept tokens as one rounding allows."""
    model = tiny_qwen2().to(torch.bfloat16)
    stream = StreamingLM(model, CachePolicy("streaming", start=2, budget=30))
    ids = torch.randint(1, 300, (80,), generator=torch.Generator().manual_seed(0))
    for token in ids:
        stream.begin_turn(1)
        stream.feed(token[None])
        stream.end_turn()
    assert stream.evicted == 80 - 32
    fresh = DynamicCache()
    model(input_ids=torch.cat([ids[:2], ids[-30:]])[None], cache=fresh, use_cache=True)
    kept, plain = stream.cache.layers[0].keys.float(), fresh.layers[0].keys.float()
    assert kept.dtype == torch.float32 and stream.cache.layers[0].keys.dtype == torch.bfloat16
    assert float((kept - plain).norm() / plain.norm()) < 0.006


def test_sirllm_keeps_the_sinks_the_top_scores_within_budget_minus_incoming_then_the_most_recent() -> None:
    scores = torch.tensor([0.1, 0.2, 9.0, 0.3, 8.0, 0.4, 7.0, 0.5, 0.6, 0.7])
    policy = CachePolicy("sirllm", start=2, budget=5, recent=0)  # size 7
    assert kept_positions(policy, scores[:5], incoming=2) is None  # 5 + 2 fit in 7
    # 3 incoming: room 4 (7 − 3); top (5 − 3) = 2 scores are positions 2 and 4, then sinks 0, 1
    assert kept_positions(policy, scores, incoming=3).tolist() == [0, 1, 2, 4]
    # 1 incoming: room 6; top 4 = 2, 4, 6, 9 (0.7); sinks 0, 1
    assert kept_positions(policy, scores, incoming=1).tolist() == [0, 1, 2, 4, 6, 9]
    # a sink among the top scores leaves a slot to the most recent token not kept yet
    scores[0] = 10.0
    assert kept_positions(policy, scores, incoming=3).tolist() == [0, 1, 2, 9]
    streaming = CachePolicy("streaming", start=2, budget=5)
    assert kept_positions(streaming, scores, incoming=3).tolist() == [0, 1, 8, 9]
    assert kept_positions(CachePolicy("full"), scores, incoming=10_000) is None
    assert kept_positions(policy, scores, incoming=50).tolist() == [0, 1]  # longer than the cache: the sinks


def test_ties_go_to_the_earlier_token() -> None:
    policy = CachePolicy("sirllm", start=1, budget=3)
    assert kept_positions(policy, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 0.0]), incoming=1).tolist() == [0, 1, 2]


def test_policy_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="decay"):
        CachePolicy(decay=0.0)
    with pytest.raises(ValueError, match="budget"):
        CachePolicy(budget=-1)
    with pytest.raises(ValueError, match="kind"):
        CachePolicy("lru")  # type: ignore[arg-type]


def test_paper_scores_are_surprisals_and_the_reference_is_off_by_one_exactly() -> None:
    torch.manual_seed(0)
    logits, ids = torch.randn(5, 7), torch.tensor([3, 1, 4, 1, 5])
    logprobs = torch.log_softmax(logits, dim=-1)
    expected = [0.0] + [-float(logprobs[i - 1, ids[i]]) for i in range(1, 5)]
    assert surprisal(logits, ids, None).tolist() == pytest.approx(expected, abs=1e-6)
    before = torch.randn(7)
    head = -float(torch.log_softmax(before, dim=-1)[ids[0]])
    assert surprisal(logits, ids, before).tolist() == pytest.approx([head, *expected[1:]], abs=1e-6)
    # the reference's _cal_selfinfo, transcribed: -log softmax gathered at the unshifted ids,
    # the maximum put in front, the last value dropped
    token_entropy = -torch.log(torch.softmax(logits, dim=-1))
    values = token_entropy.gather(-1, ids.unsqueeze(-1)).squeeze(-1).tolist()
    reference = ([max(values)] + values)[:-1]
    assert reference_surprisal(logits, ids).tolist() == pytest.approx(reference, abs=1e-6)
    assert reference_surprisal(logits, ids).tolist() != pytest.approx(expected, abs=1e-3)


@torch.inference_mode()
def test_turn_scores_decay_each_turn_and_new_ones_come_undecayed() -> None:
    model = tiny_model().eval()
    stream = StreamingLM(model, CachePolicy("sirllm", start=1, budget=100, decay=0.5))
    first, second = IDS[:5], IDS[5:8]
    stream.begin_turn(5)
    logits_first = stream.feed(first)
    stream.end_turn()
    one = surprisal(logits_first, first, None)
    assert stream.scores.tolist() == pytest.approx(one.tolist(), abs=1e-5)
    stream.begin_turn(3)
    logits_second = stream.feed(second)
    stream.end_turn()
    two = surprisal(logits_second, second, logits_first[-1])  # its first token: by the turn before's last logits
    assert stream.scores.tolist() == pytest.approx([*(0.5 * one).tolist(), *two.tolist()], abs=1e-5)
    # the same stream at once scores the same (the cache changes nothing while it is not full)
    whole = DynamicCache()
    logits = model(input_ids=IDS[None, :8], cache=whole, use_cache=True).logits[0]
    assert two.tolist() == pytest.approx(surprisal(logits, IDS[:8], None)[5:].tolist(), abs=1e-4)


@pytest.mark.parametrize("name", sorted(MODELS))
@torch.inference_mode()
def test_choices_on_the_shared_cache_score_as_whole_turns_would(name: str) -> None:
    """Trying each choice on one cache gives the first-token log-probability a whole forward over
    prompt + choice gives (the reference's way), and keeps the chosen branch."""
    model = MODELS[name]()
    stream = StreamingLM(model, CachePolicy("full"))
    history, prompt = IDS[:4], IDS[4:8]
    choices = [torch.tensor([10, 11]), torch.tensor([40]), torch.tensor([90, 91, 92])]
    stream.begin_turn(4)
    stream.feed(history)
    stream.end_turn()
    pick = stream.choose(prompt, choices, greedy_first=False)
    firsts = []
    for choice in choices:
        logits = model(input_ids=torch.cat([history, prompt, choice])[None]).logits[0]
        firsts.append(float(torch.log_softmax(logits[7], dim=-1)[choice[0]]))
    assert pick == max(range(3), key=lambda n: firsts[n])
    assert stream.length == 8 + len(choices[pick]) and stream.scores.numel() == stream.length
    # greedy first: of two choices with the same first token, the one greedy decoding produces
    # whole wins, though the other comes first and ties on the first token's log-probability
    g1 = int(model(input_ids=torch.cat([history, prompt])[None]).logits[0, -1].argmax())
    g2 = int(model(input_ids=torch.cat([history, prompt, torch.tensor([g1])])[None]).logits[0, -1].argmax())
    candidates = [torch.tensor([g1, (g2 + 1) % 256]), torch.tensor([g1, g2])]
    for greedy_first, expected in ((False, 0), (True, 1)):
        stream.reset()
        stream.begin_turn(4)
        stream.feed(history)
        stream.end_turn()
        assert stream.choose(prompt, candidates, greedy_first=greedy_first) == expected


@torch.inference_mode()
def test_a_generated_reply_never_overflows_the_cache() -> None:
    model = tiny_model().eval()
    policy = CachePolicy("sirllm", start=4, budget=20, decay=0.9)
    stream = StreamingLM(model, policy)
    for _turn in range(6):
        reply = stream.generate(IDS, max_new_tokens=6, stop_ids={256})
        assert 1 <= len(reply) <= 6
        assert stream.length <= policy.size and stream.scores.numel() == stream.length
        assert math.isfinite(float(stream.scores.sum()))
    assert stream.evicted > 0
