"""One task's rollout: paths that take turns against the backend and the env, and fork.

A :class:`TaskRun` owns the tree of one task. It resets the env once, renders the prompt, and
runs the root path. Before every turn it asks the task's :class:`TreeBudget` how many children
the path gets there; children are forked from the parent's state (env copy, token builder
copy) and spawned as paths of their own. When the last path of the task ends, the leaves
become one :class:`TrajectoryGroup`.

Failure isolation: an env or tool that raises or hangs (``env_timeout_s``), a backend that keeps
failing after its retries, or any bug in between marks *that path's* trajectory ``failed`` with
the error, keeping the tokens it had; the other paths and tasks go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from agentrl.backends.base import BackendError, Generation, InferenceBackend, SamplingParams
from agentrl.env import make
from agentrl.rollout.branching import BRANCHING, TreeBudget
from agentrl.rollout.config import RolloutConfig, RolloutTask
from agentrl.rollout.tokens import TokenBuilder, feedback_messages, prompt_messages
from agentrl.types import Message, ToolCall, Trajectory, TrajectoryGroup, Turn

__all__ = ["EnvTimeoutError", "TaskRun", "in_thread", "request_seed"]


class EnvTimeoutError(TimeoutError):
    """``env.reset`` or ``env.step`` did not return within ``env_timeout_s``."""


def request_seed(*parts: Any) -> int:
    """A stable 63-bit seed derived from ``parts`` (base seed, task seed, path, turn)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


