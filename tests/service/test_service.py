"""The rollout service over real HTTP: a uvicorn server on 127.0.0.1 with the tiny model."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
import torch

from agentrl.env import env_specs
from agentrl.rollout import RolloutConfig, RolloutTask
from agentrl.service import RolloutClient, RolloutServiceError, ServiceBusyError

pytestmark = pytest.mark.timeout(120)
T = TypeVar("T")
GUESS = "agentrl/GuessNumber-v0"
GATE = "service-test/Gate-v0"
SMALL = RolloutConfig(max_turns=2, max_new_tokens=8, max_total_tokens=512)


def run(coro: Awaitable[T], timeout: float = 60) -> T:
    """Run a test coroutine with a hard bound on its time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def wait_until(client: RolloutClient, pred: Callable[[dict[str, Any]], bool],
                     timeout: float = 10) -> dict[str, Any]:
    """Poll /health until ``pred(report)`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        report = await client.health()
        if pred(report):
            return report
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"health never satisfied the condition; last report: {report}")
        await asyncio.sleep(0.02)


def logprob_error(model: Any, traj: Any) -> float:
    """Largest |rollout logprob - log_softmax(model(token_ids))| over the model's tokens."""
    ids = torch.tensor([traj.token_ids])  # (1, T)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0]  # (T, V)
    pos = torch.tensor([i for i, m in enumerate(traj.loss_mask) if m])  # (G,)
    ref = logp[pos - 1, torch.tensor(traj.token_ids)[pos]]  # (G,)
    return float((ref - torch.tensor(traj.rollout_logprobs)[pos]).abs().max())


def assert_token_exact(traj: Any, model: Any) -> None:
    assert len(traj.token_ids) == len(traj.loss_mask) == len(traj.rollout_logprobs)
    assert traj.token_ids[: len(traj.prompt_ids)] == traj.prompt_ids
    assert all(lp == 0.0 for lp, m in zip(traj.rollout_logprobs, traj.loss_mask, strict=True) if m == 0)
    assert traj.num_generated == sum(len(t.token_ids) for t in traj.turns) > 0
    assert logprob_error(model, traj) < 1e-4


def test_stream_yields_groups_as_they_finish_with_exact_tokens(live_server, tiny, gates):
    server, _ = live_server(default_config=SMALL)
    tasks = [RolloutTask(env_id=GUESS, seed=s, group_size=2) for s in (0, 1)]
    tasks.append(RolloutTask(env_id=GATE, env_kwargs={"gate": "incremental"}, group_size=1))

    async def main() -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        async with RolloutClient(server.url, timeout=30) as client:
            got, during = [], {}
            async for group in client.stream(tasks):
                got.append(group)
                if len(got) == 2:  # the gated group cannot be done: the stream must be incremental
                    during = await client.health()
                    gates.open("incremental")
            return got, during, client.last_stats

    groups, during, stats = run(main())
    assert [g.group_id for g in groups[:2]] in (
        [f"{GUESS}:0", f"{GUESS}:1"], [f"{GUESS}:1", f"{GUESS}:0"])
    assert groups[2].group_id == f"{GATE}:0" and groups[2].trajectories[0].reward == 1.0
    assert during["requests"]["active"] == 1 and during["rollouts"]["groups"] == 2
    assert stats["groups"] == 3 and stats["trajectories"] == 5 and stats["failures"] == 0
    for group in groups[:2]:
        assert len(group) == 2
        for traj in group:
            assert traj.env_id == GUESS and len(traj.turns) == 2  # max_turns from the default
            assert_token_exact(traj, tiny[0])


def test_collect_keeps_task_order_and_isolates_a_failing_episode(live_server):
    server, _ = live_server(default_config=SMALL)
    tasks = [{"env_id": "service-test/Boom-v0", "seed": 0, "group_size": 2},
             {"env_id": GUESS, "seed": 3, "group_size": 2}]

    async def main() -> tuple[list[Any], dict[str, Any]]:
        async with RolloutClient(server.url, timeout=30) as client:
            groups = await client.collect(tasks, max_turns=1)
            return groups, await client.health()

    groups, health = run(main())
    assert [g.group_id for g in groups] == ["service-test/Boom-v0:0", f"{GUESS}:3"]
    assert all(t.status == "failed" and "env exploded on purpose" in t.error for t in groups[0])
    assert all(t.status != "failed" and len(t.turns) == 1 for t in groups[1])  # override applied
    assert health["rollouts"]["failures"] == 2 and health["rollouts"]["trajectories"] == 4
    assert health["requests"] == {"total": 1, "rejected": 0, "disconnected": 0, "active": 0,
                                  "max_concurrent": 4}


