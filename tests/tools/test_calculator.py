from __future__ import annotations

from fractions import Fraction

import pytest
from agentrl.tools.calculator import evaluate, format_number

from agentrl.tool import ToolError, call_tool


@pytest.mark.parametrize(("expression", "expected"), [
    ("2 + 3 * 4", "14"), ("(37 * 12 - 158) / 4", "71.5"), ("7 // 2", "3"), ("-7 % 3", "2"),
    ("2 ** 10", "1024"), ("2 ** -2", "0.25"), ("0.1 + 0.2", "0.3"), ("1 / 3", "0.333333333333"),
    ("sqrt(16)", "4"), ("sqrt(2)", "1.41421356237"), ("abs(-5) + max(1, 7, 3) - min(4, 2)", "10"),
    ("round(2.675, 2)", "2.68"), ("floor(7 / 2) + ceil(7 / 2)", "7"), ("pi * 2", "6.28318530718"),
    ("3 × 4 ÷ 2 − 1", "5"), ("  1e3 ", "1000"), ("4 ** 0.5", "2"), ("10 ** 20", "100000000000000000000"),
])
def test_values(expression, expected):
    assert call_tool("calculator", {"expression": expression}).output == expected


def test_exact_fractions():
    assert evaluate("1/3 + 1/6") == Fraction(1, 2)
    assert format_number(Fraction(7, 1)) == "7" and format_number(2.5) == "2.5"


@pytest.mark.parametrize(("expression", "message"), [
    ("1 / 0", "division by zero"), ("5 % 0", "division by zero"), ("0 ** -1", "division by zero"),
    ("2 ^ 3", "'^' is not a power here: write **"), ("1,000 + 1", "commas are not allowed"),
    ("9 ** 9 ** 9", "exponent 387420489 is too large"), ("10 ** 5000", "result too large"),
    ("(-8) ** 0.5", "not a real number"), ("sqrt(-1)", "sqrt of a negative number (-1)"),
    ("__import__('os').system('id')", "is not allowed; use numbers"),
    ("(1).__class__", "is not allowed"), ("open('x')", "is not allowed"), ("x + 1", "'x' is not allowed"),
    ("1 < 2", "is not allowed"), ("'a' * 3", "is not allowed"), ("True + 1", "is not allowed"),
    ("lambda: 1", "is not allowed"), ("[1, 2]", "is not allowed"), ("2 +", "could not parse '2 +'"),
    ("", "empty expression"), ("1" * 1001, "expression too long (1001 characters; limit 1000)"),
    ("(" * 300 + "1" + ")" * 300, "could not parse"), ("1e999", "is too large"), ("1 << 3", "not supported"),
    ("round(1.5, x=1)", "positional numbers only"), ("max()", "positional numbers only"),
])
def test_refusals_say_what_is_wrong(expression, message):
    with pytest.raises(ToolError) as info:
        evaluate(expression)
    assert message in str(info.value)
    assert message in call_tool("calculator", {"expression": expression}).error
