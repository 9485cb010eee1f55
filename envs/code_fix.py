"""CodeFix: repair a short buggy Python function; its unit tests run in the sandbox.

Each episode draws one of the tasks in ``data/code_fix.yaml`` (a buggy function, its reference
fix, and tests given as call arguments and the expected value or exception). The agent replies
with code (the last ```python block, or the whole reply); the code runs in a fresh sandbox
(:mod:`agentrl.tools.sandbox`) against every test, and the feedback lists the failing shown
tests (call, what came back, what was expected) and how many hidden tests failed. The episode
ends when every test passes or after ``max_turns`` submissions.

The tests are judged outside the sandbox: the harness reports plain values (only ``None``,
``bool``, ``int``, ``float``, ``str``, ``list``, ``tuple`` and ``dict``, by exact type, so an
object that claims to equal anything gets no credit) and the expected values never enter it.

Components (per step; the episode's sum is the value of the last submission):
    tests_passed  the change in the fraction of tests passed since the previous submission.
    all_passed    1.0 on the step where every test passes (it ends the episode).
    syntax_ok     the change in "the code parses and defines the function" (0 or 1).

Example episode (task ``sum_evens``)::

    task    "Fix the bug in this Python function. ... def sum_evens(nums): ... if n % 2 == 1: ..."
    action  "def sum_evens(nums) return 0"
            -> "Your code does not parse: SyntaxError: expected ':' (line 1) ..."
    action  "```python\\ndef sum_evens(nums):\\n    return sum(nums)\\n```"
            -> "1 of 5 tests passed. Failed: sum_evens([1, 2, 3, 4]) returned 10; expected 6. ..."
               tests_passed=0.2, syntax_ok=1
    action  "```python\\ndef sum_evens(nums):\\n    return sum(n for n in nums if n % 2 == 0)\\n```"
            -> "All 5 tests passed."   tests_passed=0.8, all_passed=1 (episode reward 1.6)
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import math
import re
import secrets
from pathlib import Path
from typing import Any, ClassVar

import yaml
from agentrl.tools.sandbox import SandboxLimits, run_python
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentrl.env import StepResult, TextEnv, register_env

__all__ = ["CodeFix", "CodeFixTask", "TestCase", "load_tasks"]

DATA = Path(__file__).with_name("data") / "code_fix.yaml"
MAX_CODE_CHARS = 20_000
LIMITS = SandboxLimits(wall_s=10.0, cpu_s=5, memory_mb=512, max_output_bytes=20_000)
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)
_HARNESS = Path(__file__).with_name("data") / "code_fix_harness.py"


class TestCase(BaseModel):
    """One unit test: call the function with ``args``; expect a value or an exception."""

    model_config = ConfigDict(extra="forbid")
    __test__ = False  # not a pytest class

    args: list[Any] = Field(description="Positional arguments (JSON values).")
    expected: Any = Field(default=None, description="The value the call must return.")
    raises: str | None = Field(default=None, description="Name of the exception it must raise.")
    hidden: bool = Field(default=False, description="Scored, but never shown in feedback.")


class CodeFixTask(BaseModel):
    """A buggy function, its fix and its tests."""

    model_config = ConfigDict(extra="forbid")

    id: str
    function: str = Field(description="Name of the function under test.")
    description: str
    buggy: str
    fixed: str = Field(description="A reference fix (the scripted policy submits it).")
    tests: list[TestCase] = Field(min_length=1)

    @model_validator(mode="after")
    def _has_shown_tests(self) -> CodeFixTask:
        if all(t.hidden for t in self.tests):
            raise ValueError(f"tests: task {self.id!r} needs at least one test that is not hidden")
        return self


@functools.lru_cache(maxsize=4)
def load_tasks(path: str | Path = DATA) -> tuple[CodeFixTask, ...]:
    """The tasks of a YAML file (validated; the error names the task and the field)."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: expected a non-empty list of tasks")
    tasks = []
    for i, item in enumerate(raw):
        try:
            tasks.append(CodeFixTask.model_validate(item))
        except ValidationError as e:
            raise ValueError(f"{path}: task {i} ({item.get('id', '?')}): {e}") from None
    return tuple(tasks)