BAD_REQUESTS = {
    "unknown-env": ([{"env_id": "agentrl/Nope-v0"}], {},
                    ["body.tasks.0.env_id", "unknown env id 'agentrl/Nope-v0'", GUESS]),
    "bad-config-value": ([{"env_id": GUESS}], {"max_new_tokens": 0},
                         ["body.config.max_new_tokens", "greater than or equal to 1"]),
    "unknown-config-field": ([{"env_id": GUESS}], {"temprature": 0.5},
                             ["body.config.temprature", "unknown config field", "temperature"]),
    "bad-branching": ([{"env_id": GUESS}], {"branching": "forest"},
                      ["body.config.branching", "independent"]),
    "budget-cross-field": ([{"env_id": GUESS}], {"max_new_tokens": 600, "max_total_tokens": 512},
                           ["body.config", "must be below max_total_tokens"]),
    "bad-task-field": ([{"env_id": GUESS, "group_size": 0}], {},
                       ["body.tasks.0.group_size", "greater than or equal to 1"]),
    "unknown-task-field": ([{"env_id": GUESS, "sead": 1}], {}, ["body.tasks.0.sead", "Extra inputs"]),
    "repeated-group-id": ([{"env_id": GUESS, "group_id": "a"}, {"env_id": GUESS, "group_id": "a"}],
                          {}, ["body.tasks.1.group_id", "must be distinct"]),
    "no-tasks": ([], {}, ["body.tasks", "at least 1"]),
    "all-problems-at-once": ([{"env_id": "agentrl/Nope-v0"}], {"top_p": 2},
                             ["body.tasks.0.env_id", "body.config.top_p", "less than or equal to 1"]),
}


@pytest.mark.parametrize("route", ["stream", "collect"])
@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_bad_requests_get_422_naming_the_field(live_server, case, route):
    server, _ = live_server(default_config=SMALL)
    tasks, config, needles = BAD_REQUESTS[case]

    async def main() -> tuple[RolloutServiceError, dict[str, Any]]:
        async with RolloutClient(server.url, timeout=30) as client:
            with pytest.raises(RolloutServiceError) as info:
                if route == "stream":
                    _ = [g async for g in client.stream(tasks, **config)]
                else:
                    await client.collect(tasks, **config)
            return info.value, await client.health()

    err, health = run(main())
    assert err.status == 422
    for needle in needles:
        assert needle in str(err)
    assert health["requests"]["active"] == 0 and health["requests"]["total"] == 0  # nothing ran


def test_malformed_json_is_422_not_500(live_server):
    server, _ = live_server()
    resp = httpx.post(f"{server.url}/rollouts", content=b"{not json", timeout=10,
                      headers={"content-type": "application/json"})
    assert resp.status_code == 422 and resp.json()["detail"][0]["type"] == "json_invalid"


def test_busy_server_answers_429_then_serves_again(live_server, gates):
    server, _ = live_server(default_config=SMALL, max_concurrent_requests=1)
    gated = [RolloutTask(env_id=GATE, env_kwargs={"gate": "busy"}, group_size=1)]

    async def main() -> tuple[ServiceBusyError, list[Any], list[Any], dict[str, Any]]:
        async with RolloutClient(server.url, timeout=30) as client:
            first = asyncio.ensure_future(client.collect(gated))
            await wait_until(client, lambda h: h["requests"]["active"] == 1)
            with pytest.raises(ServiceBusyError) as info:
                await client.collect([{"env_id": GUESS}])
            gates.open("busy")
            done = await first
            again = await client.collect([{"env_id": GUESS, "group_size": 1}])
            return info.value, done, again, await client.health()

    busy, first, again, health = run(main())
    assert busy.status == 429
    assert "server busy" in str(busy) and "max_concurrent_requests=1" in str(busy)
    assert len(first) == 1 and len(again) == 1 and again[0].group_id == f"{GUESS}:0"
    assert health["requests"]["rejected"] == 1 and health["requests"]["total"] == 2


