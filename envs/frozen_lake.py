"""FrozenLake as text: walk across a frozen lake to the goal without falling into a hole.

The lake is a grid rendered as text (``P`` you, ``.`` ice, ``H`` hole, ``G`` goal); an action is
one word, ``up``, ``down``, ``left`` or ``right``, and the feedback is what happened plus the new
grid. Every seed draws a new lake whose goal is always reachable; moves are deterministic (no
slipping), so this is a planning task: the shortest safe path is the best policy.

Components (per step; the episode's value is their sum):
    solved      1.0 on the step that reaches the goal.
    progress    decrease of the shortest safe distance to the goal, divided by the distance at
                the start: potential-based, so it sums to 1.0 on any path that reaches the goal.
    fell        1.0 on the step that walks into a hole (weight -0.5; the episode ends).
    format      0 for a bare direction word, -0.5/max_turns for one found inside other text,
                -1/max_turns when no direction can be read (a penalty, as in GuessNumber).
    turns_used  1.0 per step (weight -0.02: a small price on every extra move).

Example episode (4x4, seed 0)::

    task     "You are on a frozen lake. Reach the goal G without stepping into a hole H. ...
              P . . .
              . . . .
              H H . H
              . . . G
              Reply with one word: up, down, left or right."
    action   "I will go up."  -> "You cannot move up: that is the edge of the lake. You stay at
                                  row 1, column 1. (Reply with just one word: ...)  <grid>"
    action   "down"           -> "You moved down to row 2, column 1. The goal is 5 moves away.
                                  <grid>"                              progress=1/6
    action   "right", "right", "down", "down"  -> ... "The goal is 1 move away."
    action   "right"          -> "You moved right and reached the goal! You win."  solved=1
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, ClassVar

import numpy as np

from agentrl.env import StepResult, TextEnv, register_env

MOVES: dict[str, tuple[int, int]] = {
    "up": (-1, 0),
    "down": (1, 0),
    "left": (0, -1),
    "right": (0, 1),
}
_MOVE_RE = re.compile(r"\b(up|down|left|right)\b", re.IGNORECASE)
Pos = tuple[int, int]


def parse_move(text: str) -> tuple[str | None, float]:
    """Return (move, format score): 1.0 for a bare direction, 0.5 for the last one in other text."""
    bare = text.strip().strip(".!\"'`*").strip().lower()
    if bare in MOVES:
        return bare, 1.0
    found = _MOVE_RE.findall(text)
    return (found[-1].lower(), 0.5) if found else (None, 0.0)


def distances(grid: list[str], goal: Pos) -> dict[Pos, int]:
    """Shortest safe number of moves from every reachable cell to ``goal`` (breadth-first)."""
    dist = {goal: 0}
    queue = deque([goal])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES.values():
            nr, nc = r + dr, c + dc
            if (
                0 <= nr < len(grid)
                and 0 <= nc < len(grid[0])
                and grid[nr][nc] != "H"
                and (nr, nc) not in dist
            ):
                dist[nr, nc] = dist[r, c] + 1
                queue.append((nr, nc))
    return dist


def random_lake(rng: np.random.Generator, size: int, holes: int) -> list[str]:
    """A ``size`` x ``size`` lake with start top-left, goal bottom-right and a safe path."""
    cells = [(r, c) for r in range(size) for c in range(size)][1:-1]
    while True:
        grid = [["F"] * size for _ in range(size)]
        grid[0][0], grid[-1][-1] = "S", "G"
        for i in rng.choice(len(cells), size=holes, replace=False):
            r, c = cells[int(i)]
            grid[r][c] = "H"
        rows = ["".join(row) for row in grid]
        if (0, 0) in distances(rows, (size - 1, size - 1)):
            return rows


def _find(grid: list[str], char: str) -> list[Pos]:
    return [(r, c) for r, row in enumerate(grid) for c, ch in enumerate(row) if ch == char]


def check_desc(desc: list[str]) -> list[str]:
    """Validate a fixed map (Gymnasium's ``S``/``F``/``H``/``G`` rows) and return it."""
    if not desc or any(not isinstance(row, str) or len(row) != len(desc[0]) for row in desc):
        raise ValueError(f"desc: need equal-length rows of S/F/H/G, got {desc!r}")
    bad = sorted({ch for row in desc for ch in row} - set("SFHG"))
    if bad:
        raise ValueError(f"desc: unknown cell(s) {bad}; allowed: S (start), F (ice), H, G")
    if len(_find(desc, "S")) != 1 or len(_find(desc, "G")) != 1:
        raise ValueError("desc: need exactly one S (start) and one G (goal)")
    if _find(desc, "S")[0] not in distances(desc, _find(desc, "G")[0]):
        raise ValueError("desc: the goal cannot be reached from the start")
    return list(desc)


class FrozenLake(TextEnv):
    """Reach the goal on a text grid with up/down/left/right; feedback is the new grid."""

    reward_weights: ClassVar[dict[str, float]] = {
        "solved": 1.0,
        "progress": 0.5,
        "fell": -0.5,
        "format": 0.5,
        "turns_used": -0.02,
    }
    max_turns = 16
    system_prompt = (
        "You are walking on a frozen lake shown as a grid. Each turn, reply with one word: up, "
        "down, left or right."
    )

    def __init__(
        self, size: int = 4, holes: int | None = None, desc: list[str] | None = None, **kwargs: Any
    ) -> None:
        """Args:
        size: side of the random square lake (2 to 10).
        holes: holes per random lake (default ``size * size // 5``, at most a third of the cells).
        desc: a fixed map instead (rows of ``S``/``F``/``H``/``G``); seeds then change nothing.
        **kwargs: ``max_turns``, ``reward_weights``, ``render_mode`` (see ``TextEnv``).
        """
        if not isinstance(size, int) or not 2 <= size <= 10:
            raise ValueError(f"size must be an integer from 2 to 10, got {size!r}")
        holes = size * size // 5 if holes is None else holes
        if not isinstance(holes, int) or not 0 <= holes <= size * size // 3:
            raise ValueError(
                f"holes must be an integer from 0 to {size * size // 3} for size "
                f"{size}, got {holes!r}"
            )
        super().__init__(**kwargs)
        self.size, self.holes = size, holes
        self.desc = check_desc(desc) if desc is not None else None
        self.grid: list[str] = self.desc or []
        self.pos: Pos = (0, 0)
        self.goal: Pos = (0, 0)
        self.dist: dict[Pos, int] = {}
        self.start_dist = 1

    def _reset_task(self, options: dict[str, Any] | None) -> str:
        self.grid = self.desc or random_lake(self.np_random, self.size, self.holes)
        self.pos, self.goal = _find(self.grid, "S")[0], _find(self.grid, "G")[0]
        self.dist = distances(self.grid, self.goal)
        self.start_dist = self.dist[self.pos]
        return (
            "You are on a frozen lake. Reach the goal G without stepping into a hole H. You are "
            "P; '.' is safe ice. Row 1 is the top row, column 1 the left column. You have "
            f"{self.max_turns} moves.\n\n{self.render_grid()}\n\nReply with one word: up, down, "
            "left or right."
        )

    def render_grid(self) -> str:
        """The lake as text, one row per line, cells separated by spaces."""
        rows = []
        for r, row in enumerate(self.grid):
            cells = [
                "P" if (r, c) == self.pos else "." if ch in "SF" else ch for c, ch in enumerate(row)
            ]
            rows.append(" ".join(cells))
        return "\n".join(rows)

    def _where(self) -> str:
        return f"row {self.pos[0] + 1}, column {self.pos[1] + 1}"

    def _score(self, action: str) -> StepResult:
        move, fmt = parse_move(action)
        components = {
            "format": (fmt - 1.0) / self.max_turns,
            "turns_used": 1.0,
            "solved": 0.0,
            "progress": 0.0,
            "fell": 0.0,
        }
        hint = "" if fmt == 1.0 else " (Reply with just one word: up, down, left or right.)"
        if move is None:
            return StepResult(
                f"I could not find a move in your reply {action.strip()[:80]!r}. Reply with one "
                f"word: up, down, left or right. You are at {self._where()}.\n\n"
                f"{self.render_grid()}",
                components,
            )
        dr, dc = MOVES[move]
        r, c = self.pos[0] + dr, self.pos[1] + dc
        if not (0 <= r < len(self.grid) and 0 <= c < len(self.grid[0])):
            return StepResult(
                f"You cannot move {move}: that is the edge of the lake. You stay at "
                f"{self._where()}.{hint}\n\n{self.render_grid()}",
                components,
            )
        before = self.dist[self.pos]
        self.pos = (r, c)
        if self.grid[r][c] == "H":
            components["fell"] = 1.0
            return StepResult(
                f"You moved {move} onto a hole at {self._where()} and fell in. Game over.",
                components,
                True,
            )
        components["progress"] = (before - self.dist[self.pos]) / self.start_dist
        if self.pos == self.goal:
            components["solved"] = 1.0
            return StepResult(f"You moved {move} and reached the goal! You win.", components, True)
        away = self.dist[self.pos]
        return StepResult(
            f"You moved {move} to {self._where()}. The goal is {away} "
            f"{'move' if away == 1 else 'moves'} away.{hint}\n\n{self.render_grid()}",
            components,
        )

    def scripted_action(self) -> str:
        """A move along a shortest safe path (first of up/down/left/right that gets closer)."""
        here = self.dist[self.pos]
        for name, (dr, dc) in MOVES.items():
            if self.dist.get((self.pos[0] + dr, self.pos[1] + dc), here) == here - 1:
                return name
        raise RuntimeError("no safe move leads closer to the goal")  # unreachable: goal reachable


register_env(
    "FrozenLake",
    "agentrl.envs.frozen_lake:FrozenLake",
    components=FrozenLake.reward_weights,
    description="Walk a text-grid frozen lake to the goal with up/down/left/right (planning).",
)