def extract_code(action: str) -> str:
    """The last fenced code block of a reply, or the whole reply."""
    blocks = _FENCE.findall(action)
    return blocks[-1] if blocks else action


def check_code(code: str, function: str) -> str | None:
    """Why ``code`` cannot be tested (a syntax error, no such function), or ``None``."""
    if len(code) > MAX_CODE_CHARS:
        return f"Your code is too long ({len(code)} characters; limit {MAX_CODE_CHARS})."
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        line = (e.text or "").rstrip()
        where = f" (line {e.lineno})" + (f":\n    {line}" if line else "")
        return f"Your code does not parse: SyntaxError: {e.msg}{where}"
    except (ValueError, RecursionError, MemoryError) as e:
        return f"Your code does not parse: {type(e).__name__}: {e}"
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if function not in defined:
        return f"Your code does not define a function named {function}."
    return None


def _same(got: Any, want: Any) -> bool:
    if isinstance(got, bool) or isinstance(want, bool):
        return type(got) is type(want) and got == want
    if isinstance(got, (int, float)) and isinstance(want, (int, float)):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    return type(got) is type(want) and got == want


class CodeFix(TextEnv):
    """Fix a buggy Python function so that its unit tests pass.

    Args:
        tasks: ids of the tasks to draw from (default: all of ``data/code_fix.yaml``).
        max_turns: submissions per episode.
        reward_weights: overrides of ``CodeFix.reward_weights``.
        render_mode: ``"ansi"`` or ``None``.

    ``reset(options={"task": "<id>"})`` picks a task by id.
    """

    reward_weights: ClassVar[dict[str, float]] = {
        "tests_passed": 0.5, "all_passed": 1.0, "syntax_ok": 0.1}
    max_turns = 4
    system_prompt = ("You are an expert Python programmer. You fix bugs in Python functions. "
                     "Reply with the complete corrected function in a single ```python code block.")

    def __init__(self, tasks: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        everything = {t.id: t for t in load_tasks()}
        unknown = sorted(set(tasks or []) - set(everything))
        if unknown:
            raise ValueError(f"tasks: unknown task id(s) {unknown}; valid: {', '.join(everything)}")
        self.tasks = [everything[i] for i in tasks] if tasks else list(everything.values())
        self.task = self.tasks[0]
        self._last = (0.0, 0.0)  # (fraction passed, syntax ok) of the previous submission

    def _reset_task(self, options: dict[str, Any] | None) -> str:
        wanted = (options or {}).get("task")
        if wanted is not None:
            by_id = {t.id: t for t in self.tasks}
            if wanted not in by_id:
                raise ValueError(f"options['task']: unknown task {wanted!r}; valid: {', '.join(by_id)}")
            self.task = by_id[wanted]
        else:
            self.task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        self._last = (0.0, 0.0)
        shown = [t for t in self.task.tests if not t.hidden][:2]
        examples = "\n".join(f"    {self._call(t)} == {t.expected!r}" if t.raises is None
                             else f"    {self._call(t)} raises {t.raises}" for t in shown)
        return (f"Fix the bug in this Python function.\n\nTask: {self.task.description}\n\n"
                f"```python\n{self.task.buggy}```\n\nIt must pass tests such as:\n{examples}\n"
                "(and a few hidden ones).\n\nReply with the whole corrected function in a "
                "```python code block.")

    def _call(self, test: TestCase) -> str:
        return f"{self.task.function}({', '.join(repr(a) for a in test.args)})"

    def _score(self, action: str) -> StepResult:
        code = extract_code(action)
        problem = check_code(code, self.task.function)
        if problem is not None:
            return self._result(0.0, 0.0, f"{problem}\nReply with the whole corrected function "
                                "in a ```python code block.", {})
        outcomes, run_error = self._run_tests(code)
        passed = [o is not None and self._passes(t, o) for t, o in zip(self.task.tests, outcomes, strict=True)]
        fraction = sum(passed) / len(passed)
        lines = [f"All {len(passed)} tests passed." if all(passed)
                 else f"{sum(passed)} of {len(passed)} tests passed."]
        for test, ok, outcome in zip(self.task.tests, passed, outcomes, strict=True):
            if not ok and not test.hidden and outcome is not None:
                lines.append(f"Failed: {self._call(test)} {self._describe(outcome)}; expected "
                             + (f"{test.expected!r}." if test.raises is None else f"{test.raises} to be raised."))
        hidden_failed = sum(1 for t, ok in zip(self.task.tests, passed, strict=True) if t.hidden and not ok)
        if hidden_failed:
            lines.append(f"{hidden_failed} hidden test(s) failed.")
        if run_error:
            lines.append(run_error)
        return self._result(fraction, 1.0, "\n".join(lines), {"tests": len(passed), "passed": sum(passed)})

    def _result(self, fraction: float, syntax: float, feedback: str, info: dict[str, Any]) -> StepResult:
        last_fraction, last_syntax = self._last
        self._last = (fraction, syntax)
        done = fraction == 1.0
        components = {"tests_passed": fraction - last_fraction, "all_passed": float(done),
                      "syntax_ok": syntax - last_syntax}
        return StepResult(feedback, components, done,
                          {**info, "fraction_passed": fraction, "syntax_valid": bool(syntax)})

    @staticmethod
    def _passes(test: TestCase, outcome: dict[str, Any]) -> bool:
        if test.raises is not None:
            return outcome.get("raised") == test.raises
        return "value" in outcome and _same(outcome["value"], test.expected)

    @staticmethod
    def _describe(outcome: dict[str, Any]) -> str:
        if "value" in outcome:
            return f"returned {outcome['value']!r}"
        if "raised" in outcome:
            message = f": {outcome['message']}" if outcome.get("message") else ""
            return f"raised {outcome['raised']}{message}"
        return f"returned {outcome.get('unsupported', 'something unusable')}"

    def _run_tests(self, code: str) -> tuple[list[dict[str, Any] | None], str]:
        """One outcome per test (``None`` when the run gave none) and what went wrong overall."""
        nonce = secrets.token_hex(16)
        cases = json.dumps([t.args for t in self.task.tests])
        harness = (_HARNESS.read_text(encoding="utf-8").replace("__NONCE__", nonce)
                   .replace("__FUNCTION__", self.task.function).replace('"__CASES__"', repr(cases)))
        result = run_python(harness, files={"solution.py": code}, limits=LIMITS)
        events, stray = _events(result.stdout, nonce)
        account = dataclasses.replace(result, stdout="").report()  # the harness lines stay private
        outcomes: list[dict[str, Any] | None] = [None] * len(self.task.tests)
        for event in events:
            i = event.get("i")
            if isinstance(i, int) and 0 <= i < len(outcomes):
                outcomes[i] = event
        notes = []
        error = next((e["error"] for e in events if "error" in e), None)
        if error is not None:
            notes.append(f"Your code raised an error when it was loaded: {error}")
        elif not any(e.get("loaded") for e in events):
            if result.status in ("ok", "error"):
                account = f"the process exited with status {result.returncode} while loading your code."
            notes.append(f"The tests did not run: {account}")
        elif None in outcomes:
            done = len(outcomes) - outcomes.count(None)
            if result.status in ("ok", "error"):
                account = f"the process exited with status {result.returncode}."
            notes.append(f"The run stopped after {done} of {len(outcomes)} tests: {account}")
        if stray.strip():
            notes.append(f"Your code printed:\n{stray[:500]}")
        return outcomes, "\n".join(notes)

    def scripted_action(self) -> str:
        """The reference fix."""
        return f"```python\n{self.task.fixed}```"


def _events(stdout: str, nonce: str) -> tuple[list[dict[str, Any]], str]:
    """The harness's JSON events (lines that start with the nonce) and every other line."""
    events, stray = [], []
    for line in stdout.splitlines():
        if line.startswith(nonce):
            try:
                event = json.loads(line[len(nonce):])
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        else:
            stray.append(line)
    return events, "\n".join(stray)


register_env(
    "CodeFix",
    "agentrl.envs.code_fix:CodeFix",
    components=CodeFix.reward_weights,
    description="Fix a buggy Python function; its unit tests run in the sandbox.",
)
