"""GuessNumber: find a hidden integer from "higher"/"lower" feedback.

Components (per step; the episode's value is their sum):
    solved      1.0 on the step that names the number.
    format      0 for a bare integer, -0.5/max_turns for a number inside other text, -1/max_turns
                when no integer can be read: a penalty, so solving faster never loses format
                credit and the episode total lies in [-1, 0].
    turns_used  1.0 per step (weight -0.02: a small price on every extra guess).
    ignored_feedback
                1/max_turns for a guess the earlier feedback already ruled out (outside the
                interval still possible, or a repeat), weight -0.5: a dense signal for *using*
                the textual feedback, which is the skill this environment is about.

Example episode (range 1-100, hidden 37)::

    task     "I am thinking of an integer between 1 and 100. ... Reply with just the number."
    action   "50"               -> "50 is too high: the number is lower than 50."
    action   "How about 25?"    -> "25 is too low: the number is higher than 25. (Reply with just
                                    the number, no other words.)"
    action   "37"               -> "Correct! The number was 37."  solved=1
"""

from __future__ import annotations

import re
from typing import Any

from agentrl.env import StepResult, TextEnv, register_env

_INT = re.compile(r"-?\d+")


def parse_guess(text: str) -> tuple[int | None, float]:
    """Return (guess, format score): 1.0 for a bare integer, 0.5 for one inside other text."""
    stripped = text.strip().rstrip(".!")
    if re.fullmatch(r"-?\d+", stripped):
        return int(stripped), 1.0
    found = _INT.findall(text)
    if found:
        return int(found[-1]), 0.5
    return None, 0.0


class GuessNumber(TextEnv):
    """Guess a hidden integer in [low, high]; feedback says higher or lower."""

    reward_weights = {"solved": 1.0, "format": 0.5, "turns_used": -0.02, "ignored_feedback": -0.5}
    max_turns = 7
    system_prompt = (
        "You are playing a number guessing game. Answer every turn with a single integer and "
        "nothing else."
    )

    def __init__(self, low: int = 1, high: int = 100, **kwargs: Any) -> None:
        if not (isinstance(low, int) and isinstance(high, int)) or low >= high:
            raise ValueError(f"low and high must be integers with low < high, got {low}, {high}")
        super().__init__(**kwargs)
        self.low, self.high = low, high
        self.target = low
        self._lo, self._hi = low, high  # the interval still consistent with the feedback

    def _reset_task(self, options: dict[str, Any] | None) -> str:
        self.target = int(self.np_random.integers(self.low, self.high + 1))
        self._lo, self._hi = self.low, self.high
        return (
            f"I am thinking of an integer between {self.low} and {self.high}. Guess it. After "
            f"each guess I will tell you if the number is higher or lower. You have "
            f"{self.max_turns} guesses. Reply with just the number."
        )

    def _score(self, action: str) -> StepResult:
        guess, fmt = parse_guess(action)
        components = {"format": (fmt - 1.0) / self.max_turns, "turns_used": 1.0, "solved": 0.0,
                      "ignored_feedback": 0.0}
        if guess is None:
            return StepResult(
                f"I could not find an integer in your reply {action[:80]!r}. Reply with just "
                f"an integer between {self.low} and {self.high}, for example "
                f"{(self.low + self.high) // 2}.",
                components,
            )
        hint = "" if fmt == 1.0 else " (Reply with just the number, no other words.)"
        if not self._lo <= guess <= self._hi:
            components["ignored_feedback"] = 1.0 / self.max_turns
            if self.low <= guess <= self.high:
                hint += f" Note: the feedback so far says the number is between {self._lo} and {self._hi}."
        if not self.low <= guess <= self.high:
            return StepResult(
                f"{guess} is outside the range: the number is between {self.low} and "
                f"{self.high}.{hint}",
                components,
            )
        if guess == self.target:
            components["solved"] = 1.0
            return StepResult(f"Correct! The number was {self.target}.", components, True)
        if guess < self.target:
            self._lo = max(self._lo, guess + 1)
            return StepResult(f"{guess} is too low: the number is higher than {guess}.{hint}", components)
        self._hi = min(self._hi, guess - 1)
        return StepResult(f"{guess} is too high: the number is lower than {guess}.{hint}", components)

    def scripted_action(self) -> str:
        """Binary search over the interval the feedback so far allows."""
        return str((self._lo + self._hi) // 2)


register_env(
    "GuessNumber",
    "agentrl.envs.guess_number:GuessNumber",
    components=GuessNumber.reward_weights,
    description="Guess a hidden integer from higher/lower feedback (multi-turn).",
)