def test_client_disconnect_cancels_its_episodes(live_server, gates):
    server, _ = live_server(default_config=SMALL, max_concurrent_requests=1)
    tasks = [RolloutTask(env_id=GUESS, seed=0, group_size=1),
             RolloutTask(env_id=GATE, env_kwargs={"gate": "left"}, group_size=3)]

    async def main() -> tuple[Any, dict[str, Any], int, list[Any]]:
        async with RolloutClient(server.url, timeout=30) as client:
            async with contextlib.aclosing(client.stream(tasks)) as stream:
                first = await anext(stream)  # then leave: the connection closes
            # the gated steps wait up to 20 s: the request can only end this soon if cancelled
            health = await wait_until(client, lambda h: h["requests"]["active"] == 0, timeout=10)
            passed = gates.passed("left")
            after = await client.collect([{"env_id": GUESS, "seed": 5, "group_size": 1}])
            return first, health, passed, after

    first, health, passed, after = run(main())
    gates.open("left")  # release the env threads the cancelled paths left behind
    assert first.group_id == f"{GUESS}:0"
    assert health["requests"]["disconnected"] == 1 and passed == 0
    assert after[0].group_id == f"{GUESS}:5"  # the slot was given back


def test_weight_update_bumps_version_and_changes_the_policy(live_server, tiny, tmp_path):
    server, backend = live_server(default_config=SMALL)
    new = copy.deepcopy(tiny[0])
    with torch.no_grad():
        for p in new.parameters():
            p.add_(0.05 * torch.randn_like(p))
    new.save_pretrained(tmp_path / "step-1", safe_serialization=True)
    (tmp_path / "empty").mkdir()

    async def main() -> tuple[int, dict[str, Any], list[Any], list[RolloutServiceError]]:
        async with RolloutClient(server.url, timeout=30) as client:
            version = await client.update_weights(str(tmp_path / "step-1"), version=7)
            health = await client.health()
            groups = await client.collect([{"env_id": GUESS, "seed": 1, "group_size": 2}])
            errors = []
            for path in (tmp_path / "missing", tmp_path / "empty"):
                with pytest.raises(RolloutServiceError) as info:
                    await client.update_weights(str(path))
                errors.append(info.value)
            return version, health, groups, errors

    version, health, groups, errors = run(main())
    assert version == 7 and health["weight_version"] == 7 and backend.weight_version == 7
    for traj in groups[0]:
        assert traj.weight_version == 7 and all(t.weight_version == 7 for t in traj.turns)
        assert_token_exact(traj, new)  # sampled by the new weights, not the old ones
        assert logprob_error(tiny[0], traj) > 1e-3
    assert [e.status for e in errors] == [422, 422]
    assert "body.path" in str(errors[0]) and "no such folder on the server" in str(errors[0])
    assert "body.path" in str(errors[1]) and "no *.safetensors file" in str(errors[1])


def test_health_envs_and_lifespan_closes_the_backend(live_server):
    server, backend = live_server()

    async def main() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with RolloutClient(server.url, timeout=30) as client:
            return await client.health(), await client.envs()

    health, envs = run(main())
    assert health["healthy"] is True and health["status"] == "ok" and health["weight_version"] == 0
    assert health["rollouts"]["groups"] == 0 and health["requests"]["active"] == 0
    by_id = {e["id"]: e for e in envs}
    for spec in env_specs():
        assert by_id[spec.id]["components"] == spec.components
        assert by_id[spec.id]["tools"] == list(spec.tools)
    assert {"solved", "format", "turns_used"} <= set(by_id[GUESS]["components"])
    assert run(backend.health()) is True
    server.stop()
    assert run(backend.health()) is False


def test_serve_rejects_unknown_options_before_loading_anything():
    from agentrl.service import serve

    with pytest.raises(TypeError, match=r"serve: unknown option\(s\) \['max_batch'\]; valid: .*max_batch_size"):
        serve("tiny-random", port=1, max_batch=4)


def test_shutdown_cancels_running_streams_and_closes_the_backend(live_server, gates):
    server, backend = live_server(default_config=SMALL)
    gated = [RolloutTask(env_id=GATE, env_kwargs={"gate": "shutdown"}, group_size=2)]

    async def main() -> tuple[RolloutServiceError, float]:
        async with RolloutClient(server.url, timeout=30) as client:
            stream = asyncio.ensure_future(client.collect(gated))
            streaming = client.stream(gated)
            first = asyncio.ensure_future(anext(streaming))
            await wait_until(client, lambda h: h["requests"]["active"] == 2)
            t0 = asyncio.get_running_loop().time()
            await asyncio.to_thread(server.stop)  # graceful timeout 1 s, then lifespan cancels
            stopped = asyncio.get_running_loop().time() - t0
            with pytest.raises(RolloutServiceError) as info:
                await first
            with contextlib.suppress(RolloutServiceError, httpx.HTTPError):
                await stream
            return info.value, stopped

    err, stopped = run(main())
    assert gates.passed("shutdown") == 0 and stopped < 10  # the gated steps wait up to 20 s
    assert "stream" in str(err)
    assert run(backend.health()) is False
