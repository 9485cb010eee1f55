"""The ``agentrl`` command line."""

from __future__ import annotations

import json
import os
from typing import Annotated, Optional

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
def demo(
    episodes: Annotated[int, typer.Option(min=1, help="Evaluation episodes.")] = 4,
    threads: Annotated[Optional[int], typer.Option(help="torch threads (default: all cores).")] = None,
) -> None:
    """The main job on the embedded default: SmolLM2 plays GuessNumber."""
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)
    eval_cmd("agentrl/GuessNumber-v0", seeds=f"0-{episodes - 1}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
