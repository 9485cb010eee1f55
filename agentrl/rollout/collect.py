"""``collect``: the one-call, synchronous way to roll out an environment with a model."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import inspect
from collections.abc import Coroutine
from typing import Any, TypeVar

from agentrl.rollout.config import RolloutConfig, RolloutTask
from agentrl.rollout.manager import RolloutManager
from agentrl.types import TrajectoryGroup

__all__ = ["collect", "run_sync"]

T = TypeVar("T")


def collect(
    env_id: str,
    model: Any = "tiny-random",
    seeds: list[int] = [0, 1],  # noqa: B006  (the public signature; never mutated)
    group_size: int = 4,
    branching: str = "independent",
    max_turns: int = 4,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
    **backend_options: Any,
) -> list[TrajectoryGroup]:
    """Roll out ``env_id`` for every seed and return one group of ``group_size`` per seed.

    Args:
        env_id: a registered environment id, e.g. ``"agentrl/GuessNumber-v0"``.
        model: a name or folder for :func:`agentrl.models.load_model`, or a ``(model,
            tokenizer)`` pair (shared, not copied).
        seeds: env reset seeds; one group per seed, in this order.
        group_size: trajectories per group (leaves per task for ``tree``).
        branching: ``"independent"``, ``"tree"`` or ``"per_turn"``.
        max_turns: turn budget per episode.
        max_new_tokens: generated-token budget per turn.
        temperature: sampling temperature (0: greedy).
        seed: base sampling seed (results are reproducible for the same inputs).
        **backend_options: ``backend=`` an ``InferenceBackend`` instance to use instead of the
            in-process HF backend (with ``tokenizer=`` unless it has a ``tokenizer`` attribute or
            ``model`` names one); ``env_kwargs=`` for the env constructor; any other
            :class:`RolloutConfig` field (``top_p``, ``concurrency``, ``max_total_tokens``,
            ``branch_factor``, ...); the rest go to :class:`agentrl.backends.hf.HFBackend`
            (``max_batch_size``, ``batch_window_ms``, ``prefix_cache_tokens``).

    Returns:
        ``list[TrajectoryGroup]``, one per seed; failed episodes are kept with ``status="failed"``.

    Example:
        >>> groups = collect("agentrl/GuessNumber-v0", "tiny-random", seeds=[0], group_size=2)
        >>> traj = groups[0].trajectories[0]
        >>> len(traj.token_ids) == len(traj.loss_mask) == len(traj.rollout_logprobs)
        True
    """
    opts = dict(backend_options)
    backend = opts.pop("backend", None)
    tokenizer = opts.pop("tokenizer", None)
    env_kwargs = opts.pop("env_kwargs", None) or {}
    cfg_fields = {k: opts.pop(k) for k in list(opts) if k in RolloutConfig.model_fields}
    config = RolloutConfig(branching=branching, max_turns=max_turns, max_new_tokens=max_new_tokens,
                           temperature=temperature, seed=seed, **cfg_fields)
    if isinstance(seeds, int) or not all(isinstance(s, int) for s in seeds):
        raise TypeError(f"seeds must be a list of ints, got {seeds!r}")
    tasks = [RolloutTask(env_id=env_id, env_kwargs=env_kwargs, seed=s, group_size=group_size) for s in seeds]
    owned = backend is None
    if owned:
        backend, tokenizer = _hf_backend(model, opts)
    elif opts:
        raise TypeError(f"collect: unknown option(s) {sorted(opts)} (a backend instance was given)")
    tokenizer = tokenizer or getattr(backend, "tokenizer", None) or _tokenizer_of(model)

    async def go() -> list[TrajectoryGroup]:
        try:
            return await RolloutManager(backend, tokenizer, config).run(tasks)
        finally:
            if owned:
                await backend.close()

    return run_sync(go())


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, even when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with cf.ThreadPoolExecutor(1, thread_name_prefix="agentrl-collect") as pool:
        return pool.submit(asyncio.run, coro).result()


def _hf_backend(model: Any, opts: dict[str, Any]) -> tuple[Any, Any]:
    from agentrl.backends.hf import HFBackend

    allowed = set(inspect.signature(HFBackend).parameters) - {"model", "tokenizer", "model_name"}
    unknown = sorted(set(opts) - allowed)
    if unknown:
        valid = sorted(allowed | set(RolloutConfig.model_fields) | {"backend", "tokenizer", "env_kwargs"})
        raise TypeError(f"collect: unknown option(s) {unknown}; valid: {valid}")
    if isinstance(model, (tuple, list)) and len(model) == 2:
        m, tok = model
    else:
        from agentrl.models import load_model

        m, tok = load_model(model)
    return HFBackend(m, tok, **opts), tok


def _tokenizer_of(model: Any) -> Any:
    if isinstance(model, (tuple, list)) and len(model) == 2:
        return model[1]
    from agentrl.models import load_tokenizer

    return load_tokenizer(model)
