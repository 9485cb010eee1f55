"""Arithmetic: multi-step word problems, solved with the ``calculator`` tool.

Each problem is generated from the seed (eight templates: shop, bakery, trains, temperature,
fence, orchard, savings, buses), has an integer answer and takes two or three calculator steps.
The agent calls the calculator (``<tool_call>`` blocks, see :mod:`agentrl.toolcall`) and ends
with a turn without a tool call that holds ``Answer: <number>``; that turn ends the episode.

Components (per step; the episode's value is their sum):
    correct     1.0 on the answer turn when the number is right.
    format      a penalty in [-1/max_turns, 0] per turn: 0 for a ``<tool_call>`` turn or an
                ``Answer: N`` after at least one successful calculator call; partial credit for
                bare JSON calls (-0.5/T), ``Answer: N`` without any calculator call (-0.6/T), a
                number in prose (-0.75/T, or -0.9/T without a call), nothing usable (-1/T).
    tool_error  failed calls this turn (weight -0.1 each).
    tool_calls  calculator calls this turn (weight 0: a metric).

The scripted policy (one calculator call per step, then the answer) earns the maximum, 1.0.

Example episode (``reset(seed=0)``)::

    task    "Maya saves 18 dollars every week for 8 weeks, spends 99 dollars on a bike and
             shares the rest equally among 3 cousins. How many dollars does each cousin get? ..."
    action  '<tool_call>{"name": "calculator", "arguments": {"expression": "18 * 8"}}</tool_call>'
            -> tool "144"                                      tool_calls=1
    action  '<tool_call>{"name": "calculator", "arguments": {"expression": "144 - 99"}}</tool_call>'
            -> tool "45"
    action  '{"name": "calculator", "arguments": {"expression": "45 / 3"}}'   (no tags)
            -> tool "15 (Note: wrap each call in <tool_call></tool_call> tags.)"   format=-0.5/6
    action  "Answer: 15"  -> "Correct! The answer is 15."          correct=1
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from agentrl.env import StepResult, TextEnv, register_env
from agentrl.toolcall import format_tool_call
from agentrl.toolenv import ToolEnv

__all__ = ["Arithmetic", "ArithmeticTask", "Problem", "generate_problem", "parse_answer"]

NO_CALL_FACTOR = 0.4  # format score of an answer given without any calculator call
NAMES = ("Maya", "Omar", "Lena", "Kofi", "Ana", "Ravi", "Chen", "Zoe")
_STRICT = re.compile(r"Answer:\s*\**\s*(-?\d[\d,]*(?:\.\d+)?)", re.I)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class Problem:
    """A word problem, its answer and the calculator steps that solve it."""

    text: str
    answer: int
    steps: tuple[tuple[str, int], ...]  # (expression with literal numbers, its value), in order

    def solution(self) -> str:
        return "; ".join(f"{e} = {v}" for e, v in self.steps)


class _Draw:
    def __init__(self, rng: np.random.Generator, difficulty: int) -> None:
        self.rng, self.scale = rng, difficulty

    def num(self, lo: int, hi: int, scaled: bool = True) -> int:
        return int(self.rng.integers(lo, (hi * self.scale if scaled else hi) + 1))

    def name(self) -> str:
        return NAMES[int(self.rng.integers(len(NAMES)))]


def _shop(d: _Draw) -> Problem:
    n, price, earn = d.num(2, 9), d.num(5, 30), d.num(10, 60)
    cost = n * price
    money = cost + d.num(5, 100)
    who = d.name()
    text = (f"{who} has {money} dollars. {who} buys {n} books at {price} dollars each and then "
            f"earns {earn} dollars walking dogs. How many dollars does {who} have now?")
    left = money - cost
    return Problem(text, left + earn, ((f"{n} * {price}", cost), (f"{money} - {cost}", left),
                                       (f"{left} + {earn}", left + earn)))


def _bakery(d: _Draw) -> Problem:
    trays, per, bag = d.num(3, 12), d.num(6, 24), d.num(3, 9, scaled=False)
    total = trays * per
    bags = d.num(1, max(1, (total - 1) // bag), scaled=False)
    sold = total - bags * bag
    text = (f"A baker makes {trays} trays of {per} cookies. She sells {sold} cookies and packs "
            f"the rest into bags of {bag}. How many bags does she fill?")
    return Problem(text, bags, ((f"{trays} * {per}", total), (f"{total} - {sold}", bags * bag),
                                (f"{bags * bag} / {bag}", bags)))


def _trains(d: _Draw) -> Problem:
    v1, t1, v2, t2 = d.num(40, 120), d.num(2, 6, False), d.num(40, 120), d.num(2, 6, False)
    text = (f"A train travels at {v1} km per hour for {t1} hours, then at {v2} km per hour for "
            f"{t2} hours. How many km does it travel in total?")
    a, b = v1 * t1, v2 * t2
    return Problem(text, a + b, ((f"{v1} * {t1}", a), (f"{v2} * {t2}", b), (f"{a} + {b}", a + b)))


def _temperature(d: _Draw) -> Problem:
    start, drop, hours = d.num(-5, 25), d.num(2, 7), d.num(3, 9, False)
    text = (f"At 6 pm the temperature is {start} degrees. It drops by {drop} degrees every hour "
            f"for {hours} hours. What is the temperature then?")
    fall = drop * hours
    return Problem(text, start - fall, ((f"{drop} * {hours}", fall), (f"{start} - {fall}", start - fall)))


def _fence(d: _Draw) -> Problem:
    length, width, price = d.num(5, 40), d.num(3, 30), d.num(2, 15, False)
    text = (f"A garden is {length} m long and {width} m wide. Fencing costs {price} dollars per "
            "meter. How many dollars does it cost to fence the whole garden?")
    half = length + width
    return Problem(text, 2 * half * price, ((f"{length} + {width}", half), (f"2 * {half}", 2 * half),
                                            (f"{2 * half} * {price}", 2 * half * price)))


def _orchard(d: _Draw) -> Problem:
    rows, trees, box, fills = d.num(2, 9), d.num(3, 12), d.num(4, 12, False), d.num(2, 6, False)
    apples = box * fills
    text = (f"An orchard has {rows} rows of {trees} apple trees, and each tree gives {apples} "
            f"apples. The apples are packed in boxes of {box}. How many boxes are needed?")
    n, total = rows * trees, rows * trees * apples
    return Problem(text, total // box, ((f"{rows} * {trees}", n), (f"{n} * {apples}", total),
                                        (f"{total} / {box}", total // box)))


def _savings(d: _Draw) -> Problem:
    weekly, weeks, kids = d.num(5, 25), d.num(4, 12, False), d.num(2, 5, False)
    saved = weekly * weeks
    share = d.num(1, max(1, (saved - 1) // kids), scaled=False)
    spent = saved - kids * share
    who = d.name()
    text = (f"{who} saves {weekly} dollars every week for {weeks} weeks, spends {spent} dollars "
            f"on a bike and shares the rest equally among {kids} cousins. How many dollars does "
            "each cousin get?")
    return Problem(text, share, ((f"{weekly} * {weeks}", saved), (f"{saved} - {spent}", kids * share),
                                 (f"{kids * share} / {kids}", share)))


def _buses(d: _Draw) -> Problem:
    classes, size, seats = d.num(3, 9), d.num(18, 32, False), d.num(30, 55, False)
    students = classes * size
    buses = math.ceil(students / seats)
    text = (f"A school has {classes} classes of {size} students. A bus holds {seats} students. "
            "How many buses are needed to take every student on a trip?")
    return Problem(text, buses, ((f"{classes} * {size}", students), (f"ceil({students} / {seats})", buses)))


TEMPLATES: tuple[Callable[[_Draw], Problem], ...] = (
    _shop, _bakery, _trains, _temperature, _fence, _orchard, _savings, _buses)


def generate_problem(rng: np.random.Generator, difficulty: int = 1) -> Problem:
    """A random problem; ``difficulty`` (1 to 3) scales the numbers."""
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return template(_Draw(rng, difficulty))


def parse_answer(text: str) -> tuple[float | None, float]:
    """(number, format score): 1.0 for ``Answer: N``, 0.25 for the last number in prose, 0."""
    m = _STRICT.search(text)
    if m:
        return float(m.group(1).replace(",", "")), 1.0
    found = _NUMBER.findall(text)
    if found:
        return float(found[-1].replace(",", "")), 0.25
    return None, 0.0


SYSTEM_PROMPT = """You solve arithmetic word problems. Use the calculator tool for every \
computation, one step at a time. When you know the result, reply with "Answer: <number>" and no \
tool call.

