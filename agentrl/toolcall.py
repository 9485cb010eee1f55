"""Writing tools into a prompt and reading the calls a model writes back (Hermes style).

SmolLM2's chat template ignores ``tools=``, so for templates without tool support the schemas go
into the system prompt (:func:`tools_system_prompt`), in the format of Hermes / Qwen2.5: schemas
inside ``<tools></tools>`` and calls as::

    <tool_call>
    {"name": "calculator", "arguments": {"expression": "6 * 7"}}
    </tool_call>

:func:`parse_tool_calls` reads those blocks (several per turn, any whitespace, a missing closing
tag at the very end) and, leniently, a bare JSON call object without tags. It is strict about
JSON: a block that is not valid JSON is an error that says where, never a guess. Whether the
calls were tagged or bare is reported in :attr:`ParsedCalls.style`, so an environment can score
the format (partial credit) instead of silently accepting it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from agentrl.types import ToolCall

__all__ = [
    "ParsedCalls",
    "format_tool_call",
    "parse_tool_calls",
    "supports_native_tools",
    "tools_system_prompt",
]

CallStyle = Literal["none", "tagged", "json"]

_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|(?=<tool_call>)|\Z)", re.S)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
_TEMPLATE_TOOLS = re.compile(r"\btools\b")
_MAX_JSON_ATTEMPTS = 256  # bare-JSON scan: bounded work on adversarial text


@dataclass
class ParsedCalls:
    """What :func:`parse_tool_calls` found in one model turn.

    Attributes:
        calls: well-formed calls, in order.
        errors: one message per malformed call (what is wrong and where).
        style: ``tagged`` (``<tool_call>`` blocks), ``json`` (bare JSON call objects, no tags)
            or ``none`` (no call was attempted).
        content: the text around the calls.
    """

    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    style: CallStyle = "none"
    content: str = ""

    @property
    def attempted(self) -> bool:
        """True when the turn tried to call a tool (even if every call was malformed)."""
        return bool(self.calls or self.errors)


def parse_tool_calls(text: str) -> ParsedCalls:
    """Find the tool calls in a model's turn.

    ``<tool_call>{...}</tool_call>`` blocks win; without any, bare JSON objects of the form
    ``{"name": ..., "arguments": {...}}`` (or a JSON list of them) count as calls with
    ``style="json"``. ``"parameters"`` is accepted for ``"arguments"``, and arguments given as a
    JSON string (the OpenAI wire format) are decoded.

    Example:
        >>> p = parse_tool_calls('<tool_call>{"name": "calc", "arguments": {"x": 1}}</tool_call>')
        >>> p.calls[0].name, p.calls[0].arguments, p.style
        ('calc', {'x': 1}, 'tagged')
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    blocks = list(_BLOCK.finditer(text))
    if blocks:
        out = ParsedCalls(style="tagged", content=_BLOCK.sub("", text).strip())
        for i, m in enumerate(blocks, 1):
            body = m.group(1).strip()
            fenced = _FENCE.match(body)
            body = fenced.group(1) if fenced else body
            try:
                obj = json.loads(body)
            except json.JSONDecodeError as e:
                out.errors.append(f"tool call {i}: invalid JSON ({e.msg} at line {e.lineno} "
                                  f"column {e.colno}) in {_snippet(body)}")
                continue
            except RecursionError:
                out.errors.append(f"tool call {i}: JSON nested too deeply")
                continue
            _add_call(out, obj, i)
        return out
    return _bare_json_calls(text)


def _bare_json_calls(text: str) -> ParsedCalls:
    out = ParsedCalls(style="none")
    decoder = json.JSONDecoder()
    spans: list[tuple[int, int]] = []
    pos, attempts = 0, 0
    while attempts < _MAX_JSON_ATTEMPTS:
        attempts += 1
        starts = [i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0]
        if not starts:
            break
        start = min(starts)
        try:
            obj, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):  # not JSON here, or nested absurdly deep
            pos = start + 1
            continue
        candidates = obj if isinstance(obj, list) else [obj]
        if candidates and all(_looks_like_call(c) for c in candidates):
            for c in candidates:
                _add_call(out, c, len(out.calls) + len(out.errors) + 1)
            spans.append((start, end))
            pos = end
        else:
            pos = start + 1
    if out.attempted:
        out.style = "json"
    kept, last = [], 0
    for s, e in spans:
        kept.append(text[last:s])
        last = e
    out.content = ("".join(kept) + text[last:]).strip()
    return out


def _looks_like_call(obj: Any) -> bool:
    return (isinstance(obj, dict) and isinstance(obj.get("name"), str)
            and ("arguments" in obj or "parameters" in obj))


def _add_call(out: ParsedCalls, obj: Any, i: int) -> None:
    shape = '{"name": <tool name>, "arguments": {<argument>: <value>, ...}}'
    if not isinstance(obj, dict):
        out.errors.append(f"tool call {i}: expected a JSON object {shape}, got {type(obj).__name__}")
        return
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        out.errors.append(f'tool call {i}: missing "name" (a string); write {shape}')
        return
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # OpenAI sends arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            out.errors.append(f'tool call {i} ({name}): "arguments" is a string that is not '
                              f"valid JSON ({e.msg})")
            return
    if not isinstance(args, dict):
        out.errors.append(f'tool call {i} ({name}): "arguments" must be a JSON object, '
                          f"got {type(args).__name__}")
        return
    call_id = obj.get("id")
    out.calls.append(ToolCall(name=name.strip(), arguments=args,
                              id=call_id if isinstance(call_id, str) else None))


def _snippet(text: str, n: int = 80) -> str:
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """A call written the way :func:`tools_system_prompt` asks for it."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def example_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """Example arguments for a function schema: its ``examples``, else a placeholder per type."""
    params = schema.get("function", schema).get("parameters", {})
    placeholders = {"string": "...", "integer": 1, "number": 1.5, "boolean": True,
                    "array": [], "object": {}}
    out: dict[str, Any] = {}
    required = params.get("required", [])
    for key, prop in params.get("properties", {}).items():
        if prop.get("examples"):
            out[key] = prop["examples"][0]
        elif key in required:
            out[key] = placeholders.get(prop.get("type", "string"), "...")
    return out


def tools_system_prompt(tools: list[dict[str, Any]], system: str | None = None) -> str:
    """A system prompt that describes ``tools`` in the Hermes style, for templates without
    native tool support.

    Args:
        tools: OpenAI function schemas (``Tool.schema()``).
        system: the environment's own system prompt, placed first.

    Returns:
        ``system``, then the schemas in ``<tools></tools>``, the call format and a one-shot
        example call of the first tool.
    """
    if not tools:
        return system or ""
    first = tools[0].get("function", tools[0])
    example = format_tool_call(first.get("name", "tool"), example_arguments(tools[0]))
    lines = "\n".join(json.dumps(t) for t in tools)
    head = f"{system}\n\n" if system else ""
    return (
        f"{head}# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{lines}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n\n'
        f"For example:\n{example}\n\n"
        "Each result comes back in a tool message. When you have the final answer, reply "
        "without a tool call."
    )


def supports_native_tools(tokenizer: Any) -> bool:
    """True when the tokenizer's chat template renders ``tools`` (e.g. Qwen2.5), false for
    templates that ignore them (SmolLM2)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = " ".join(str(v) for v in template.values())
    return isinstance(template, str) and _TEMPLATE_TOOLS.search(template) is not None
