from __future__ import annotations

import asyncio
import time
from typing import Literal

import pytest

from agentrl.registry import UnknownNameError
from agentrl.tool import TOOLS, Tool, ToolError, ToolResult, acall_tool, call_tool, get_tool, tool


@tool(example={"a": 2, "b": 3})
def add(a: int, b: int = 1) -> int:
    """Add two integers.

    Longer explanation that is
    still part of the description.

    Args:
        a: The first summand.
        b (int): The second summand,
            described on two lines.

    Returns:
        The sum.
    """
    return a + b


@tool(timeout_s=0.3)
async def slow_echo(text: str, delay: float = 0.0) -> str:
    """Echo text after a delay.

    Args:
        text: What to echo.
        delay: Seconds to wait first.
    """
    await asyncio.sleep(delay)
    return text


@tool(timeout_s=0.3)
def sleepy(seconds: float) -> str:
    """Sleep, then answer.

    Args:
        seconds: How long.
    """
    time.sleep(seconds)
    return "awake"


@tool
def fails(kind: Literal["tool", "bug"]) -> str:
    """Fail on purpose.

    Args:
        kind: Which failure.
    """
    if kind == "tool":
        raise ToolError("the file does not exist")
    return {}["missing"]


def test_schema_is_openai_function_format_from_hints_and_docstring():
    s = add.schema()
    assert s["type"] == "function"
    f = s["function"]
    assert f["name"] == "add"
    assert f["description"] == "Add two integers.\n\nLonger explanation that is still part of the description."  # lines unwrapped
    assert f["parameters"]["type"] == "object" and f["parameters"]["required"] == ["a"]
    assert f["parameters"]["properties"]["a"] == {"type": "integer", "description": "The first summand.", "examples": [2]}
    assert f["parameters"]["properties"]["b"]["description"] == "The second summand, described on two lines."
    assert f["parameters"]["properties"]["b"]["default"] == 1
    assert "title" not in str(s)
    assert s is not add.schema() and s == add.schema()  # a fresh dict each time


def test_schema_is_accepted_by_a_tool_template(tiny):
    _, tok = tiny
    qwen_like = "{% for t in tools %}{{ t.function.name }}:{{ t.function.parameters.required }};{% endfor %}"
    text = tok.apply_chat_template([{"role": "user", "content": "x"}], tools=[add.schema()], tokenize=False,
                                   chat_template=qwen_like)
    assert text == "add:['a'];"


def test_call_validates_and_runs():
    assert add.call({"a": 2, "b": "5"}) == ToolResult("add", output="7")  # JSON-ish coercion of "5"
    assert add(2, 3) == 5  # the decorated function stays callable
    r = add.call({"a": "two"})
    assert r.output == "" and r.error == (
        "invalid arguments for add: argument 'a': Input should be a valid integer, unable to parse string "
        "as an integer (got 'two'); expected add(a: integer, b: integer)")
    r = add.call({"b": 1, "c": 2})
    assert "missing required argument 'a'" in r.error and "unexpected argument 'c'" in r.error
    assert add.call([1, 2]).error.startswith("arguments of add must be a JSON object, got list")
    assert add.call({"a": 1}).content == "2" and add.call({}).content.startswith("Error: invalid arguments")


def test_tool_errors_exceptions_and_timeouts_become_results():
    assert fails.call({"kind": "tool"}).error == "the file does not exist"
    assert fails.call({"kind": "bug"}).error == "KeyError: 'missing'"
    assert "Input should be 'tool' or 'bug'" in fails.call({"kind": "other"}).error
    start = time.monotonic()
    assert sleepy.call({"seconds": 2}).error == "sleepy timed out after 0.3 s"
    assert time.monotonic() - start < 1.5
    assert slow_echo.call({"text": "hi"}).output == "hi"  # an async tool through the sync entry
    assert slow_echo.call({"text": "hi", "delay": 2}).error == "slow_echo timed out after 0.3 s"


def test_async_entry_points():
    async def main():
        return await asyncio.gather(
            slow_echo.acall({"text": "a"}), sleepy.acall({"seconds": 0.01}), sleepy.acall({"seconds": 0.6}),
            fails.acall({"kind": "bug"}), add.acall({"a": "x"}), acall_tool("calculator", {"expression": "6*7"}),
            acall_tool("nope", {}),
        )

    a, b, c, d, e, f, g = asyncio.run(main())
    assert (a.output, b.output, f.output) == ("a", "awake", "42")
    assert c.error == "sleepy timed out after 0.3 s" and d.error == "KeyError: 'missing'"
    assert e.error.startswith("invalid arguments for add") and g.error.startswith("unknown tool 'nope'")


def test_long_output_is_cut():
    @tool(max_output_chars=100)
    def shout(n: int) -> str:
        """Shout.

        Args:
            n: Length.
        """
        return "A" * n

    out = shout.call({"n": 1000}).output
    assert out.startswith("A" * 50) and out.endswith("A" * 50) and "[900 characters cut]" in out


def test_non_string_results_are_json():
    @tool
    def info(key: str) -> dict:
        """Look up.

        Args:
            key: Key.
        """
        return {"key": key, "values": [1, 2]}

    assert info.call({"key": "k"}).output == '{"key": "k", "values": [1, 2]}'


def test_decorator_rejects_untyped_or_undocumented_functions():
    with pytest.raises(TypeError, match="parameter 'x' needs a type hint"):
        @tool
        def untyped(x):
            """Doc."""

    with pytest.raises(TypeError, match="needs a docstring"):
        @tool
        def undocumented(x: int) -> int:
            return x

    with pytest.raises(TypeError, match=r"\*args/\*\*kwargs are not supported \(rest\)"):
        @tool
        def star(*rest: int) -> int:
            """Doc."""

    with pytest.raises(TypeError, match=r"example names unknown parameter\(s\) \['y'\]"):
        @tool(example={"y": 1})
        def ex(x: int) -> int:
            """Doc."""


def test_call_tool_runs_the_catalog_and_names_valid_tools():
    assert set(TOOLS.names()) >= {"calculator", "python", "search"}
    assert call_tool("calculator", {"expression": "2 + 3 * 4"}) == ToolResult("calculator", "14")
    r = call_tool("calculater", {"expression": "1"})
    assert r.error == "unknown tool 'calculater'; valid: calculator, python, search"
    assert call_tool("calculator").error.startswith("invalid arguments for calculator: missing required argument 'expression'")
    assert call_tool("python", {"code": "print(6 * 7)"}).output == "42"
    r = call_tool("python", {"code": "import sys; print('partial'); sys.exit(3)"})
    assert r.error.startswith("Exit status 3.") and "partial" in r.error
    with pytest.raises(UnknownNameError, match="unknown tool 'x'; valid: calculator"):
        get_tool("x")
    assert isinstance(get_tool("search"), Tool)


def test_waiting_for_a_worker_does_not_count_against_the_timeout():
    from concurrent.futures import ThreadPoolExecutor

    from agentrl.tool import _POOL_SIZE

    @tool(timeout_s=0.5)
    def nap(seconds: float) -> str:
        """Nap.

        Args:
            seconds: How long.
        """
        time.sleep(seconds)
        return "ok"

    n = _POOL_SIZE + 8  # the last 8 wait about 0.3 s for a worker, then run 0.3 s
    with ThreadPoolExecutor(n) as callers:
        results = list(callers.map(lambda _: nap.call({"seconds": 0.3}), range(n)))
    assert [r.output for r in results] == ["ok"] * n
