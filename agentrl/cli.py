"""The ``agentrl`` command line."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="agentrl: train LLM agents with RL on multi-turn text environments.",
                  no_args_is_help=True, add_completion=False)
console = Console()


def _seeds(spec: str) -> list[int]:
    """'0-7' or '1,5,9' -> list of ints."""
    try:
        if "-" in spec:
            lo, hi = spec.split("-")
            return list(range(int(lo), int(hi) + 1))
        return [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(f"seeds must look like '0-7' or '1,5,9', got {spec!r}") from None


@app.command()
def envs(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the registered environments with their reward components and tools."""
    import agentrl  # noqa: F401
    from agentrl.env import env_specs

    specs = env_specs()
    if as_json:
        print(json.dumps([{"id": s.id, "components": s.components, "tools": list(s.tools),
                           "description": s.description} for s in specs], indent=2))
        return
    table = Table(title="agentrl environments")
    for col in ("id", "reward components (weight)", "tools", "description"):
        table.add_column(col)
    for s in specs:
        comps = ", ".join(f"{k} ({w:g})" for k, w in s.components.items())
        table.add_row(s.id, comps, ", ".join(s.tools) or "-", s.description)
    console.print(table)


@app.command("eval")
def eval_cmd(
    env_id: Annotated[str, typer.Argument(help="Environment id, e.g. agentrl/GuessNumber-v0.")],
    model: Annotated[str, typer.Option(help="Embedded name, 'tiny-random', or a folder.")] = "smollm2-135m-instruct",
    seeds: Annotated[str, typer.Option(help="Seeds: '0-7' or '1,5,9'.")] = "0-3",
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 32,
    temperature: Annotated[float, typer.Option(min=0.0)] = 0.7,
) -> None:
    """Run a model on an environment; print a transcript, success rate and component means."""
    import agentrl  # noqa: F401
    from agentrl.evaluate import evaluate, print_report

    report = evaluate(env_id, model, _seeds(seeds), max_new_tokens=max_new_tokens,
                      temperature=temperature, console=console)
    print_report(report, console)


@app.command()
def train(
    config: Annotated[str | None, typer.Argument(help="YAML config (examples/*.yaml).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: section.field=value (repeatable).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in out_dir.")] = False,
) -> None:
    """Train a policy with RL; metrics, checkpoints and a plot go to out_dir."""
    from agentrl.train.config import load_config
    from agentrl.train.trainer import Trainer

    try:
        cfg = load_config(config, set_ or [])
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(2) from None
    trainer = Trainer(cfg, console=console)
    summary = trainer.fit(resume=resume)
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    stages = [(k, label) for k, label in (("eval_before", "before"), ("eval_after_sft", "after SFT"),
                                          ("eval_after", "after RL")) if k in summary]
    table = Table(title="held-out evaluation (one episode per seed)")
    table.add_column("metric")
    for _, label in stages:
        table.add_column(label, justify="right")
    keys = sorted({k for key, _ in stages for k in summary[key]})
    for key in keys:
        table.add_row(key.removeprefix("eval/"), *(f"{summary[s].get(key, float('nan')):.3f}" for s, _ in stages))
    console.print(table)
    console.print(f"wall time {summary.get('wall_s', 0):.0f} s; plot: {summary.get('plot')}")


@app.command()
def demo(
    config: Annotated[str, typer.Option(help="Training config of the demo.")] = "examples/demo.yaml",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: section.field=value.")] = None,
) -> None:
    """The main job on the embedded default: SmolLM2 learns GuessNumber on this CPU.

    Evaluates on held-out seeds, warm-starts on scripted demonstrations, trains with GRPO,
    evaluates again, prints one transcript, the before/after table and the plot's path.
    """
    from agentrl.evaluate import episode_record
    from agentrl.train.config import load_config
    from agentrl.train.trainer import Trainer

    cfg = load_config(config, set_ or [])
    trainer = Trainer(cfg, console=console)
    summary = trainer.fit()
    if trainer.last_eval:
        rec = episode_record(trainer.last_eval[0])
        console.rule(f"after training: held-out episode seed={rec.seed} reward={rec.reward:.3f}")
        for m in rec.messages:
            style = {"system": "dim", "user": "cyan", "assistant": "green"}.get(m["role"], "red")
            console.print(f"[{style}]{m['role']:>9}[/]  {m['content']}", highlight=False)
    _print_summary(summary)


@app.command()
def serve(
    model: Annotated[str, typer.Option(help="Embedded name, 'tiny-random', or a folder.")] = "smollm2-135m-instruct",
    host: Annotated[str, typer.Option(help="Bind address (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    max_batch_size: Annotated[int, typer.Option(min=1, help="HF backend: rows decoded together.")] = 32,
) -> None:
    """Run rollouts as an HTTP service (FastAPI + uvicorn): see docs/service.md."""
    from agentrl.service.server import serve as run_server

    run_server(model=model, host=host, port=port, max_batch_size=max_batch_size)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
