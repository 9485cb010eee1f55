"""Tools: typed Python functions a model can call, validated and run without ever crashing a run.

:func:`tool` turns a function with type hints and a Google-style docstring into a :class:`Tool`:
a JSON schema built by pydantic in the OpenAI function format that chat templates accept
(``tools=`` of ``apply_chat_template``), argument validation before every call, a timeout and
error capture. A failing call is a :class:`ToolResult` with ``error`` set, never an exception::

    @tool(example={"a": 2, "b": 3})
    def add(a: int, b: int) -> int:
        \"\"\"Add two integers.

        Args:
            a: The first summand.
            b: The second summand.
        \"\"\"
        return a + b

    add.schema()                 # {"type": "function", "function": {"name": "add", ...}}
    add.call({"a": 2, "b": "x"}).error   # "invalid arguments for add: argument 'b': ..."

The catalog (``calculator``, ``python``, ``search``) lives in :mod:`agentrl.tools` and registers
in :data:`TOOLS`; :func:`call_tool` runs any registered tool by name. Parsing of the calls a model
writes and the Hermes-style tool prompt are in :mod:`agentrl.toolcall`; the multi-turn wrapper
environment is :class:`agentrl.toolenv.ToolEnv`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import re
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from agentrl.registry import Registry, UnknownNameError
from agentrl.toolcall import (
    ParsedCalls,
    format_tool_call,
    parse_tool_calls,
    supports_native_tools,
    tools_system_prompt,
)

__all__ = [
    "TOOLS",
    "ParsedCalls",
    "Tool",
    "ToolEnv",  # noqa: F822  (lazy: see __getattr__)
    "ToolError",
    "ToolResult",
    "acall_tool",
    "call_tool",
    "format_tool_call",
    "get_tool",
    "parse_tool_calls",
    "supports_native_tools",
    "tool",
    "tools_system_prompt",
]

TOOLS: Registry[Tool] = Registry("tool")
"""The tool catalog by name; importing :mod:`agentrl.tools` fills it."""

_POOL_SIZE = 32  # sync tool calls at once; workers mostly wait (subprocesses, I/O)
QUEUE_TIMEOUT_S = 600.0  # a call that cannot start this long (every worker hung) is an error
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


class ToolError(Exception):
    """Raise in a tool to report a failure the model should read (the message, no traceback)."""


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one tool call.

    Attributes:
        name: the tool that was called (as the model spelled it).
        output: what the tool returned, as text ("" when it failed).
        error: what went wrong (unknown tool, invalid arguments, an exception, a timeout), or
            ``None`` on success.
    """

    name: str
    output: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def content(self) -> str:
        """The text a model gets back: the output, or ``Error: ...``."""
        return self.output if self.error is None else f"Error: {self.error}"


