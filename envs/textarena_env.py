"""TextArena: single-player TextArena games as agentrl environments.

``gymnasium.make("agentrl/TextArena-v0", game="TowerOfHanoi-v0")`` plays one game of the
``textarena`` package per episode: the task is the game's prompt and board, each action is passed
to the game unchanged, and the feedback is the game's new messages (board, move descriptions,
invalid-move warnings; the outcome and its reason when the game ends). The game keeps its own
rules: e.g. a second invalid move in a row ends the game (``error_allowance`` changes that), and
its turn limit ends it with a partial-credit reward.

Only the offline single-player games in :data:`GAMES` are allowed: TextArena's word games
(Wordle, Hangman, WordLadder, ...) download NLTK corpora when imported, GuessWho and
TwentyQuestions call a hosted LLM, and Countdown and Cryptarithm (textarena 0.7.4) log the
player's move with swapped arguments.
Games draw from Python's (and NumPy's) global random generator; the adapter gives each env its
own saved generator state and swaps it in around every call into the game (under a lock), so
episodes are reproducible from the reset seed and never disturb other code's random numbers.

Optional dependency: ``pip install 'agentrl[textarena]'``. The env is registered as
``agentrl/TextArena-v0`` only when ``textarena`` is importable; ``textarena`` itself is imported
when the first env is built.

Components (per step; the episode's value is their sum):
    outcome     the game's own reward for the player, on the step that ends the game (1.0 for a
                win; most games give partial credit, e.g. the share of disks placed).
    solved      1.0 when the game ends with reward 1.0 (weight 0: a logged metric).
    invalid     1.0 for a move the game rejected (weight -0.1).
    format      0 when the reply is only bracketed move(s) such as ``[A C]``, -0.5/max_turns when
                the brackets sit inside other text, -1/max_turns without brackets.
    turns_used  1.0 per step (weight -0.02).

Example episode (``game="TowerOfHanoi-v0"``)::

    task     "You are playing Tower of Hanoi with 3 disks. ... Current Board: A: [3, 2, 1] ..."
    action   "[A C]"                    -> "You moved disk 1 from A to C.
                                            Current Board: A: [3, 2] B: [] C: [1]"
    action   "Let me move A to B"       -> "You attempted an invalid move. Reason: ..." invalid=1
    ...
    action   "[A C]"                    -> "... Game over: Congratulations! You solved the Tower
                                            of Hanoi puzzle. (reward 1)"  outcome=1, solved=1
"""

from __future__ import annotations

import importlib.util
import random
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from agentrl.env import StepResult, TextEnv, register_env

INSTALL_HINT = "pip install 'agentrl[textarena]'  (or: pip install textarena)"
GAMES: tuple[str, ...] = (
    "TowerOfHanoi-v0",
    "TowerOfHanoi-v0-medium",
    "GuessTheNumber-v0",
    "GuessTheNumber-v0-hardcore",
    "FrozenLake-v0",
    "FrozenLake-v0-random",
    "Minesweeper-v0",
    "LightsOut-v0",
    "Sudoku-v0",
    "FifteenPuzzle-v0",
    "Mastermind-v0",
    "PegJump-v0",
    "Blackjack-v0",
    "Bandit-v0",
    "2048-v0-mega-easy",
)
_ONLY_BRACKETS = re.compile(r"\s*(\[[^\[\]]*\]\s*)+")
_RANDOM_LOCK = threading.Lock()


def format_score(reply: str) -> float:
    """1.0 for bracketed move(s) only, 0.5 for brackets inside other text, 0.0 without."""
    if _ONLY_BRACKETS.fullmatch(reply):
        return 1.0
    return 0.5 if re.search(r"\[[^\[\]]*\]", reply) else 0.0


