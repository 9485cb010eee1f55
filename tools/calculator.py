"""The ``calculator`` tool: exact arithmetic by walking the expression tree (no ``eval``).

Numbers are exact fractions while only ``+ - * / // %`` and integer powers are involved
(``(37 * 12 - 158) / 4`` is exactly ``71.5``); ``sqrt`` and fractional powers switch to floats.
Anything else in the tree (names, attributes, calls other than the listed functions,
comparisons, strings) is refused with a message that says what is allowed. Sizes are bounded so
that an expression such as ``9 ** 9 ** 9`` is refused instead of freezing the process.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from fractions import Fraction

from agentrl.tool import TOOLS, ToolError, tool

__all__ = ["calculator", "evaluate", "format_number"]

Number = Fraction | float
MAX_EXPRESSION_CHARS = 1000
MAX_DIGITS = 1000  # of any intermediate integer numerator or denominator
MAX_EXPONENT = 10_000

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "abs": abs, "min": min, "max": max,
    "round": lambda x, n=0: Fraction(round(x, int(n))) if isinstance(x, Fraction) else round(x, int(n)),
    "sqrt": lambda x: _sqrt(x), "floor": lambda x: Fraction(math.floor(x)),
    "ceil": lambda x: Fraction(math.ceil(x)),
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_ALLOWED = "numbers, + - * / // % **, parentheses, pi, e and " + ", ".join(sorted(_FUNCTIONS))


def _sqrt(x: Number) -> Number:
    if x < 0:
        raise ToolError(f"sqrt of a negative number ({format_number(x)})")
    if isinstance(x, Fraction):
        n, d = math.isqrt(x.numerator), math.isqrt(x.denominator)
        if n * n == x.numerator and d * d == x.denominator:
            return Fraction(n, d)
    return math.sqrt(x)


def _check_size(x: Number) -> Number:
    if isinstance(x, Fraction):
        if max(abs(x.numerator), x.denominator).bit_length() > MAX_DIGITS * 3.33:
            raise ToolError(f"result too large (more than {MAX_DIGITS} digits)")
    elif not math.isfinite(x):
        raise ToolError("result is not a finite number")
    return x


def _power(base: Number, exp: Number) -> Number:
    if isinstance(exp, Fraction) and exp.denominator == 1:
        if abs(exp) > MAX_EXPONENT:
            raise ToolError(f"exponent {format_number(exp)} is too large (limit {MAX_EXPONENT})")
        if isinstance(base, Fraction):
            size = max(abs(base.numerator), base.denominator).bit_length() * abs(int(exp))
            if size > MAX_DIGITS * 3.33:
                raise ToolError(f"result too large (more than {MAX_DIGITS} digits)")
            if base == 0 and exp < 0:
                raise ToolError("division by zero (0 to a negative power)")
        return base ** int(exp)
    if base < 0:
        raise ToolError("a negative number to a fractional power is not a real number")
    return float(base) ** float(exp)


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if isinstance(node.value, float) and not math.isfinite(node.value):
            raise ToolError(f"number {node.value} is too large")
        return _check_size(Fraction(repr(node.value)))  # 0.1 means exactly 1/10
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _check_size(_power(left, right))
        if isinstance(node.op, ast.BitXor):
            raise ToolError("'^' is not a power here: write ** (for example 2 ** 10)")
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ToolError(f"operator {type(node.op).__name__} is not supported; use {_ALLOWED}")
        return _check_size(op(left, right))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords or not node.args:
            raise ToolError(f"{node.func.id}() takes positional numbers only")
        try:
            return _check_size(_FUNCTIONS[node.func.id](*[_eval(a) for a in node.args]))
        except TypeError as e:
            raise ToolError(f"{node.func.id}(): {e}") from None
    if isinstance(node, ast.Tuple):
        raise ToolError("commas are not allowed (write 1000, not 1,000)")
    what = ast.unparse(node) if isinstance(node, ast.expr) else type(node).__name__
    raise ToolError(f"{what!r} is not allowed; use {_ALLOWED}")


def evaluate(expression: str) -> Number:
    """The exact value of an arithmetic expression (a ``Fraction``, or a ``float``).

    Raises:
        ToolError: with what is wrong: a syntax error, something that is not arithmetic,
            division by zero, a result too large.
    """
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("−", "-")
    if not text:
        raise ToolError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression too long ({len(text)} characters; limit {MAX_EXPRESSION_CHARS})")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ToolError(f"could not parse {text!r}: {e.msg} (column {e.offset})") from None
    except (RecursionError, MemoryError, ValueError):
        raise ToolError("could not parse the expression (nested too deeply?)") from None
    try:
        return _eval(tree)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("result too large") from None
    except RecursionError:
        raise ToolError("expression nested too deeply") from None


def format_number(x: Number) -> str:
    """An integer as is; anything else as a decimal with up to 12 significant digits."""
    if isinstance(x, Fraction) and x.denominator == 1:
        return str(x.numerator)
    value = float(x)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".12g")


@tool(name="calculator", timeout_s=5.0, example={"expression": "(12 + 7) * 3"})
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly and return the result.

    Supports + - * / // % ** and parentheses, decimal numbers, the constants pi and e, and the
    functions abs, round, min, max, sqrt, floor and ceil. One expression per call.

    Args:
        expression: The arithmetic expression, for example "(37 * 12 - 158) / 4".
    """
    return format_number(evaluate(expression))


TOOLS.register("calculator", calculator)
