from __future__ import annotations

from typing import ClassVar

import pytest
from gymnasium.utils.env_checker import check_env

from agentrl.env import StepResult, TextEnv
from agentrl.tool import ToolEnv, tool
from agentrl.toolcall import format_tool_call


class Product(TextEnv):
    """Answer a * b; one answer ends the episode."""

    reward_weights: ClassVar[dict[str, float]] = {"correct": 1.0}
    max_turns = 3
    system_prompt = "Multiply."

    def _reset_task(self, options):
        self.a, self.b = (int(x) for x in self.np_random.integers(2, 50, size=2))
        return f"What is {self.a} * {self.b}?"

    def _score(self, action):
        ok = action.strip() == str(self.a * self.b)
        return StepResult("right" if ok else "wrong", {"correct": float(ok)}, ok, {"task_note": ["x"]})


@tool(timeout_s=0.5)
def boom(x: int) -> int:
    """Always fails.

    Args:
        x: Ignored.
    """
    raise RuntimeError("kaput")


def make(**kw):
    return ToolEnv(Product(), ["calculator", boom], **kw)


def _weighted(env, comps):
    return sum(env.reward_weights[k] * v for k, v in comps.items())


def test_passes_check_env_and_exposes_tools():
    env = make()
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=3)
    assert obs.startswith("What is") and info["system_prompt"] == "Multiply."
    assert [t["function"]["name"] for t in info["tools"]] == ["calculator", "boom"]
    assert env.reward_weights == {"tool_calls": 0.0, "tool_error": -0.1, "format": 0.2, "correct": 1.0}


def test_task_is_seeded_exactly_as_on_its_own():
    env, task = make(), Product()
    assert env.reset(seed=11)[0] == task.reset(seed=11)[0]


def test_tool_turn_returns_tool_messages_then_the_answer_is_scored():
    env = make()
    env.reset(seed=0)
    a, b = env.env.a, env.env.b
    call = format_tool_call("calculator", {"expression": f"{a} * {b}"})
    obs, r, term, trunc, info = env.step(f"Let me compute.\n{call}")
    assert (term, trunc) == (False, False)
    assert info["feedback_messages"] == [{"role": "tool", "name": "calculator", "content": str(a * b)}]
    assert info["tool_calls"] == [{"name": "calculator", "arguments": {"expression": f"{a} * {b}"}, "id": None}]
    assert obs == f"[calculator] {a * b}"
    assert info["reward_components"] == {"tool_calls": 1.0, "tool_error": 0.0, "format": 0.0} and r == 0.0
    obs, r, term, trunc, info = env.step(str(a * b))
    assert obs == "right" and term and r == 1.0 and info["task_note"] == ["x"]
    assert "feedback_messages" not in info


def test_every_tool_failure_is_feedback_with_a_tool_error():
    env = make(max_turns=8)
    env.reset(seed=0)
    text = ("<tool_call>{bad json}</tool_call>"
            + format_tool_call("nosuch", {})
            + format_tool_call("calculator", {"expr": "1"})
            + format_tool_call("boom", {"x": 1}))
    _obs, r, term, _trunc, info = env.step(text)
    contents = [m["content"] for m in info["feedback_messages"]]
    assert contents[0].startswith("Error: tool call 1: invalid JSON (Expecting property name")
    assert contents[1] == "Error: unknown tool 'nosuch'; available: boom, calculator"
    assert contents[2].startswith("Error: invalid arguments for calculator: missing required argument 'expression'")
    assert contents[3] == "Error: RuntimeError: kaput"
    comps = info["reward_components"]
    assert comps == {"tool_calls": 3.0, "tool_error": 4.0, "format": pytest.approx(-0.5 / 8)}  # some calls parsed
    _, _, _, _, info = env.step("<tool_call>{bad json}</tool_call>")
    assert info["reward_components"] == {"tool_calls": 0.0, "tool_error": 1.0, "format": pytest.approx(-1 / 8)}
    assert r == pytest.approx(_weighted(env, comps)) and not term


def test_bare_json_calls_get_partial_format_credit_and_a_hint():
    env = make(max_turns=4)
    env.reset(seed=0)
    _, r, _, _, info = env.step('{"name": "calculator", "arguments": {"expression": "2 + 2"}}')
    assert info["feedback_messages"][0]["content"] == "4\n(Note: wrap each call in <tool_call></tool_call> tags.)"
    assert info["reward_components"]["format"] == pytest.approx(-0.5 / 4)
    assert r == pytest.approx(0.2 * -0.5 / 4)


def test_call_limits_per_turn_and_per_episode():
    env = make(max_calls_per_turn=2, max_calls_per_episode=3, max_turns=5)
    env.reset(seed=0)
    three = "".join(format_tool_call("calculator", {"expression": f"{i} + 1"}) for i in range(3))
    _, _, _, _, info = env.step(three)
    assert [m["content"] for m in info["feedback_messages"]] == [
        "1", "2", "Error: 1 call(s) not run: at most 2 tool calls per turn"]
    assert info["reward_components"]["tool_error"] == 1.0 and env.calls_used == 2
    _, _, _, _, info = env.step(three)
    assert [m["content"] for m in info["feedback_messages"]][1] == (
        "Error: 2 call(s) not run: the limit of 3 tool calls per episode is spent; give your final "
        "answer without a tool call")
    _, _, _, _, info = env.step(three)
    assert info["reward_components"]["tool_calls"] == 0.0 and info["reward_components"]["tool_error"] == 3.0
    _, _, _, _, info = env.step("<tool_call>{oops</tool_call>" * 1000)  # the penalty and feedback are bounded
    assert info["reward_components"]["tool_error"] == 3.0 and len(info["feedback_messages"]) == 3
    assert info["feedback_messages"][-1]["content"] == "Error: 998 more malformed call(s) not shown"


def test_turn_limit_truncates_and_task_truncation_ends_the_episode():
    env = make(max_turns=2)
    env.reset(seed=0)
    call = format_tool_call("calculator", {"expression": "1"})
    assert env.step(call)[3] is False
    assert env.step(call)[3] is True
    env = ToolEnv(Product(max_turns=1), ["calculator"], max_turns=5)
    env.reset(seed=0)
    _, _, term, trunc, _ = env.step("0")  # a wrong answer: the task allows one answer
    assert (term, trunc) == (False, True)


def test_constructor_errors():
    with pytest.raises(TypeError, match="env must be a TextEnv, got str"):
        ToolEnv("Product", ["calculator"])
    with pytest.raises(ValueError, match="max_calls_per_turn must be a positive integer, got 0"):
        make(max_calls_per_turn=0)
    with pytest.raises(ValueError, match="tools: give at least one tool"):
        ToolEnv(Product(), [])
    with pytest.raises(ValueError, match="unknown tool 'abacus'"):
        ToolEnv(Product(), ["abacus"])
    with pytest.raises(ValueError, match=r"reward_weights: unknown component\(s\) \['speed'\]"):
        make(reward_weights={"speed": 1.0})
    assert make(reward_weights={"tool_error": -1.0}).reward_weights["tool_error"] == -1.0