class TextArena(TextEnv):
    """One offline single-player TextArena game per episode (see :data:`GAMES`)."""

    reward_weights: ClassVar[dict[str, float]] = {
        "outcome": 1.0,
        "solved": 0.0,
        "invalid": -0.1,
        "format": 0.5,
        "turns_used": -0.02,
    }
    max_turns = 30
    system_prompt = (
        "You are playing a game. Read the rules and the board, then reply with your move in "
        "square brackets, e.g. [A C], and nothing else."
    )

    def __init__(
        self, game: str = "TowerOfHanoi-v0", error_allowance: int | None = None, **kwargs: Any
    ) -> None:
        """Args:
        game: a TextArena game id from :data:`GAMES`.
        error_allowance: invalid moves in a row the game forgives (None: the game's own rule,
            usually 1, so a second invalid move in a row ends the game); raise it to give a
            small model room to learn the move format.
        **kwargs: ``max_turns``, ``reward_weights``, ``render_mode`` (see ``TextEnv``).
        """
        if importlib.util.find_spec("textarena") is None:
            raise ImportError(f"TextArena needs the textarena package: {INSTALL_HINT}")
        if game not in GAMES:
            raise ValueError(
                f"game: {game!r} is not an allowed offline single-player TextArena "
                f"game; allowed: {', '.join(GAMES)}"
            )
        if error_allowance is not None and (
            not isinstance(error_allowance, int) or error_allowance < 0
        ):
            raise ValueError(
                f"error_allowance must be a non-negative integer, got {error_allowance!r}"
            )
        super().__init__(**kwargs)
        self.game_id = game
        self.error_allowance = error_allowance
        self.game: Any = None
        self._py_state = random.Random(0).getstate()
        self._np_state = np.random.RandomState(0).get_state()

    @contextmanager
    def _own_random(self) -> Iterator[None]:
        """Swap this env's generator states into the global ``random``/``numpy.random``."""
        with _RANDOM_LOCK:
            saved_py, saved_np = random.getstate(), np.random.get_state()
            random.setstate(self._py_state)
            np.random.set_state(self._np_state)
            try:
                yield
            finally:
                self._py_state, self._np_state = random.getstate(), np.random.get_state()
                random.setstate(saved_py)
                np.random.set_state(saved_np)

    def _messages(self) -> str:
        """The game's messages to the player since the last call (the player's echo dropped)."""
        import textarena as ta

        _, observation = self.game.get_observation()
        texts = [
            msg.strip()
            for _, msg, kind in observation
            if isinstance(msg, str)
            and isinstance(kind, ta.ObservationType)
            and kind != ta.ObservationType.PLAYER_ACTION
            and msg.strip()
        ]
        return "\n".join(texts)

    def _reset_task(self, options: dict[str, Any] | None) -> str:
        import textarena as ta

        seed = int(self.np_random.integers(2**31 - 1))
        self._py_state = random.Random(seed).getstate()
        self._np_state = np.random.RandomState(seed).get_state()
        with self._own_random():
            self.game = ta.make(f"{self.game_id}-raw")
            self.game.reset(num_players=1, seed=seed)
            if self.error_allowance is not None:
                self.game.state.error_allowance = self.error_allowance
            return self._messages()

    def _score(self, action: str) -> StepResult:
        fmt = format_score(action)
        with self._own_random():
            done, _ = self.game.step(action)
            text = self._messages()
            state = self.game.state
            invalid = getattr(state, "error_count", 0) > 0
            rewards, game_info = self.game.close() if done else ({}, {})
        components = {
            "format": (fmt - 1.0) / self.max_turns,
            "turns_used": 1.0,
            "outcome": 0.0,
            "solved": 0.0,
            "invalid": float(invalid),
        }
        if done:
            info = (game_info or {}).get(0, {})
            reward = float((rewards or {}).get(0, 0.0))
            components.update(
                outcome=reward,
                solved=float(reward >= 1.0),
                invalid=float(invalid or bool(info.get("invalid_move"))),
            )
            text = f"{text}\nGame over: {info.get('reason', 'the game ended')} (reward {reward:g})"
        elif fmt < 1.0:
            text += "\n(Reply with just your move in square brackets, e.g. [A C].)"
        return StepResult(text.strip(), components, done)

    def scripted_action(self) -> str:
        """An optimal move for Tower of Hanoi and Guess the Number (other games: none)."""
        game_state = self.game.state.game_state
        if self.game_id.startswith("TowerOfHanoi"):
            move = hanoi_next_move(game_state["towers"])
            if move is None:
                raise RuntimeError("the towers are already solved")
            return f"[{move[0]} {move[1]}]"
        if self.game_id.startswith("GuessTheNumber"):
            lo, hi = self.game.min_number, self.game.max_number
            for guess, hint in game_state["guess_history"]:
                lo, hi = (guess + 1, hi) if hint == "higher" else (lo, guess - 1)
            return f"[{(lo + hi) // 2}]"
        return super().scripted_action()


def hanoi_next_move(towers: dict[str, list[int]], target: str = "C") -> tuple[str, str] | None:
    """The first move of the shortest way to stack every disk on ``target`` (None: done).

    Works from any legal position: the largest disk not yet on the target must move there,
    which first needs every smaller disk on the third tower (recursively).
    """
    where = {disk: name for name, disks in towers.items() for disk in disks}

    def solve(n: int, goal: str) -> tuple[str, str] | None:
        for disk in range(n, 0, -1):
            if where[disk] != goal:
                spare = next(t for t in towers if t not in (where[disk], goal))
                return solve(disk - 1, spare) or (where[disk], goal)
        return None

    return solve(len(where), target)


if importlib.util.find_spec("textarena") is not None:
    register_env(
        "TextArena",
        "agentrl.envs.textarena_env:TextArena",
        components=TextArena.reward_weights,
        description="Offline single-player TextArena games (game=..., default TowerOfHanoi-v0).",
    )
