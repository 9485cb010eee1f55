"""ToolEnv: any task environment plus a list of tools, as one multi-turn environment.

A turn that calls tools gets the results back as ``tool`` messages
(``info["feedback_messages"]``); a turn without a tool call is the final answer, which the task
environment scores. Every failure on the tool path (a malformed call, an unknown tool, invalid
arguments, a tool that raises or times out, a call over the limits) becomes a feedback message
that says what was wrong, and counts in the ``tool_error`` component; it never ends the run.

Reward components added to the task's own (the task's weight wins for a shared name):
    tool_calls  calls run this turn (weight 0: a metric).
    tool_error  failed or refused calls this turn (weight -0.1 each; at most
                ``max_calls_per_turn + 1`` per turn).
    format      on a tool turn: 0 for ``<tool_call>`` blocks, -0.5/max_turns for bare JSON calls,
                -1/max_turns when every call was malformed (a penalty, like GuessNumber's, so
                longer episodes never earn more); on an answer turn, the task's own format
                score if it reports one, else 0.

Example episode (``ToolEnv(task, ["calculator"])``, task "What is 6 * 7?")::

    action '<tool_call>{"name": "calculator", "arguments": {"expression": "6 * 7"}}</tool_call>'
        -> tool message "42"                        tool_calls=1, tool_error=0, format=0
    action 'Answer: 42' -> the task scores it        correct=1, terminated
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

from agentrl.env import StepResult, TextEnv
from agentrl.tool import Tool, ToolResult, get_tool
from agentrl.toolcall import ParsedCalls, parse_tool_calls

__all__ = ["ToolEnv"]


class ToolEnv(TextEnv):
    """Wrap ``env`` so that the model may call ``tools`` before it answers.

    Args:
        env: the task environment; it sees only the final answers.
        tools: :class:`~agentrl.tool.Tool` objects or names of registered tools.
        max_calls_per_turn: calls after this many in one turn are refused (with feedback).
        max_calls_per_episode: calls after this many in an episode are refused.
        max_turns: turns in all, tool turns included (default: the task's ``max_turns``).
        reward_weights: overrides of the default weights (any component of the task or the
            tool components above).
        render_mode: ``"ansi"`` or ``None``.
    """

    tool_weights: ClassVar[dict[str, float]] = {"tool_calls": 0.0, "tool_error": -0.1, "format": 0.2}

    def __init__(
        self,
        env: TextEnv,
        tools: Sequence[Tool | str],
        *,
        max_calls_per_turn: int = 4,
        max_calls_per_episode: int = 16,
        max_turns: int | None = None,
        reward_weights: dict[str, float] | None = None,
        render_mode: str | None = None,
    ) -> None:
        if not isinstance(env, TextEnv):
            raise TypeError(f"env must be a TextEnv, got {type(env).__name__}")
        for key, value in (("max_calls_per_turn", max_calls_per_turn),
                           ("max_calls_per_episode", max_calls_per_episode)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        super().__init__(max_turns=max_turns or env.max_turns, render_mode=render_mode)
        self.env = env
        self.tools: dict[str, Tool] = {}
        for t in tools:
            resolved = get_tool(t) if isinstance(t, str) else t
            if not isinstance(resolved, Tool):
                raise TypeError(f"tools: expected Tool objects or names, got {type(t).__name__}")
            self.tools[resolved.name] = resolved
        if not self.tools:
            raise ValueError("tools: give at least one tool")
        self.max_calls_per_turn = max_calls_per_turn
        self.max_calls_per_episode = max_calls_per_episode
        weights = {**self.tool_weights, **env.reward_weights, **type(self).reward_weights}
        unknown = sorted(set(reward_weights or {}) - set(weights))
        if unknown:
            raise ValueError(f"reward_weights: unknown component(s) {unknown}; "
                             f"{type(self).__name__} reports {sorted(weights)}")
        self.reward_weights = {**weights, **(reward_weights or {})}
        self.calls_used = 0
        self.successful_calls = 0
        self._seed: int | None = None
        self._task_truncated = False

    # ---- TextEnv hooks ------------------------------------------------------------------------
    def tool_schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self.tools.values()]

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        self._seed = seed  # the task is seeded exactly as it would be on its own
        return super().reset(seed=seed, options=options)

    def _reset_task(self, options: dict[str, Any] | None) -> str:
        obs, info = self.env.reset(seed=self._seed, options=options)
        self.system_prompt = info.get("system_prompt")
        self.calls_used = self.successful_calls = 0
        self._task_truncated = False
        return obs

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        if self._task_truncated and not (terminated or truncated):
            truncated = self._needs_reset = True  # the task ran out of answer turns
        return obs, reward, terminated, truncated, info

    def _score(self, action: str) -> StepResult:
        parsed = parse_tool_calls(action)
        if parsed.attempted:
            return self._tool_turn(parsed)
        return self._answer(action)

    # ---- the two kinds of turn ---------------------------------------------------------------
    def _answer(self, action: str) -> StepResult:
        """A turn without tool calls: the task scores it."""
        obs, _, terminated, truncated, info = self.env.step(action)
        self._task_truncated = truncated
        components = {"tool_calls": 0.0, "tool_error": 0.0, "format": 0.0,
                      **info.get("reward_components", {})}
        extra = {k: copy.deepcopy(v) for k, v in info.items() if k not in ("reward_components", "turn")}
        return StepResult(obs, components, terminated, extra)

    def _tool_turn(self, parsed: ParsedCalls) -> StepResult:
        """A turn with tool calls: run them (within the limits) and return their results."""
        shown = parsed.errors[: self.max_calls_per_turn]
        replies: list[tuple[str, str]] = [("tool_call", f"Error: {e}") for e in shown]
        if len(parsed.errors) > len(shown):
            replies.append(("tool_call", f"Error: {len(parsed.errors) - len(shown)} more malformed "
                                         "call(s) not shown"))
        errors = len(parsed.errors)
        room = min(self.max_calls_per_turn, self.max_calls_per_episode - self.calls_used)
        run, refused = parsed.calls[: max(room, 0)], parsed.calls[max(room, 0) :]
        for call in run:
            result = self._run(call.name, call.arguments)
            self.calls_used += 1
            self.successful_calls += result.ok
            errors += not result.ok
            replies.append((call.name, result.content))
        if refused:
            errors += len(refused)
            replies.append(("tool_call", f"Error: {self._refusal(len(refused))}"))
        fmt = 1.0 if parsed.style == "tagged" and not parsed.errors else (
            0.5 if parsed.calls else 0.0)
        if parsed.style == "json" and replies:
            name, text = replies[-1]
            replies[-1] = (name, f"{text}\n(Note: wrap each call in <tool_call></tool_call> tags.)")
        errors = min(errors, self.max_calls_per_turn + 1)  # a bounded penalty per turn
        components = {"tool_calls": float(len(run)), "tool_error": float(errors),
                      "format": (fmt - 1.0) / self.max_turns}
        info = {
            "feedback_messages": [{"role": "tool", "name": n, "content": c} for n, c in replies],
            "tool_calls": [c.model_dump() for c in run],
        }
        feedback = "\n".join(f"[{n}] {c}" for n, c in replies)
        return StepResult(feedback, components, False, info)

    def _run(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        found = self.tools.get(name)
        if found is None:
            valid = ", ".join(sorted(self.tools))
            return ToolResult(name, error=f"unknown tool {name!r}; available: {valid}")
        return found.call(arguments)

    def _refusal(self, n: int) -> str:
        if self.calls_used >= self.max_calls_per_episode:
            return (f"{n} call(s) not run: the limit of {self.max_calls_per_episode} tool calls "
                    "per episode is spent; give your final answer without a tool call")
        return f"{n} call(s) not run: at most {self.max_calls_per_turn} tool calls per turn"

    def close(self) -> None:
        self.env.close()
        super().close()