async def in_thread(fn: Callable[..., Any], *args: Any, timeout: float, what: str, **kwargs: Any) -> Any:
    """Run blocking ``fn`` in a daemon thread; a hang costs a thread, never the run or the exit."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def deliver(result: Any, error: BaseException | None) -> None:
        if not fut.done():
            fut.set_exception(error) if error is not None else fut.set_result(result)

    def work() -> None:
        try:
            out, err = fn(*args, **kwargs), None
        except BaseException as e:
            out, err = None, e
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(deliver, out, err)

    threading.Thread(target=work, name=f"agentrl-{what}", daemon=True).start()
    try:
        return await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        raise EnvTimeoutError(f"{what} did not return within {timeout} s") from None


@dataclass
class PathState:
    """Everything one root-to-leaf path has accumulated."""

    env: Any
    tb: TokenBuilder
    path: tuple[int, ...] = ()
    depth: int = 0
    branch_points: list[int] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    feedbacks: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    components: dict[str, float] = field(default_factory=dict)
    reward: float = 0.0
    states: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)
    end: str | None = None
    error: str | None = None
    granted: bool = False  # a forked child: its turn at ``depth`` is already reserved

    def fork(self, index: int, position: int) -> PathState:
        """A sibling at the same state; its env is a deep copy (or ``None``: replay later)."""
        try:
            env = copy.deepcopy(self.env)
        except Exception:  # e.g. an env holding a subprocess or a lock
            env = None
        return PathState(
            env, self.tb.copy(), (*self.path, index), self.depth, [*self.branch_points, position],
            list(self.turns), list(self.feedbacks), list(self.actions), dict(self.components),
            self.reward, list(self.states), granted=True,
        )


class TaskRun:
    """The rollout tree of one task; ``spawn`` schedules child paths in the manager's pool."""

    def __init__(self, task: RolloutTask, group_id: str, backend: InferenceBackend, tokenizer: Any,
                 cfg: RolloutConfig, spawn: Callable[[Coroutine[Any, Any, None]], None],
                 on_leaf: Callable[[Trajectory], None], on_done: Callable[[TrajectoryGroup], None]) -> None:
        self.task, self.group_id, self.cfg = task, group_id, cfg
        self.backend, self.tokenizer = backend, tokenizer
        self.spawn, self.on_leaf, self.on_done = spawn, on_leaf, on_done
        self.leaves: list[Trajectory] = []
        self.live = 0
        self.budget: TreeBudget | None = None
        self.reward_weights: dict[str, float] = {}

    async def start(self) -> None:
        """Reset the env, render the prompt and run the root path."""
        self.live = 1
        try:
            env = await in_thread(make, self.task.env_id, timeout=self.cfg.env_timeout_s, what="env make",
                                  **self.task.env_kwargs)
            obs, info = await in_thread(env.reset, seed=self.task.seed, timeout=self.cfg.env_timeout_s,
                                        what="env.reset")
            self.reward_weights = dict(getattr(env, "reward_weights", {}))
            messages, tools = prompt_messages(obs, info, self.tokenizer)
            tb = TokenBuilder(self.tokenizer, messages, tools)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._fail_group(e)
            return
        turns = self.cfg.max_turns or int(getattr(env, "max_turns", 1))
        self.budget = TreeBudget(BRANCHING.get(self.cfg.branching)(self.task.group_size, turns, self.cfg))
        await self.run_path(PathState(env, tb))

    async def run_path(self, st: PathState) -> None:
        try:
            await self._loop(st)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            st.end, st.error = "error", f"{type(e).__name__}: {e}"
        finally:
            self._finish(st)

    async def _loop(self, st: PathState) -> None:
        cfg = self.cfg
        assert self.budget is not None
        while st.end is None:
            room = cfg.max_total_tokens - len(st.tb.token_ids)
            if cfg.max_turns is not None and st.depth >= cfg.max_turns:
                st.end = "max_turns"
            elif room < 1:
                st.end = "max_total_tokens"
            elif (k := 1 if st.granted else self.budget.grant(st.depth)) == 0:
                st.end = "node_budget"
            else:
                st.granted = False
                if k > 1:
                    self._branch(st, k)
                await self._turn(st, min(cfg.max_new_tokens, room))

    def _branch(self, st: PathState, k: int) -> None:
        position = len(st.tb.token_ids)
        children = [st.fork(i, position) for i in range(1, k)]  # fork before the parent moves on
        st.path, st.branch_points = (*st.path, 0), [*st.branch_points, position]
        for child in children:
            self.live += 1
            self.spawn(self.run_path(child))

    async def _turn(self, st: PathState, max_new: int) -> None:
        cfg = self.cfg
        if st.env is None:
            st.env = await self._replay(st.actions)
        params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=max_new,
                                stop=cfg.stop, seed=request_seed(cfg.seed, self.task.seed, st.path, st.depth))
        gen = await self._generate(st.tb.token_ids, params)
        action = st.tb.add_generation(gen.token_ids, gen.logprobs)
        st.actions.append(action)
        st.turns.append(Turn(action=action, token_ids=gen.token_ids, logprobs=gen.logprobs,
                             finish_reason=gen.finish_reason, weight_version=gen.weight_version))
        obs, reward, terminated, truncated, info = await in_thread(
            st.env.step, action, timeout=cfg.env_timeout_s, what="env.step")
        self._record(st, obs, float(reward), info)
        st.depth += 1
        if terminated or truncated:
            st.end = "terminated" if terminated else "env_truncated"
            return
        if cfg.max_turns is not None and st.depth >= cfg.max_turns:
            st.end = "max_turns"  # no next turn: its feedback and generation prompt are not needed
            return
        before = st.tb.copy()
        st.tb.add_feedback(feedback_messages(obs, info))
        if len(st.tb.token_ids) > cfg.max_total_tokens:  # the feedback does not fit: stop before it
            st.tb, st.end = before, "max_total_tokens"
            return
        st.states.append((st.depth - 1, st.path))
        assert self.budget is not None
        if self.budget.merge(st.depth - 1, tuple(st.feedbacks), st.path):
            st.end = "merged"

    def _record(self, st: PathState, obs: str, reward: float, info: dict[str, Any]) -> None:
        comps = {k: float(v) for k, v in (info.get("reward_components") or {}).items()}
        turn = st.turns[-1]
        turn.feedback, turn.reward, turn.reward_components = obs, reward, comps
        turn.tool_calls = [ToolCall.model_validate(c) for c in info.get("tool_calls") or []]
        st.feedbacks.append(obs)
        st.reward += reward
        for k, v in comps.items():
            st.components[k] = st.components.get(k, 0.0) + v

    async def _generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        cfg, last = self.cfg, None
        for attempt in range(cfg.retries + 1):
            try:
                return await asyncio.wait_for(self.backend.generate(prompt_ids, params), cfg.call_timeout_s)
            except (BackendError, asyncio.TimeoutError) as e:
                last = e if isinstance(e, BackendError) else BackendError(f"call timed out after {cfg.call_timeout_s} s")
                if attempt < cfg.retries:
                    await asyncio.sleep(cfg.retry_backoff_s * 2**attempt)
        raise BackendError(f"backend failed {cfg.retries + 1} time(s); last error: {last}")

    async def _replay(self, actions: list[str]) -> Any:
        """A fresh env brought to the same state by replaying the actions (envs that cannot be copied)."""
        t, timeout = self.task, self.cfg.env_timeout_s
        env = await in_thread(make, t.env_id, timeout=timeout, what="env make", **t.env_kwargs)
        await in_thread(env.reset, seed=t.seed, timeout=timeout, what="env.reset")
        for a in actions:
            await in_thread(env.step, a, timeout=timeout, what="env.step (replay)")
        return env

    def _finish(self, st: PathState) -> None:
        self.live -= 1
        if st.end != "merged":
            st.tb.finish()
            traj = self._trajectory(st)
            self.leaves.append(traj)
            self.on_leaf(traj)
        if self.live == 0:
            self._emit()

    def _trajectory(self, st: PathState) -> Trajectory:
        tb = st.tb
        status = {"terminated": "ok", "env_truncated": "ok", "error": "failed"}.get(st.end or "", "truncated")
        versions = [t.weight_version for t in st.turns]
        meta: dict[str, Any] = {"path": list(st.path), "end": st.end, "states": [[d, list(p)] for d, p in st.states]}
        if tb.prefix_breaks:
            meta["template_prefix_breaks"] = tb.prefix_breaks
        return Trajectory(
            env_id=self.task.env_id, seed=self.task.seed, group_id=self.group_id,
            prompt_ids=tb.token_ids[: tb.prompt_len], token_ids=tb.token_ids, loss_mask=tb.loss_mask,
            rollout_logprobs=tb.logprobs, messages=[Message.model_validate(m) for m in tb.messages],
            turns=st.turns, reward_components=st.components, reward_weights=self.reward_weights,
            reward=st.reward, status=status, error=st.error,  # type: ignore[arg-type]
            weight_version=min(versions) if versions else getattr(self.backend, "weight_version", 0),
            branch_points=st.branch_points, metadata=meta,
        )

    def _emit(self) -> None:
        leaves = sorted(self.leaves, key=lambda t: t.metadata.get("path", []))
        if self.budget is not None:
            for t in leaves:
                states = [(d, tuple(p)) for d, p in t.metadata.pop("states", [])]
                t.metadata["multiplicity"] = self.budget.leaf_multiplicity(states)
        meta = {"branching": self.cfg.branching, "task": self.task.model_dump()}
        if self.budget is not None:
            meta.update(generated_turns=self.budget.nodes, merged=self.budget.merged)
        self.on_done(TrajectoryGroup(group_id=self.group_id, trajectories=leaves, metadata=meta))

    def _fail_group(self, e: Exception) -> None:
        """Reset failed: the group gets ``group_size`` failed, empty trajectories."""
        err = f"{type(e).__name__}: {e}"
        for _ in range(self.task.group_size):
            traj = Trajectory(env_id=self.task.env_id, seed=self.task.seed, group_id=self.group_id,
                              status="failed", error=err, metadata={"end": "error"})
            self.leaves.append(traj)
            self.on_leaf(traj)
        self.live = 0
        self._emit()
