"""Exact multi-turn token bookkeeping on SmolLM2's chat template (shared by tiny-random)."""

from __future__ import annotations

import pytest

from agentrl.rollout.tokens import (
    TokenBuilder,
    check_prefix_property,
    feedback_messages,
    prompt_messages,
)


def _gen(tok, text: str, eos: bool = True) -> tuple[list[int], list[float]]:
    ids = tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])
    return ids, [-0.1 * (i + 1) for i in range(len(ids))]


def _full(tok, messages, gen_prompt=True) -> list[int]:
    out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen_prompt)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


FEEDBACKS = [
    [{"role": "user", "content": "50 is too high."}],
    [{"role": "tool", "content": "{\"result\": 42}", "name": "calculator"}],
    [{"role": "tool", "content": "a"}, {"role": "user", "content": "Now answer.\n  Spaces  "}],
]


@pytest.mark.parametrize("system", [None, "You are terse."], ids=["default-system", "system"])
def test_incremental_ids_equal_full_rendering(tiny, system):
    _, tok = tiny
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": "Guess."}]
    tb = TokenBuilder(tok, msgs)
    assert tb.token_ids == _full(tok, msgs)
    for i, fb in enumerate(FEEDBACKS):
        ids, lps = _gen(tok, f"My answer {i}: <tool_call>x</tool_call> ü")
        action = tb.add_generation(ids, lps)
        tb.add_feedback(fb)
        assert action == f"My answer {i}: <tool_call>x</tool_call> ü"
        assert tb.token_ids == _full(tok, tb.messages), f"turn {i} diverged from the full rendering"
    assert tb.prefix_breaks == []


def test_mask_and_logprobs_align_with_generated_tokens(tiny):
    _, tok = tiny
    tb = TokenBuilder(tok, [{"role": "user", "content": "Hi"}])
    n0 = len(tb.token_ids)
    ids, lps = _gen(tok, "hello there")
    tb.add_generation(ids, lps)
    tb.add_feedback([{"role": "user", "content": "more"}])
    n1 = len(tb.token_ids)
    assert len(tb.token_ids) == len(tb.loss_mask) == len(tb.logprobs)
    assert tb.loss_mask[n0 : n0 + len(ids)] == [1] * len(ids)
    assert tb.logprobs[n0 : n0 + len(ids)] == lps
    assert tb.token_ids[n0 + len(ids) - 1] == tok.eos_token_id  # the model's own eos: mask 1
    assert tb.loss_mask[n0 + len(ids) :] == [0] * (n1 - n0 - len(ids))
    assert all(lp == 0.0 for lp, m in zip(tb.logprobs, tb.loss_mask, strict=True) if m == 0)
    assert tok.decode(tb.token_ids[n0 + len(ids) :]).endswith("<|im_start|>assistant\n")


def test_length_cut_turn_is_closed_with_unmasked_eos(tiny):
    _, tok = tiny
    tb = TokenBuilder(tok, [{"role": "user", "content": "Hi"}])
    ids, lps = _gen(tok, "cut off mid", eos=False)
    n0 = len(tb.token_ids)
    tb.add_generation(ids, lps)
    tb.add_feedback([{"role": "user", "content": "go on"}])
    end = n0 + len(ids)
    assert tb.token_ids[end] == tok.eos_token_id and tb.loss_mask[end] == 0
    assert tb.token_ids == _full(tok, tb.messages)
    tb.add_generation(*_gen(tok, "last", eos=False))
    tb.finish()
    assert tb.token_ids[-1] == tok.eos_token_id and tb.loss_mask[-1] == 0
    assert tb.messages[-1] == {"role": "assistant", "content": "last"}


def test_copy_is_independent(tiny):
    _, tok = tiny
    tb = TokenBuilder(tok, [{"role": "user", "content": "Hi"}])
    twin = tb.copy()
    tb.add_generation(*_gen(tok, "a"))
    assert len(twin.token_ids) < len(tb.token_ids) and twin.messages == [{"role": "user", "content": "Hi"}]


def test_smollm2_template_keeps_the_prefix_property(tiny):
    _, tok = tiny
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
            {"role": "tool", "content": "t"}, {"role": "assistant", "content": "b"}]
    assert check_prefix_property(tok, chat) == []


BREAKING = (  # renders only the last assistant message's content: earlier ones change later
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' and not loop.last %}[hidden]{% else %}{{ m.content }}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_breaking_template_is_detected_and_reported(tiny):
    import copy

    _, tok = tiny
    tok = copy.deepcopy(tok)
    tok.chat_template = BREAKING
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
            {"role": "user", "content": "f"}, {"role": "assistant", "content": "b"}]
    problems = check_prefix_property(tok, chat)
    assert problems and "breaks the prefix property" in problems[0]
    tb = TokenBuilder(tok, chat[:1])
    tb.add_generation(*_gen(tok, "a"))
    tb.add_feedback([{"role": "user", "content": "f"}])
    assert len(tb.prefix_breaks) == 1 and "prefix property" in tb.prefix_breaks[0]
    assert tok.decode(tb.token_ids).endswith("a<|im_end|>\n<|im_start|>user\nf<|im_end|>\n<|im_start|>assistant\n")


def test_prompt_messages_system_tools_and_feedback(tiny):
    _, tok = tiny
    msgs, tools = prompt_messages("task", {"system_prompt": "sys"}, tok)
    assert msgs == [{"role": "system", "content": "sys"}, {"role": "user", "content": "task"}] and tools is None
    schema = [{"type": "function", "function": {"name": "calc", "parameters": {}}}]
    msgs, tools = prompt_messages("task", {"tools": schema}, tok)
    assert tools is None  # SmolLM2 has no native tool support: the schema goes into the system prompt
    assert msgs[0]["role"] == "system" and "calc" in msgs[0]["content"]
    assert feedback_messages("plain", {}) == [{"role": "user", "content": "plain"}]
    fm = feedback_messages("x", {"feedback_messages": [{"role": "tool", "content": "4", "name": "calc"}]})
    assert fm == [{"role": "tool", "content": "4", "name": "calc"}]


def test_add_feedback_requires_an_open_turn(tiny):
    _, tok = tiny
    tb = TokenBuilder(tok, [{"role": "user", "content": "Hi"}])
    with pytest.raises(RuntimeError, match="no assistant turn"):
        tb.add_feedback([{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="logprobs: length 1 != token_ids length 2"):
        tb.add_generation([5, 6], [0.0])
