"""The in-process HF backend: batching, exact logprobs, prefix cache, sampling, weights."""

from __future__ import annotations

import asyncio

import pytest
import torch

from agentrl.backends import InferenceBackend, SamplingParams, make_backend
from agentrl.backends.base import BackendError
from agentrl.backends.hf import HFBackend


def _prompt(tok, text: str) -> list[int]:
    out = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def _reference(model, prompt: list[int], generated: list[int]) -> list[float]:
    """log_softmax(model(prompt + generated)) at each generated token, one plain forward pass."""
    ids = torch.tensor([prompt + generated])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0]  # (T, V)
    return [logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(generated)]


async def _gather(backend, prompts, params):
    return await asyncio.gather(*[backend.generate(p, q) for p, q in zip(prompts, params, strict=True)])


@pytest.fixture
def backend(tiny):
    b = HFBackend(*tiny, max_batch_size=8, batch_window_ms=20)
    yield b
    asyncio.run(b.close())


def test_concurrent_requests_share_forward_passes_and_logprobs_are_exact(tiny, backend):
    model, tok = tiny
    prompts = [_prompt(tok, "word " * (3 * i + 1)) for i in range(6)]  # different lengths: left padding
    params = [SamplingParams(max_new_tokens=6 + i, seed=i) for i in range(6)]
    gens = asyncio.run(_gather(backend, prompts, params))
    assert isinstance(backend, InferenceBackend)
    for p, q, g in zip(prompts, params, gens, strict=True):
        assert len(g.token_ids) == len(g.logprobs) <= q.max_new_tokens
        assert g.finish_reason == ("length" if len(g.token_ids) == q.max_new_tokens else "stop")
        assert max(abs(a - b) for a, b in zip(_reference(model, p, g.token_ids), g.logprobs, strict=True)) < 1e-4
    tokens = sum(len(g.token_ids) for g in gens)
    assert backend.stats["forward_passes"] < tokens / 2  # rows were decoded together


def test_next_turn_reuses_the_prefix_cache_exactly(tiny, backend):
    model, tok = tiny
    p1 = _prompt(tok, "hello there")
    g1 = asyncio.run(backend.generate(p1, SamplingParams(max_new_tokens=8, seed=1)))
    p2 = p1 + g1.token_ids + tok("\n<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n",
                                 add_special_tokens=False)["input_ids"]
    g2 = asyncio.run(backend.generate(p2, SamplingParams(max_new_tokens=8, seed=2)))
    stats = backend.prefix_cache_stats()
    assert stats["hits"] == 1 and stats["hit_tokens"] == len(p1) + len(g1.token_ids) - 1
    assert max(abs(a - b) for a, b in zip(_reference(model, p2, g2.token_ids), g2.logprobs, strict=True)) < 1e-4


def test_greedy_matches_argmax_and_seeds_reproduce(tiny, backend):
    model, tok = tiny
    p = _prompt(tok, "count")
    g = asyncio.run(backend.generate(p, SamplingParams(temperature=0, max_new_tokens=5)))
    ids = list(p)
    with torch.no_grad():
        for _ in range(5):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    assert g.token_ids == ids[len(p):len(p) + len(g.token_ids)]
    a, b, c = asyncio.run(_gather(backend, [p] * 3, [SamplingParams(max_new_tokens=12, seed=s) for s in (7, 7, 8)]))
    assert a.token_ids == b.token_ids and a.token_ids != c.token_ids


def test_top_p_and_temperature_keep_raw_logprobs(tiny, backend):
    model, tok = tiny
    p = _prompt(tok, "x")
    g = asyncio.run(backend.generate(p, SamplingParams(temperature=0.7, top_p=0.5, max_new_tokens=6, seed=3)))
    assert max(abs(a - b) for a, b in zip(_reference(model, p, g.token_ids), g.logprobs, strict=True)) < 1e-4


def test_stop_strings_end_the_row(tiny, backend):
    _, tok = tiny
    p = _prompt(tok, "x")
    free = asyncio.run(backend.generate(p, SamplingParams(max_new_tokens=20, seed=5)))
    pieces = [tok.decode([t]) for t in free.token_ids]
    i, stop = next((i, x) for i, x in enumerate(pieces) if i >= 3 and x.strip() and x not in "".join(pieces[:i]))
    g = asyncio.run(backend.generate(p, SamplingParams(max_new_tokens=20, seed=5, stop=(stop,))))
    assert g.finish_reason == "stop" and tok.decode(g.token_ids).endswith(stop)
    assert g.token_ids == free.token_ids[: i + 1]


def test_update_weights_state_dict_and_folder(tmp_path):
    from agentrl.models import load_model

    model, tok = load_model("tiny-random", seed=1)
    other, _ = load_model("tiny-random", seed=2)
    b = HFBackend(model, tok)
    p = _prompt(tok, "w")
    params = SamplingParams(temperature=0, max_new_tokens=4)

    async def main():
        before = await b.generate(p, params)
        await b.update_weights(other.state_dict(), version=3)
        after = await b.generate(p, params)
        assert b.weight_version == 3 and after.weight_version == 3 and before.weight_version == 0
        assert b.prefix_cache_stats()["hits"] == 0  # the old KV was dropped with the old weights
        assert max(abs(x - y) for x, y in zip(_reference(other, p, after.token_ids), after.logprobs, strict=True)) < 1e-4
        other.save_pretrained(tmp_path)
        await b.update_weights(str(tmp_path))
        assert b.weight_version == 4
        with pytest.raises(KeyError, match="unknown parameter name"):
            await b.update_weights({"nope.weight": torch.zeros(1)})
        await b.close()

    asyncio.run(main())
    assert torch.equal(model.lm_head.weight, other.lm_head.weight)


def test_in_place_change_of_a_shared_model_drops_stale_cache():
    from agentrl.models import load_model

    model, tok = load_model("tiny-random", seed=4)
    b = HFBackend(model, tok)
    p = _prompt(tok, "shared")

    async def main():
        g1 = await b.generate(p, SamplingParams(max_new_tokens=4, seed=0))
        with torch.no_grad():
            model.model.layers[0].mlp.up_proj.weight.mul_(1.5)  # a trainer's optimizer step, in place
        p2 = p + g1.token_ids + [198]
        g2 = await b.generate(p2, SamplingParams(max_new_tokens=4, seed=0))
        await b.close()
        return p2, g2

    p2, g2 = asyncio.run(main())
    assert b.prefix_cache_stats()["hits"] == 0
    assert max(abs(x - y) for x, y in zip(_reference(model, p2, g2.token_ids), g2.logprobs, strict=True)) < 1e-4


def test_cancel_close_and_errors(tiny):
    _, tok = tiny
    b = make_backend("hf", model=tiny[0], tokenizer=tok)
    p = _prompt(tok, "c")

    async def main():
        slow = asyncio.ensure_future(b.generate(p, SamplingParams(max_new_tokens=200, seed=1)))
        await asyncio.sleep(0.05)
        slow.cancel()
        ok = await b.generate(p, SamplingParams(max_new_tokens=3, seed=2))
        assert len(ok.token_ids) <= 3 and await b.health()
        with pytest.raises(ValueError, match="prompt_ids: must contain at least one token id"):
            await b.generate([], SamplingParams())
        await b.close()
        assert not await b.health()
        with pytest.raises(BackendError, match="closed"):
            await b.generate(p, SamplingParams())

    asyncio.run(main())


def test_constructor_validation(tiny):
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        HFBackend(*tiny, max_batch_size=0)
    with pytest.raises(ValueError, match="give either model"):
        HFBackend(*tiny, model_name="tiny-random")
