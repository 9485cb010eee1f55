"""Evaluation rollouts: a model plays an environment; report success and reward components.

Episodes run concurrently through the rollout engine (``agentrl.rollout``: one in-process HF
backend, dynamic batching, exact tokens), one episode per seed, until the env ends each one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentrl.types import SUCCESS_COMPONENTS, Trajectory, success_of


@dataclass
class EpisodeRecord:
    seed: int
    messages: list[dict[str, str]]
    components: dict[str, float]
    reward: float
    solved: bool


@dataclass
class EvalReport:
    env_id: str
    episodes: list[EpisodeRecord] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return mean(e.solved for e in self.episodes) if self.episodes else 0.0

    @property
    def mean_reward(self) -> float:
        return mean(e.reward for e in self.episodes) if self.episodes else 0.0

    def component_means(self) -> dict[str, float]:
        keys = sorted({k for e in self.episodes for k in e.components})
        return {k: mean(e.components.get(k, 0.0) for e in self.episodes) for k in keys}


def episode_record(traj: Trajectory) -> EpisodeRecord:
    """The readable record of one rollout trajectory (its chat plus the final feedback)."""
    messages = [{"role": m.role, "content": m.content} for m in traj.messages]
    if traj.turns and traj.turns[-1].feedback and messages and messages[-1]["role"] == "assistant":
        messages.append({"role": "user", "content": traj.turns[-1].feedback})
    if traj.status == "failed":
        messages.append({"role": "error", "content": traj.error or ""})
    solved = bool(success_of(traj.reward_components)) if any(
        k in traj.reward_components for k in SUCCESS_COMPONENTS) else traj.metadata.get("end") == "terminated"
    return EpisodeRecord(int(traj.seed or 0), messages, dict(traj.reward_components), traj.reward, solved)


def evaluate(
    env_id: str,
    model_name: str = "smollm2-135m-instruct",
    seeds: list[int] | None = None,
    *,
    max_new_tokens: int = 32,
    temperature: float = 0.7,
    console: Console | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> EvalReport:
    """Play ``env_id`` once per seed (concurrently) with a rich progress bar; return the report.

    Args:
        env_id: a registered environment id.
        model_name: a name or folder for :func:`agentrl.models.load_model`.
        seeds: env reset seeds (default 0-3).
        max_new_tokens: generated-token budget per turn.
        temperature: sampling temperature (0: greedy).
        console: where the progress bar goes.
        env_kwargs: env constructor kwargs.
    """
    from agentrl.backends.hf import HFBackend
    from agentrl.models import load_model
    from agentrl.rollout import RolloutConfig, RolloutManager, RolloutTask, run_sync

    console = console or Console()
    seeds = list(range(4)) if seeds is None else list(seeds)
    with console.status(f"loading {model_name}"):
        model, tokenizer = load_model(model_name)
    width = max(1, min(32, len(seeds)))
    config = RolloutConfig(concurrency=width, max_new_tokens=max_new_tokens, temperature=temperature)
    tasks = [RolloutTask(env_id=env_id, env_kwargs=env_kwargs or {}, seed=s, group_size=1) for s in seeds]
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("mean reward {task.fields[reward]:.3f}"), TimeElapsedColumn())

    async def play() -> dict[str, Trajectory]:
        backend = HFBackend(model, tokenizer, max_batch_size=width)
        done: dict[str, Trajectory] = {}
        try:
            with Progress(*columns, console=console) as progress:
                bar = progress.add_task(f"eval {env_id}", total=len(tasks), reward=0.0)
                async for group in RolloutManager(backend, tokenizer, config).stream(tasks):
                    done[group.group_id] = group.trajectories[0]
                    progress.update(bar, advance=1, reward=mean(t.reward for t in done.values()))
        finally:
            await backend.close()
        return done

    done = run_sync(play())
    report = EvalReport(env_id)
    order = sorted(done.values(), key=lambda t: seeds.index(int(t.seed or 0)))
    report.episodes = [episode_record(t) for t in order]
    return report


def print_report(report: EvalReport, console: Console | None = None, transcript: int = 0) -> None:
    """Print one episode's transcript and a table of component means."""
    console = console or Console()
    if report.episodes and transcript is not None:
        ep = report.episodes[transcript]
        console.rule(f"episode seed={ep.seed} reward={ep.reward:.3f}")
        for m in ep.messages:
            style = {"system": "dim", "user": "cyan", "assistant": "green", "tool": "magenta",
                     "error": "red"}.get(m["role"], "")
            console.print(f"[{style}]{m['role']:>9}[/]  {m['content']}", highlight=False)
    table = Table(title=f"{report.env_id}: {len(report.episodes)} episodes")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_row("success rate", f"{report.success_rate:.3f}")
    table.add_row("reward", f"{report.mean_reward:.3f}")
    for k, v in report.component_means().items():
        table.add_row(f"component: {k}", f"{v:.3f}")
    console.print(table)
