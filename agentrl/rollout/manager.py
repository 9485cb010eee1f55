"""The async rollout manager: many episodes at once against one inference backend.

Paths (episodes, or branches of a tree) run as coroutines in an ``asyncio_pool.AioPool`` of
``concurrency`` slots; each awaits the backend for its turns (which batches concurrent requests)
and runs the env in a thread with a timeout. Groups come out as soon as their last path ends::

    manager = RolloutManager(backend, tokenizer, RolloutConfig(max_turns=4))
    async for group in manager.stream(tasks):   # TrajectoryGroup, in completion order
        ...
    groups = await manager.run(tasks)           # all groups, in task order

The manager never creates an event loop and shares the loop politely with other work (the
trainer's one-step-off mode trains while the next batch is generated). Counters live in
:attr:`RolloutManager.stats`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from asyncio_pool import AioPool

from agentrl.backends.base import InferenceBackend
from agentrl.rollout.config import RolloutConfig, RolloutTask
from agentrl.rollout.episode import TaskRun
from agentrl.types import Trajectory, TrajectoryGroup

__all__ = ["RolloutManager", "RolloutStats"]


@dataclass
class RolloutStats:
    """Counters of a manager (cumulative over its runs; ``reset()`` clears them)."""

    groups: int = 0
    trajectories: int = 0
    failures: int = 0
    generated_tokens: int = 0
    turns: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def episodes_per_s(self) -> float:
        return self.trajectories / max(self.elapsed_s, 1e-9)

    @property
    def tokens_per_s(self) -> float:
        """Generated (model) tokens per second."""
        return self.generated_tokens / max(self.elapsed_s, 1e-9)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def as_dict(self) -> dict[str, float]:
        return {"groups": self.groups, "trajectories": self.trajectories, "failures": self.failures,
                "generated_tokens": self.generated_tokens, "turns": self.turns,
                "elapsed_s": round(self.elapsed_s, 3), "episodes_per_s": round(self.episodes_per_s, 3),
                "tokens_per_s": round(self.tokens_per_s, 2)}


class RolloutManager:
    """Runs tasks' episodes concurrently and yields their ``TrajectoryGroup``s.

    Args:
        backend: any ``InferenceBackend`` (in-process HF, vLLM, SGLang, or a scripted fake).
        tokenizer: the policy's tokenizer (chat template, eos), shared with the trainer.
        config: a :class:`RolloutConfig` (defaults if omitted).
    """

    def __init__(self, backend: InferenceBackend, tokenizer: Any, config: RolloutConfig | None = None) -> None:
        self.backend, self.tokenizer = backend, tokenizer
        self.config = config or RolloutConfig()
        self.stats = RolloutStats()

    async def run(self, tasks: Iterable[RolloutTask | dict[str, Any]]) -> list[TrajectoryGroup]:
        """All groups, in the order of ``tasks``."""
        tasks = [_task(t) for t in tasks]
        ids = _group_ids(tasks)
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"group_id: tasks must have distinct group ids, repeated: {dup}")
        by_id = {g.group_id: g async for g in self.stream(tasks)}
        return [by_id[i] for i in ids]

    async def stream(self, tasks: Iterable[RolloutTask | dict[str, Any]]) -> AsyncIterator[TrajectoryGroup]:
        """Yield each task's group as soon as its last trajectory ends.

        ``tasks`` is consumed lazily (as pool slots free up), so it may be a long generator.
        Leaving the loop early cancels the paths still running.
        """
        out: asyncio.Queue[TrajectoryGroup | BaseException | None] = asyncio.Queue()
        progress = _Progress(self.config.progress)
        feeder = asyncio.ensure_future(self._feed(tasks, out, progress))
        try:
            while True:
                item = await out.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not feeder.done():
                feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
            progress.stop()

    async def _feed(self, tasks: Iterable[RolloutTask | dict[str, Any]], out: asyncio.Queue[Any],
                    progress: _Progress) -> None:
        pool = AioPool(size=self.config.concurrency)

        def spawn(coro: Any) -> None:
            _retrieve(pool.spawn_n(coro))

        def on_leaf(traj: Trajectory) -> None:
            self._count(traj)
            progress.advance(self.stats)

        def on_done(group: TrajectoryGroup) -> None:
            self.stats.groups += 1
            progress.add(len(group) - group.metadata.get("task", {}).get("group_size", len(group)))
            out.put_nowait(group)

        try:
            seen: dict[str, int] = {}
            for i, t in enumerate(tasks):
                task = _task(t)
                run = TaskRun(task, _group_id(task, i, seen), self.backend, self.tokenizer, self.config,
                              spawn, on_leaf, on_done)
                progress.add(task.group_size)
                _retrieve(await pool.spawn(run.start()))
            await pool.join()
            out.put_nowait(None)
        except asyncio.CancelledError:
            await pool.cancel()
            raise
        except BaseException as e:  # a bad task: report it to the consumer
            await pool.cancel()
            out.put_nowait(e)

    def _count(self, traj: Trajectory) -> None:
        s = self.stats
        s.trajectories += 1
        s.failures += traj.status == "failed"
        s.turns += len(traj.turns)
        s.generated_tokens += traj.num_generated


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a pool future's outcome as seen (paths record their own errors; cancellation of
    waiting ones is expected), so asyncio never logs 'exception was never retrieved' at GC."""
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())


def _task(t: RolloutTask | dict[str, Any]) -> RolloutTask:
    return t if isinstance(t, RolloutTask) else RolloutTask.model_validate(t)


def _group_id(task: RolloutTask, index: int, seen: dict[str, int]) -> str:
    if task.group_id:
        return task.group_id
    base = f"{task.env_id}:{task.seed}"
    n = seen.get(base, 0)
    seen[base] = n + 1
    return base if n == 0 else f"{base}:{n}"


def _group_ids(tasks: list[RolloutTask]) -> list[str]:
    seen: dict[str, int] = {}
    return [_group_id(t, i, seen) for i, t in enumerate(tasks)]


class _Progress:
    """A rich progress bar over trajectories (a no-op when disabled)."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        self._task: Any = None
        self._total = 0
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(TextColumn("rollout"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rates]}"), TimeElapsedColumn())
            self._bar.start()
            self._task = self._bar.add_task("rollout", total=0, rates="")

    def add(self, n: int) -> None:
        self._total += n
        if self._bar is not None:
            self._bar.update(self._task, total=self._total)

    def advance(self, stats: RolloutStats) -> None:
        if self._bar is not None:
            rates = (f"{stats.episodes_per_s:.2f} ep/s  {stats.tokens_per_s:.0f} tok/s  "
                     f"failures {stats.failures}")
            self._bar.update(self._task, advance=1, rates=rates)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