@dataclass(frozen=True)
class Tool:
    """A callable with a schema. Build one with :func:`tool`.

    Attributes:
        name: the name a model calls it by.
        description: what it does (from the docstring).
        fn: the function (sync or async).
        args_model: pydantic model of the arguments (``extra="forbid"``).
        timeout_s: a call that runs longer returns a timeout error (time spent waiting for a
            free worker does not count). A sync function keeps running in its worker thread;
            tools that can hang should enforce their own deadline (the ``python`` tool's
            sandbox does).
        max_output_chars: longer outputs are cut (head and tail kept).
    """

    name: str
    description: str
    fn: Callable[..., Any] = field(repr=False)
    args_model: type[BaseModel] = field(repr=False)
    timeout_s: float = 30.0
    max_output_chars: int = 4000

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (no validation, no error capture)."""
        return self.fn(*args, **kwargs)

    def schema(self) -> dict[str, Any]:
        """The OpenAI function schema (a fresh dict on every call)."""
        params = _strip_titles(self.args_model.model_json_schema())
        params.setdefault("properties", {})
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": params},
        }

    def signature(self) -> str:
        """``name(arg: type, ...)`` in JSON-schema types, for error messages."""
        props = self.schema()["function"]["parameters"]["properties"]
        args = ", ".join(f"{k}: {v.get('type', 'any')}" for k, v in props.items())
        return f"{self.name}({args})"

    def validate(self, arguments: Any) -> dict[str, Any]:
        """Check ``arguments`` against the schema; return the keyword arguments to call with.

        Raises:
            ToolError: naming each missing, unexpected or invalid argument.
        """
        if not isinstance(arguments, dict):
            raise ToolError(
                f"arguments of {self.name} must be a JSON object, got {type(arguments).__name__}; "
                f"expected {self.signature()}"
            )
        try:
            model = self.args_model.model_validate(arguments)
        except ValidationError as e:
            raise ToolError(f"invalid arguments for {self.name}: {_describe(e)}; "
                            f"expected {self.signature()}") from None
        return {k: getattr(model, k) for k in type(model).model_fields}

    def call(self, arguments: Any) -> ToolResult:
        """Validate and run (blocking, in a bounded worker pool); never raises for tool failures."""
        try:
            kwargs = self.validate(arguments)
        except ToolError as e:
            return ToolResult(self.name, error=str(e))
        started = threading.Event()

        def job() -> Any:
            started.set()
            return asyncio.run(self.fn(**kwargs)) if _is_async(self.fn) else self.fn(**kwargs)

        future = _worker_pool().submit(job)
        if not started.wait(QUEUE_TIMEOUT_S) and future.cancel():  # time in the queue is not the tool's
            return ToolResult(self.name, error=f"{self.name} did not start: every tool worker is busy")
        try:
            return self._result(future.result(timeout=self.timeout_s))
        except concurrent.futures.TimeoutError:
            return ToolResult(self.name, error=f"{self.name} timed out after {self.timeout_s:g} s")
        except Exception as e:
            return ToolResult(self.name, error=_error_text(e))

    async def acall(self, arguments: Any) -> ToolResult:
        """Validate and run without blocking the event loop; never raises for tool failures."""
        try:
            kwargs = self.validate(arguments)
        except ToolError as e:
            return ToolResult(self.name, error=str(e))
        work = self.fn(**kwargs) if _is_async(self.fn) else asyncio.to_thread(self.fn, **kwargs)
        try:
            return self._result(await asyncio.wait_for(work, self.timeout_s))
        except asyncio.TimeoutError:
            return ToolResult(self.name, error=f"{self.name} timed out after {self.timeout_s:g} s")
        except Exception as e:
            return ToolResult(self.name, error=_error_text(e))

    def _result(self, value: Any) -> ToolResult:
        if isinstance(value, str):
            text = value
        elif isinstance(value, (dict, list)):
            text = json.dumps(value, default=str)
        else:
            text = str(value)
        if len(text) > self.max_output_chars:
            half = self.max_output_chars // 2
            text = f"{text[:half]}\n...[{len(text) - 2 * half:,} characters cut]...\n{text[-half:]}"
        return ToolResult(self.name, output=text)


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = 30.0,
    max_output_chars: int = 4000,
    example: dict[str, Any] | None = None,
) -> Any:
    """Decorator: turn a typed function with a docstring into a :class:`Tool`.

    Every parameter needs a type hint (pydantic validates it); the docstring's first paragraph
    becomes the description and its ``Args:`` section the parameter descriptions.

    Args:
        fn: the function (when used as ``@tool`` without parentheses).
        name: the tool name (default: the function's name).
        description: overrides the docstring's description.
        timeout_s: seconds a call may take.
        max_output_chars: longer outputs are cut.
        example: example arguments, shown to the model in the schema (``examples``) and in the
            one-shot call of :func:`agentrl.toolcall.tools_system_prompt`.

    Raises:
        TypeError: for ``*args``/``**kwargs``, a parameter without a type hint, no docstring, or
            an ``example`` key that is not a parameter.
    """

    def build(f: Callable[..., Any]) -> Tool:
        tool_name = name or f.__name__
        doc = inspect.getdoc(f)
        if not doc and description is None:
            raise TypeError(f"tool {tool_name!r} needs a docstring (the model reads it)")
        summary, arg_docs = _parse_docstring(doc or "")
        model = _args_model(f, tool_name, arg_docs, example or {})
        return Tool(tool_name, description or summary, f, model, timeout_s, max_output_chars)

    return build(fn) if fn is not None else build


def get_tool(name: str) -> Tool:
    """The registered tool ``name`` (the catalog is loaded first).

    Raises:
        UnknownNameError: listing the registered tools.
    """
    _load_catalog()
    return TOOLS.get(name)


def call_tool(name: str, arguments: dict[str, Any] | None = None) -> ToolResult:
    """Run the registered tool ``name`` with validation and error capture (blocking).

    Never raises for a tool failure: an unknown tool, invalid arguments, an exception or a
    timeout come back as ``ToolResult.error``.

    Example:
        >>> call_tool("calculator", {"expression": "2 + 3 * 4"}).output
        '14'
    """
    try:
        found = get_tool(name)
    except UnknownNameError as e:
        return ToolResult(str(name), error=str(e))
    return found.call({} if arguments is None else arguments)


async def acall_tool(name: str, arguments: dict[str, Any] | None = None) -> ToolResult:
    """:func:`call_tool` for async code."""
    try:
        found = get_tool(name)
    except UnknownNameError as e:
        return ToolResult(str(name), error=str(e))
    return await found.acall({} if arguments is None else arguments)


# ---- helpers ---------------------------------------------------------------------------------


def _load_catalog() -> None:
    import agentrl.tools  # noqa: F401  (registers calculator, python, search)


def _worker_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(_POOL_SIZE, thread_name_prefix="agentrl-tool")
        return _pool


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn)


def _error_text(e: BaseException) -> str:
    return str(e) if isinstance(e, ToolError) else f"{type(e).__name__}: {e}"


def _describe(error: ValidationError) -> str:
    parts = []
    for e in error.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "arguments"
        if e["type"] == "missing":
            parts.append(f"missing required argument {loc!r}")
        elif e["type"] == "extra_forbidden":
            parts.append(f"unexpected argument {loc!r}")
        else:
            got = repr(e.get("input"))
            got = got if len(got) <= 60 else got[:57] + "..."
            parts.append(f"argument {loc!r}: {e['msg']} (got {got})")
    return "; ".join(parts)


_ARG_LINE = re.compile(r"^\s{0,8}(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {arg: description}) from a Google-style docstring."""
    lines = doc.splitlines()
    sections = re.compile(r"^(Args|Arguments|Returns|Raises|Yields|Example|Examples|Note):\s*$")
    cut = next((i for i, ln in enumerate(lines) if sections.match(ln.strip())), len(lines))
    summary = re.sub(r"(?<!\n)\n(?!\n)", " ", "\n".join(lines[:cut]).strip())  # unwrap lines
    args: dict[str, str] = {}
    start = next((i for i, ln in enumerate(lines) if ln.strip() in ("Args:", "Arguments:")), None)
    if start is not None:
        current, args_indent = None, 0
        for ln in lines[start + 1 :]:
            if not ln.strip():
                continue
            if sections.match(ln.strip()) or not ln.startswith((" ", "\t")):
                break
            m = _ARG_LINE.match(ln)
            indent = len(ln) - len(ln.lstrip())
            if m and (current is None or indent <= args_indent):
                current, args_indent = m.group(1), indent
                args[current] = m.group(2).strip()
            elif current is not None:
                args[current] = f"{args[current]} {ln.strip()}".strip()
    return summary, args


def _args_model(
    fn: Callable[..., Any], tool_name: str, arg_docs: dict[str, str], example: dict[str, Any]
) -> type[BaseModel]:
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"tool {tool_name!r}: *args/**kwargs are not supported ({p.name})")
        if p.name not in hints:
            raise TypeError(f"tool {tool_name!r}: parameter {p.name!r} needs a type hint")
        extra = {"examples": [example[p.name]]} if p.name in example else {}
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (hints[p.name], Field(default, description=arg_docs.get(p.name), **extra))
    unknown = sorted(set(example) - set(fields))
    if unknown:
        raise TypeError(f"tool {tool_name!r}: example names unknown parameter(s) {unknown}")
    model_name = "".join(part.title() for part in re.split(r"\W|_", tool_name) if part) + "Args"
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)


def _strip_titles(schema: Any) -> Any:
    """Drop pydantic's auto-generated ``title`` keys (noise in a prompt)."""
    if isinstance(schema, dict):
        return {k: _strip_titles(v) for k, v in schema.items()
                if not (k == "title" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema



def __getattr__(name: str) -> Any:
    """``agentrl.tool.ToolEnv``, resolved lazily (``agentrl.toolenv`` imports this module)."""
    if name == "ToolEnv":
        from agentrl.toolenv import ToolEnv

        return ToolEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
