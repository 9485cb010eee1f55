"""The rollout manager and ``collect``: exact tokens, budgets, failure isolation, streaming."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch
from pydantic import ValidationError

from agentrl.rollout import RolloutConfig, RolloutManager, RolloutTask, collect


def _max_logprob_error(model, traj) -> float:
    """Largest |rollout logprob - log_softmax(model(token_ids))| over the model's tokens."""
    ids = torch.tensor([traj.token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0]  # (T, V)
    pos = [i for i, m in enumerate(traj.loss_mask) if m]
    ref = logp[torch.tensor(pos) - 1, torch.tensor([traj.token_ids[i] for i in pos])]
    got = torch.tensor([traj.rollout_logprobs[i] for i in pos])
    return float((ref - got).abs().max())


def test_collect_on_tiny_is_token_exact(tiny):
    model, tok = tiny
    groups = collect("agentrl/GuessNumber-v0", tiny, seeds=[0, 1], group_size=3, max_turns=3,
                     max_new_tokens=12)
    assert [g.group_id for g in groups] == ["agentrl/GuessNumber-v0:0", "agentrl/GuessNumber-v0:1"]
    for g in groups:
        assert len(g) == 3
        for t in g:
            assert len(t.token_ids) == len(t.loss_mask) == len(t.rollout_logprobs)
            assert t.status == "truncated" and t.metadata["end"] == "max_turns" and len(t.turns) == 3
            assert t.num_generated == sum(len(turn.token_ids) for turn in t.turns)
            assert all(lp == 0.0 for lp, m in zip(t.rollout_logprobs, t.loss_mask, strict=True) if m == 0)
            assert _max_logprob_error(model, t) < 1e-4
            assert t.token_ids[-1] == tok.eos_token_id  # every assistant turn is closed
            assert set(t.reward_components) == {"solved", "format", "turns_used", "ignored_feedback"}
            assert t.reward == pytest.approx(sum(t.reward_weights[k] * v for k, v in t.reward_components.items()))


def test_collect_is_reproducible_and_seeds_differ(tiny):
    kw = dict(seeds=[3], group_size=2, max_turns=2, max_new_tokens=8)
    a = collect("agentrl/GuessNumber-v0", tiny, **kw)[0]
    b = collect("agentrl/GuessNumber-v0", tiny, **kw)[0]
    assert [t.token_ids for t in a] == [t.token_ids for t in b]
    assert a.trajectories[0].token_ids != a.trajectories[1].token_ids  # siblings sample differently


def test_collect_inside_a_running_loop(tiny, scripted):
    async def inner():
        return collect("agentrl/GuessNumber-v0", tiny, seeds=[0], group_size=1, max_turns=1,
                       backend=scripted())
    groups = asyncio.run(inner())
    assert groups[0].trajectories[0].turns[0].action == "50"


def test_collect_rejects_unknown_options(tiny):
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['bogus'\]"):
        collect("agentrl/GuessNumber-v0", tiny, seeds=[0], bogus=1)


def test_config_errors_name_the_field():
    with pytest.raises(ValidationError, match="unknown branching policy 'bush'; valid: independent, per_turn, tree"):
        RolloutConfig(branching="bush")
    with pytest.raises(ValidationError, match=r"max_new_tokens \(64\) must be below max_total_tokens \(32\)"):
        RolloutConfig(max_total_tokens=32)
    with pytest.raises(ValidationError, match="concurrency"):
        RolloutConfig(concurrency=0)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        RolloutConfig(temprature=1.0)


def _run(backend, tok, tasks, **cfg):
    return asyncio.run(RolloutManager(backend, tok, RolloutConfig(**cfg)).run(tasks))


def test_backend_error_once_is_retried(tiny, scripted):
    backend = scripted(fail_first=1)
    groups = _run(backend, tiny[1], [RolloutTask(env_id="agentrl/GuessNumber-v0", seed=0, group_size=1)],
                  max_turns=1, retry_backoff_s=0.0)
    t = groups[0].trajectories[0]
    assert t.status == "truncated" and t.turns[0].action == "50"
    assert len(backend.calls) == 2


def test_backend_that_keeps_failing_marks_the_trajectory_failed(tiny, scripted):
    backend = scripted(fail_first=100)
    groups = _run(backend, tiny[1], [{"env_id": "agentrl/GuessNumber-v0", "seed": 0, "group_size": 2}],
                  max_turns=1, retries=2, retry_backoff_s=0.0)
    assert [t.status for t in groups[0]] == ["failed", "failed"]
    assert "backend failed 3 time(s); last error: scripted failure" in groups[0].trajectories[0].error
    assert len(backend.calls) == 6


def test_raising_env_fails_only_its_trajectory(tiny, scripted):
    tasks = [RolloutTask(env_id="test/Raising-v0", seed=0, group_size=2),
             RolloutTask(env_id="agentrl/GuessNumber-v0", seed=0, group_size=2)]
    groups = _run(scripted(), tiny[1], tasks, max_turns=3)
    bad, good = groups
    for t in bad:
        assert t.status == "failed" and t.error == "RuntimeError: env exploded on purpose"
        assert len(t.turns) == 2 and t.reward == 0.5  # what was collected before the error is kept
        assert len(t.token_ids) == len(t.loss_mask) == len(t.rollout_logprobs)
    assert [t.status for t in good] == ["truncated", "truncated"]


def test_hanging_tool_times_out_and_the_run_goes_on(tiny, scripted):
    tasks = [RolloutTask(env_id="test/Hanging-v0", seed=s, group_size=1) for s in range(6)]
    start = time.monotonic()
    groups = _run(scripted(), tiny[1], tasks, max_turns=2, env_timeout_s=0.5)
    assert time.monotonic() - start < 10
    statuses = [g.trajectories[0].status for g in groups]
    assert "failed" in statuses and "ok" in statuses
    for g in groups:
        t = g.trajectories[0]
        if t.status == "failed":
            assert t.error == "EnvTimeoutError: env.step did not return within 0.5 s"


def test_unknown_env_fails_its_group_not_the_run(tiny, scripted):
    tasks = [{"env_id": "agentrl/Nope-v0", "group_size": 2}, {"env_id": "agentrl/GuessNumber-v0"}]
    groups = _run(scripted(), tiny[1], tasks, max_turns=1)
    assert [t.status for t in groups[0]] == ["failed", "failed"]
    assert "unknown env id 'agentrl/Nope-v0'" in groups[0].trajectories[0].error
    assert len(groups[1]) == 4 and groups[1].trajectories[0].status == "truncated"


def test_token_budget_stops_before_overflow(tiny, scripted):
    backend = scripted(reply=lambda ids, p: "word " * 40)
    groups = _run(backend, tiny[1], [RolloutTask(env_id="test/Echo-v0", group_size=1)],
                  max_new_tokens=30, max_total_tokens=140)
    t = groups[0].trajectories[0]
    assert t.status == "truncated" and t.metadata["end"] == "max_total_tokens"
    assert len(t.token_ids) <= 140
    assert all(p.max_new_tokens <= 30 for _, p in backend.calls)
    # the last call was cut to the room left in the budget
    last_prompt, last_params = backend.calls[-1]
    assert last_params.max_new_tokens == min(30, 140 - len(last_prompt))


def test_tool_feedback_messages_are_rendered(tiny, scripted):
    backend = scripted()
    backend.reply = lambda ids, p: "stop" if len(backend.calls) >= 3 else "hello"
    groups = _run(backend, tiny[1], [RolloutTask(env_id="test/Echo-v0", env_kwargs={"tools": True}, group_size=1)],
                  max_turns=5)
    t = groups[0].trajectories[0]
    assert t.status == "ok" and t.metadata["end"] == "terminated" and t.reward == 1.0
    text = tiny[1].decode(t.token_ids)
    assert "<|im_start|>tool\necho: hello<|im_end|>" in text
    assert "echo" in t.messages[0].content  # tool schema in the system prompt (no native tools)
    assert [m.role for m in t.messages][-3:] == ["assistant", "tool", "assistant"]


def test_stream_yields_groups_as_they_finish(tiny, scripted):
    slow = next(s for s in range(20) if _is_slow(s))
    fast = next(s for s in range(20) if not _is_slow(s))

    async def main():
        manager = RolloutManager(scripted(), tiny[1], RolloutConfig(max_turns=1, env_timeout_s=1.5))
        tasks = [RolloutTask(env_id="test/Hanging-v0", seed=slow, group_size=1),  # hits the timeout
                 RolloutTask(env_id="test/Hanging-v0", seed=fast, group_size=1)]
        order = [g.group_id async for g in manager.stream(tasks)]
        return order, manager.stats

    order, stats = asyncio.run(main())
    assert order == [f"test/Hanging-v0:{fast}", f"test/Hanging-v0:{slow}"]
    assert stats.groups == 2 and stats.trajectories == 2 and stats.failures == 1


def _is_slow(seed: int) -> bool:
    import gymnasium as gym

    env = gym.make("test/Hanging-v0").unwrapped
    env.reset(seed=seed)
    return bool(env.slow)


def test_weight_version_is_recorded(tiny, scripted):
    backend = scripted()
    asyncio.run(backend.update_weights(None, 7))
    groups = _run(backend, tiny[1], [RolloutTask(env_id="agentrl/GuessNumber-v0", group_size=1)], max_turns=2)
    t = groups[0].trajectories[0]
    assert t.weight_version == 7 and [turn.weight_version for turn in t.turns] == [7, 7]


def test_real_model_episode_with_tool_messages_is_token_exact(tiny):
    model, tok = tiny
    groups = collect("test/Echo-v0", tiny, seeds=[0], group_size=2, max_turns=3, max_new_tokens=6,
                     env_kwargs={"tools": True})
    for t in groups[0]:
        assert _max_logprob_error(model, t) < 1e-4
        text = tok.decode(t.token_ids)
        assert text.count("<|im_start|>tool\necho: ") == 2  # two tool results between three turns
        roles = [m.role for m in t.messages]
        assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
        # every token after the prompt is either generated (mask 1) or template/feedback (mask 0)
        assert t.num_generated == sum(len(turn.token_ids) for turn in t.turns)


def test_weights_update_mid_run_is_tolerated_and_recorded():
    from agentrl.backends.hf import HFBackend
    from agentrl.models import load_model

    model, tok = load_model("tiny-random", seed=11)
    other, _ = load_model("tiny-random", seed=12)
    backend = HFBackend(model, tok, max_batch_size=8)
    tasks = [RolloutTask(env_id="agentrl/GuessNumber-v0", seed=s, group_size=2) for s in range(4)]

    async def main():
        manager = RolloutManager(backend, tok, RolloutConfig(max_turns=4, max_new_tokens=8))
        run = asyncio.ensure_future(manager.run(tasks))
        while backend.stats["requests"] < 8:  # the first turns are under way
            await asyncio.sleep(0.01)
        await backend.update_weights(other.state_dict(), version=1)
        groups = await run
        await backend.close()
        return groups

    groups = asyncio.run(main())
    trajs = [t for g in groups for t in g]
    assert all(t.status == "truncated" for t in trajs)
    versions = [turn.weight_version for t in trajs for turn in t.turns]
    assert 0 in versions and 1 in versions
    for t in trajs:
        assert t.weight_version == min(turn.weight_version for turn in t.turns)
        v = [turn.weight_version for turn in t.turns]
        assert v == sorted(v)  # never back to old weights
        if v[0] == 1:  # generated wholly by the new weights: exact under them
            assert _max_logprob_error(other, t) < 1e-4


def test_leaving_the_stream_early_cancels_the_rest(tiny):
    from contextlib import aclosing

    from agentrl.backends.hf import HFBackend

    backend = HFBackend(*tiny, max_batch_size=4)
    tasks = [RolloutTask(env_id="agentrl/GuessNumber-v0", seed=s, group_size=1) for s in range(16)]

    async def main():
        manager = RolloutManager(backend, tiny[1], RolloutConfig(max_turns=3, max_new_tokens=8, concurrency=4))
        async with aclosing(manager.stream(tasks)) as groups:
            async for _ in groups:
                break
        await asyncio.sleep(0.2)
        ok = await backend.health()
        served = backend.stats["requests"]
        await asyncio.sleep(0.3)
        await backend.close()
        return ok, served, backend.stats["requests"], manager.stats.groups

    ok, served, later, n_groups = asyncio.run(main())
    assert ok and served == later  # nothing new reaches the backend after leaving
    assert n_groups < 16


def _guess_with_calculator(**kw):
    from agentrl.envs.guess_number import GuessNumber

    from agentrl.tool import ToolEnv

    return ToolEnv(GuessNumber(), ["calculator"], **kw)


def test_tool_env_episode_tokens_equal_the_full_rendering(tiny, scripted):
    import gymnasium as gym

    if "test/GuessCalc-v0" not in gym.registry:
        gym.register(id="test/GuessCalc-v0", entry_point=_guess_with_calculator, disable_env_checker=True)
    _, tok = tiny
    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "25 * 2"}}\n</tool_call>'
    backend = scripted()
    backend.reply = lambda ids, p: call if len(backend.calls) % 2 == 1 else "50"
    groups = _run(backend, tok, [RolloutTask(env_id="test/GuessCalc-v0", seed=0, group_size=1)], max_turns=3)
    t = groups[0].trajectories[0]
    assert [m.role for m in t.messages] == ["system", "user", "assistant", "tool", "assistant", "user", "assistant"]
    assert t.messages[3].content == "50" and t.turns[0].tool_calls[0].name == "calculator"
    assert "<tools>" in t.messages[0].content  # Hermes-style tool prompt (SmolLM2 has no native tools)
    full = tok.apply_chat_template([m.to_template() for m in t.messages], tokenize=True)
    full = list(full["input_ids"] if hasattr(full, "keys") else full)
    assert t.token_ids == full[:-1]  # all but the template's trailing "\n" after the last <|im_end|>
    gen = [i for i, m in enumerate(t.loss_mask) if m]
    assert [t.token_ids[i] for i in gen] == [x for turn in t.turns for x in turn.token_ids]


def test_run_rejects_duplicate_group_ids(tiny, scripted):
    tasks = [RolloutTask(env_id="agentrl/GuessNumber-v0", group_id="g"), RolloutTask(env_id="agentrl/GuessNumber-v0", group_id="g")]
    with pytest.raises(ValueError, match=r"group_id: tasks must have distinct group ids, repeated: \['g'\]"):
        _run(scripted(), tiny[1], tasks)
