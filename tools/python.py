"""The ``python`` tool: run a program in the sandbox and return what it printed.

Each call is a fresh process in a fresh directory (nothing is kept between calls) under
:data:`PYTHON_TOOL_LIMITS`; see :mod:`agentrl.tools.sandbox` for what is isolated where. A
program that exits non-zero, times out or hits a limit is a tool error whose message holds the
traceback and the output, so the model can read what went wrong.
"""

from __future__ import annotations

from agentrl.tools.sandbox import SandboxLimits, run_python

from agentrl.tool import TOOLS, ToolError, tool

__all__ = ["PYTHON_TOOL_LIMITS", "python"]

PYTHON_TOOL_LIMITS = SandboxLimits(wall_s=10.0, cpu_s=5, memory_mb=512, max_output_bytes=4000)


# The sandbox enforces wall_s itself once a run starts; the tool timeout only has to cover the
# wait for a free sandbox slot (AGENTRL_SANDBOX_CONCURRENCY) when many episodes call at once.
@tool(name="python", timeout_s=300.0, max_output_chars=6000,
      example={"code": "print(sum(range(1, 101)))"})
def python(code: str) -> str:
    """Run a Python program in a sandbox and return what it prints.

    Each call starts a fresh process with no network, no state from earlier calls and limits on
    time and memory; print every value you want to see.

    Args:
        code: A complete Python program, for example "print(2 ** 10)".
    """
    result = run_python(code, limits=PYTHON_TOOL_LIMITS)
    if result.status != "ok":
        raise ToolError(result.report())
    return result.report()


TOOLS.register("python", python)