Example:
Problem: A box holds 6 eggs. How many eggs are in 7 boxes?
Assistant: <tool_call>
{"name": "calculator", "arguments": {"expression": "6 * 7"}}
</tool_call>
Tool: 42
Assistant: Answer: 42"""


class ArithmeticTask(TextEnv):
    """The answer-only task inside :class:`Arithmetic` (no tools): one answer ends the episode."""

    reward_weights: ClassVar[dict[str, float]] = {"correct": 1.0, "format": 0.5}
    max_turns = 6
    system_prompt = SYSTEM_PROMPT

    def __init__(self, difficulty: int = 1, **kwargs: Any) -> None:
        if difficulty not in (1, 2, 3):
            raise ValueError(f"difficulty must be 1, 2 or 3, got {difficulty!r}")
        super().__init__(**kwargs)
        self.difficulty = difficulty
        self.problem = Problem("", 0, ())

    def _reset_task(self, options: dict[str, Any] | None) -> str:
        self.problem = generate_problem(self.np_random, self.difficulty)
        return (f"{self.problem.text}\n\nUse the calculator tool for the arithmetic, then reply "
                "with \"Answer: <number>\".")

    def _score(self, action: str) -> StepResult:
        value, fmt = parse_answer(action)
        info = {"format_score": fmt}
        components = {"correct": 0.0, "format": (fmt - 1.0) / self.max_turns}
        if value is None:
            return StepResult("I could not find a number in your reply. Finish with "
                              "\"Answer: <number>\", for example \"Answer: 42\".", components, info=info)
        hint = "" if fmt == 1.0 else " (Write the final answer as \"Answer: <number>\".)"
        shown = f"{value:g}" if not value.is_integer() else str(int(value))
        if abs(value - self.problem.answer) < 1e-9:
            components["correct"] = 1.0
            return StepResult(f"Correct! The answer is {self.problem.answer}.{hint}", components, True, info)
        return StepResult(f"Incorrect: you answered {shown}, but the answer is {self.problem.answer} "
                          f"({self.problem.solution()}).{hint}", components, True, info)


class Arithmetic(ToolEnv):
    """Multi-step arithmetic word problems with the ``calculator`` tool.

    Args:
        difficulty: 1 to 3; scales the numbers.
        max_turns: turns in all (tool turns and the answer).
        max_calls_per_turn, max_calls_per_episode: calculator call limits.
        reward_weights: overrides of ``Arithmetic.reward_weights``.
        render_mode: ``"ansi"`` or ``None``.
    """

    reward_weights: ClassVar[dict[str, float]] = {
        "correct": 1.0, "format": 0.5, "tool_error": -0.1, "tool_calls": 0.0}
    max_turns = 6

    def __init__(self, difficulty: int = 1, max_turns: int | None = None,
                 max_calls_per_turn: int = 4, max_calls_per_episode: int = 8,
                 reward_weights: dict[str, float] | None = None, render_mode: str | None = None) -> None:
        turns = max_turns or type(self).max_turns
        super().__init__(ArithmeticTask(difficulty, max_turns=turns), ["calculator"], max_turns=turns,
                         max_calls_per_turn=max_calls_per_turn,
                         max_calls_per_episode=max_calls_per_episode,
                         reward_weights=reward_weights, render_mode=render_mode)

    @property
    def problem(self) -> Problem:
        return self.env.problem  # type: ignore[attr-defined]

    def _answer(self, action: str) -> StepResult:
        result = super()._answer(action)
        fmt = float(result.info.get("format_score", 1.0))
        if self.successful_calls == 0:  # less credit for answering without the calculator
            fmt *= NO_CALL_FACTOR
            result.feedback += " (Use the calculator tool for the arithmetic before you answer.)"
        result.info["format_score"] = fmt
        result.components["format"] = (fmt - 1.0) / self.max_turns
        return result

    def scripted_action(self) -> str:
        """One calculator call per solution step, then ``Answer: N``."""
        steps = self.problem.steps
        if self.successful_calls < len(steps):
            return format_tool_call("calculator", {"expression": steps[self.successful_calls][0]})
        return f"Answer: {self.problem.answer}"


register_env(
    "Arithmetic",
    "agentrl.envs.arithmetic:Arithmetic",
    components=Arithmetic.reward_weights,
    tools=("calculator",),
    description="Multi-step arithmetic word problems solved with a calculator tool.",
)
