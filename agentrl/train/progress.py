"""A rich progress bar with the live reward, success rate and loss of the last step."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    def __init__(self, console: Console, total: int, start: int = 0) -> None:
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("reward {task.fields[reward]:+.3f}  success {task.fields[success]:.2f}  "
                       "loss {task.fields[loss]:+.4f}  {task.fields[step_s]:.1f}s/step"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        self._task = self._progress.add_task("train", total=total, completed=start, reward=0.0,
                                             success=0.0, loss=0.0, step_s=0.0)

    def __enter__(self) -> TrainProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def update(self, step: int, m: dict[str, float]) -> None:
        self._progress.update(self._task, completed=step, reward=m.get("reward", 0.0),
                              success=m.get("success_rate", 0.0), loss=m.get("loss", 0.0),
                              step_s=m.get("time/step_s", 0.0))
