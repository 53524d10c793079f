"""StreamingChat on the tiny model: chat turns as the template writes them, a conversation that never overflows."""

from __future__ import annotations

import pytest

from memagent.decay.chat import ChatTurns, StreamingChat
from memagent.decay.streaming import CachePolicy
from tests.llm.tiny import tiny_model, tiny_tokenizer

# ChatML with a default system prompt when the chat has none (as Qwen2.5's template does)
CHATML = (
    "{% if messages[0]['role'] != 'system' %}<|system|>You are helpful.<|end|>{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def text(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids)


def test_turns_are_the_template_s_own_and_only_the_first_carries_the_system_prompt() -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHATML
    turns = ChatTurns(tokenizer)
    first = "<|system|>You are helpful.<|end|><|user|>Hi<|end|><|assistant|>"
    assert text(tokenizer, turns.user("Hi", first=True)) == first
    assert text(tokenizer, turns.user("More", first=False)) == "<|user|>More<|end|><|assistant|>"
    assert text(tokenizer, turns.assistant("A")) == "A<|end|>"
    mine = ChatTurns(tokenizer, system="Be brief.")
    assert text(tokenizer, mine.user("Hi", first=True)).startswith("<|system|>Be brief.<|end|><|user|>Hi")
    # a whole chat written turn by turn is the chat the template writes at once
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "A"},
            {"role": "user", "content": "More"}]
    whole = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text(tokenizer, turns.user("Hi", True) + turns.assistant("A") + turns.user("More", False)) == whole


def test_a_tokenizer_without_a_chat_template_is_refused() -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        ChatTurns(tokenizer)


def test_a_long_conversation_stays_within_the_cache_and_keeps_every_turn_whole() -> None:
    model, tokenizer = tiny_model().eval(), tiny_tokenizer()
    policy = CachePolicy("sirllm", start=4, budget=120, decay=0.9)
    chat = StreamingChat(model, tokenizer, policy, max_new_tokens=8)
    for turn in range(12):
        reply = chat.say(f"Message number {turn}: tell me something.")
        assert isinstance(reply, str)
        assert chat.cached_tokens <= policy.size
    assert chat.stream.evicted > 0 and chat.turn_count == 12
    chat.reset()
    assert chat.cached_tokens == 0 and chat.turn_count == 0
    with pytest.raises(ValueError, match="positions"):
        StreamingChat(model, tokenizer, CachePolicy("sirllm", budget=600), max_new_tokens=8)  # 512 positions
