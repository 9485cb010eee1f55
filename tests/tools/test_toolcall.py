from __future__ import annotations

import json
from typing import ClassVar

import pytest

from agentrl.tool import get_tool
from agentrl.toolcall import (
    example_arguments,
    format_tool_call,
    parse_tool_calls,
    supports_native_tools,
    tools_system_prompt,
)
from agentrl.types import ToolCall


def test_hermes_blocks_several_calls_and_whitespace():
    text = ('Let me compute.\n<tool_call>\n  {"name": "calculator", "arguments": {"expression": "6 * 7"}}  \n</tool_call>'
            '\n\n<tool_call>{"name":"search","arguments":{"query":"len"}, "id": "c2"}</tool_call> done')
    p = parse_tool_calls(text)
    assert p.style == "tagged" and p.errors == [] and p.attempted
    assert p.calls == [ToolCall(name="calculator", arguments={"expression": "6 * 7"}),
                       ToolCall(name="search", arguments={"query": "len"}, id="c2")]
    assert p.content == "Let me compute.\n\n\n done"


def test_unclosed_block_at_the_end_and_fenced_json_inside_tags():
    p = parse_tool_calls('<tool_call>{"name": "a", "arguments": {}}')  # generation stopped at the tag
    assert p.calls == [ToolCall(name="a")] and p.errors == []
    p = parse_tool_calls('<tool_call>\n```json\n{"name": "a", "arguments": {"x": 1}}\n```\n</tool_call>')
    assert p.calls == [ToolCall(name="a", arguments={"x": 1})]
    p = parse_tool_calls('<tool_call>{"name": "a", "arguments": {}}<tool_call>{"name": "b", "arguments": {}}</tool_call>')
    assert [c.name for c in p.calls] == ["a", "b"]


def test_strict_json_errors_say_what_and_where():
    p = parse_tool_calls("<tool_call>{'name': 'calculator', 'arguments': {}}</tool_call>"
                         '<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>')
    assert [c.name for c in p.calls] == ["calculator"]
    assert p.errors == ["tool call 1: invalid JSON (Expecting property name enclosed in double quotes at line 1 "
                        "column 2) in \"{'name': 'calculator', 'arguments': {}}\""]
    assert parse_tool_calls('<tool_call>["calculator"]</tool_call>').errors == [
        'tool call 1: expected a JSON object {"name": <tool name>, "arguments": {<argument>: <value>, ...}}, got list']
    assert parse_tool_calls('<tool_call>{"arguments": {}}</tool_call>').errors[0].startswith(
        'tool call 1: missing "name" (a string)')
    assert parse_tool_calls('<tool_call>{"name": "a", "arguments": [1]}</tool_call>').errors == [
        'tool call 1 (a): "arguments" must be a JSON object, got list']
    assert parse_tool_calls('<tool_call>{"name": "a", "arguments": "{bad"}</tool_call>').errors[0].startswith(
        'tool call 1 (a): "arguments" is a string that is not valid JSON')
    deep = "<tool_call>" + "[" * 100000 + "</tool_call>"
    assert parse_tool_calls(deep).errors[0].startswith("tool call 1:")


def test_openai_string_arguments_and_parameters_alias():
    p = parse_tool_calls('<tool_call>{"name": "a", "arguments": "{\\"x\\": 2}"}</tool_call>')
    assert p.calls == [ToolCall(name="a", arguments={"x": 2})]
    p = parse_tool_calls('<tool_call>{"name": "a", "parameters": {"x": 3}}</tool_call>')
    assert p.calls == [ToolCall(name="a", arguments={"x": 3})]


def test_bare_json_calls_are_found_and_marked():
    p = parse_tool_calls('I will use {"name": "calculator", "arguments": {"expression": "2+2"}} now.')
    assert p.style == "json" and p.calls == [ToolCall(name="calculator", arguments={"expression": "2+2"})]
    assert p.content == "I will use  now."
    p = parse_tool_calls('[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"k": 1}}]')
    assert p.style == "json" and [c.name for c in p.calls] == ["a", "b"]


@pytest.mark.parametrize("text", [
    "Answer: 42", "", '{"answer": 42}', "The set {1, 2} and [3]", '{"name": "x"}',
    "{" * 5000, "[" * 100000, "def f(x): return {'name': x}",
])
def test_text_without_calls_is_not_a_call(text):
    p = parse_tool_calls(text)
    assert not p.attempted and p.style == "none" and p.calls == [] and p.errors == []


def test_parse_rejects_non_strings():
    with pytest.raises(TypeError, match="text must be a str, got int"):
        parse_tool_calls(3)


def test_system_prompt_has_schemas_format_and_example():
    schema = get_tool("calculator").schema()
    prompt = tools_system_prompt([schema], "You solve math problems.")
    assert prompt.startswith("You solve math problems.\n\n# Tools\n")
    assert f"<tools>\n{json.dumps(schema)}\n</tools>" in prompt
    example = format_tool_call("calculator", {"expression": "(12 + 7) * 3"})
    assert f"For example:\n{example}" in prompt
    assert parse_tool_calls(example).calls == [ToolCall(name="calculator", arguments={"expression": "(12 + 7) * 3"})]
    assert tools_system_prompt([], "sys") == "sys" and tools_system_prompt([schema]).startswith("# Tools")


def test_example_arguments_fall_back_to_placeholders():
    schema = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "required": ["s", "n", "flag"],
        "properties": {"s": {"type": "string"}, "n": {"type": "integer"}, "flag": {"type": "boolean"},
                       "opt": {"type": "number"}}}}}
    assert example_arguments(schema) == {"s": "...", "n": 1, "flag": True}


def test_native_tool_support_detection(tiny):
    _, tok = tiny
    assert supports_native_tools(tok) is False  # SmolLM2's template ignores tools

    class QwenLike:
        chat_template = "{%- if tools %}<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>{% endif %}"

    class Multi:
        chat_template: ClassVar[dict[str, str]] = {"default": "{{ messages }}", "tool_use": "{{ tools }}"}

    assert supports_native_tools(QwenLike()) and supports_native_tools(Multi())
    assert not supports_native_tools(object())
