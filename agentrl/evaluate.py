"""Evaluation rollouts: a model plays an environment; report success and reward components.

This is the simple, sequential reference loop (one episode at a time, ``model.generate``); the
rollout engine (``agentrl.rollout``) does the same concurrently and token-exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


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


def play_episode(
    env: Any,
    model: Any,
    tokenizer: Any,
    seed: int,
    *,
    max_new_tokens: int = 32,
    temperature: float = 0.7,
) -> EpisodeRecord:
    """One episode with ``model.generate``; feedback is appended as the next user message."""
    import torch

    obs, info = env.reset(seed=seed)
    messages: list[dict[str, str]] = []
    if info.get("system_prompt"):
        messages.append({"role": "system", "content": info["system_prompt"]})
    messages.append({"role": "user", "content": obs})
    totals: dict[str, float] = {}
    reward, solved, done = 0.0, False, False
    gen = torch.Generator().manual_seed(seed)
    while not done:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            out = model.generate(
                **ids,
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
            )
        action = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        feedback, r, terminated, truncated, step_info = env.step(action)
        reward += r
        for k, v in step_info["reward_components"].items():
            totals[k] = totals.get(k, 0.0) + v
        solved = solved or bool(terminated)
        done = terminated or truncated
        messages.append({"role": "assistant", "content": action})
        messages.append({"role": "user", "content": feedback})
    return EpisodeRecord(seed, messages, totals, reward, solved)


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
    """Play ``env_id`` for each seed with a rich progress bar and return the report."""
    from agentrl.env import make
    from agentrl.models import load_model

    console = console or Console()
    seeds = list(range(4)) if seeds is None else seeds
    env = make(env_id, **(env_kwargs or {}))
    with console.status(f"loading {model_name}"):
        model, tokenizer = load_model(model_name)
    report = EvalReport(env_id)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("mean reward {task.fields[reward]:.3f}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"eval {env_id}", total=len(seeds), reward=0.0)
        for seed in seeds:
            report.episodes.append(play_episode(env, model, tokenizer, seed,
                                                max_new_tokens=max_new_tokens, temperature=temperature))
            progress.update(task, advance=1, reward=report.mean_reward)
    return report


def print_report(report: EvalReport, console: Console | None = None, transcript: int = 0) -> None:
    """Print one episode's transcript and a table of component means."""
    console = console or Console()
    if report.episodes and transcript is not None:
        ep = report.episodes[transcript]
        console.rule(f"episode seed={ep.seed} reward={ep.reward:.3f}")
        for m in ep.messages:
            style = {"system": "dim", "user": "cyan", "assistant": "green"}.get(m["role"], "")
            console.print(f"[{style}]{m['role']:>9}[/]  {m['content']}", highlight=False)
    table = Table(title=f"{report.env_id}: {len(report.episodes)} episodes")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_row("success rate", f"{report.success_rate:.3f}")
    table.add_row("reward", f"{report.mean_reward:.3f}")
    for k, v in report.component_means().items():
        table.add_row(f"component: {k}", f"{v:.3f}")
    console.print(table)
