"""A safe arithmetic calculator tool for swirl-lightning, called by the model as ``<math_exp>..</math_exp>``.

The expression is parsed with :mod:`ast` and evaluated by walking the tree; nothing is ever passed
to ``eval``. Arithmetic is exact (:class:`fractions.Fraction`) except where a result is irrational
(``sqrt(2)``, ``2 ** 0.5``) or needs more than MAX_DIGITS digits (``0.999999 ** 1000``): then it is
a float. Bounds on input length, nesting depth, exponent
size and number size make every call finish in milliseconds or fail with :class:`CalculatorError`.

Results are shown as a model reads numbers: integers as integers (``72``, not ``72.0``), other
values with at most :data:`DECIMAL_PLACES` decimal places, rounded half away from zero, trailing
zeros dropped (``1/3`` -> ``0.333333``, ``12/60`` -> ``0.2``). A non-zero value that would round
to 0 is shown with 6 significant digits in scientific notation (``1e-9`` -> ``1e-9``).
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from collections.abc import Callable
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction

from swirl_lightning import hookimpl

__all__ = ["CalculatorError", "calculator", "evaluate", "format_number", "normalise", "register_tools"]

Number = Fraction | float

MAX_INPUT_CHARS = 500
MAX_DEPTH = 100
"""Deepest allowed expression tree; keeps the recursive evaluator far from Python's recursion limit."""
MAX_EXPONENT = 1000
MAX_DIGITS = 1000
"""About the largest number of decimal digits in a numerator or denominator."""
DECIMAL_PLACES = 6

_MAX_PERCENT_SIGNS = 50
_MAX_BITS = math.ceil(MAX_DIGITS * math.log2(10))
_FUNCTION_NAMES = ("sqrt", "abs", "round", "min", "max", "floor", "ceil")
_ALLOWED = (
    "only numbers, + - * / // % ** (or ^), parentheses and the functions "
    + ", ".join(_FUNCTION_NAMES)
    + " are allowed"
)
_TOO_LARGE = f"number too large (more than about {MAX_DIGITS} digits)"
_TOO_LARGE_INEXACT = "number too large for a result that cannot be exact, such as a square root (max about 1e308)"


class CalculatorError(ValueError):
    """The expression cannot be evaluated; the message says why, in words a model can act on."""


def calculator(expression: str) -> str:
    """Evaluate arithmetic such as `(48 / 2) + 48`: + - * / // % ** ( ), 20%, $1,000, sqrt abs round min max floor ceil."""
    return format_number(evaluate(expression))


@hookimpl
def register_tools(register: Callable[..., None]) -> None:
    """Register :func:`calculator` as the tool ``calculator``, called with the tag ``math_exp``."""
    register(calculator, tag="math_exp")


def evaluate(expression: str) -> Number:
    """Evaluate ``expression`` (after :func:`normalise`) exactly where possible; raise CalculatorError."""
    if not isinstance(expression, str):
        raise CalculatorError(f"expected the expression as text, got {type(expression).__name__}")
    if len(expression) > MAX_INPUT_CHARS:
        raise CalculatorError(f"input too long ({len(expression)} chars, max {MAX_INPUT_CHARS})")
    text = normalise(expression)
    if not text:
        raise CalculatorError("empty expression: write an arithmetic expression such as 48 / 2")
    try:
        with warnings.catch_warnings():
            # "1if 1 else 2" and the like warn; the CalculatorError that follows is what the model needs.
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        raise CalculatorError(f"not a valid arithmetic expression ({error.msg}): {_excerpt(text)}") from None
    except (ValueError, RecursionError, MemoryError):
        raise CalculatorError(f"not a valid arithmetic expression: {_excerpt(text)}") from None
    _check_depth(tree)
    try:
        return _Evaluator(text).visit(tree.body)
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError(_TOO_LARGE_INEXACT) from None
    except (RecursionError, MemoryError):
        raise CalculatorError(f"expression too complex (max nesting depth {MAX_DEPTH})") from None


def _excerpt(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- normalisation: the ways people write arithmetic in prose ---

_SYMBOLS = str.maketrans({
    "×": "*", "·": "*", "÷": "/", "−": "-", "–": "-", "^": "**", "$": None, "€": None, "£": None,
    "\u00a0": " ", "\u2009": " ", "\u202f": " ",
})
# Thousands separators: "1,000" (only without spaces, so "max(3, 400)" stays two arguments) and
# "100 000" (two numbers side by side mean nothing else).
_THOUSANDS = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?![\d,])|(?<![\w.])\d{1,3}(?: \d{3})+(?!\d)")
_TIMES_X = re.compile(r"(?<=[\d.)])\s*[xX]\s*(?=[\d.(])")
# "0x10", "0b1", "0o7": Python would read them as hex, binary, octal; "3x4" reads as 3 times 4. Neither reading is
# safe for "0x10" (16, or 0 times 10?), so such a number is an error that says how to write it.
_PREFIXED_NUMBER = re.compile(r"(?<![\w.])0[xXbBoO][0-9a-fA-F_]+")
_IMPLICIT_PRODUCT = re.compile(r"(?<=[\d.)])\s*(?=\()")
# A percent sign after an operand and not before another operand: "20%", "20% * 3", "20% of 3".
_PERCENT = re.compile(r"(?<=[\d.)])\s*%(?:(\s*of\b)|(?!\s*[\w.(]))")


def normalise(expression: str) -> str:
    """Rewrite prose arithmetic into Python syntax.

    Drops ``$ € £`` and a trailing ``= ...``; ``1,000`` and ``1 000`` -> ``1000`` (a comma followed by
    exactly three digits and no space, so ``max(3, 400)`` and ``max(3,4)`` stay argument lists); ``20%`` and
    ``20% of`` -> ``(20 / 100)`` (``%`` between two operands stays modulo); ``3 x 4``, ``3x4``, ``×``,
    ``·`` -> ``*``; ``÷`` -> ``/``; ``^`` -> ``**``; ``2(3)`` and ``(2)(3)`` -> products.
    """
    text = expression.split("=", 1)[0].translate(_SYMBOLS)
    if prefixed := _PREFIXED_NUMBER.search(text):
        raise CalculatorError(f"{prefixed.group()!r}: numbers with a 0x, 0b or 0o prefix are not supported; write "
                              "them in decimal (and 3 x 4 with spaces for a product)")
    text = _THOUSANDS.sub(lambda match: re.sub("[, ]", "", match.group()), text)
    text = _TIMES_X.sub(" * ", text)
    text = _IMPLICIT_PRODUCT.sub(" * ", text)
    if text.count("%") > _MAX_PERCENT_SIGNS:
        # Each percentage rescans the text before it; a cap keeps that cost small.
        raise CalculatorError(f"too many % signs (max {_MAX_PERCENT_SIGNS})")
    while match := _PERCENT.search(text):
        # Wrap the operand so that the percentage binds tighter than anything around it: 50 / 20%.
        start = _operand_start(text, match.start())
        times = " *" if match.group(1) else ""
        text = f"{text[:start]}({text[start:match.start()]} / 100){times}{text[match.end():]}"
    return text.strip()


def _operand_start(text: str, end: int) -> int:
    """Where the number or parenthesised group (with its function name) ending at ``end`` starts."""
    position = end - 1
    if text[position] != ")":
        while position > 0 and (text[position - 1].isdigit() or text[position - 1] == "."):
            position -= 1
        return position
    depth = 0
    for position in range(end - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[position], 0)
        if depth == 0:
            break
    while position > 0 and (text[position - 1].isalpha() or text[position - 1] == "_"):
        position -= 1
    return position


# --- evaluation ---

def _check_depth(tree: ast.AST) -> None:
    """Reject deep trees before the recursive evaluator sees them (iterative, so it cannot overflow)."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise CalculatorError(f"expression nested too deeply (max depth {MAX_DEPTH})")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


_NODE_WORDS = {
    ast.Attribute: "attribute access", ast.Compare: "a comparison", ast.BoolOp: "and/or",
    ast.Lambda: "lambda", ast.Subscript: "indexing", ast.List: "a list", ast.IfExp: "if/else",
    ast.Tuple: "a comma outside a function call (write 1000 or 1,000 for thousands)",
}


class _Evaluator(ast.NodeVisitor):
    def __init__(self, text: str) -> None:
        self.text = text

    def generic_visit(self, node: ast.AST) -> Number:
        what = _NODE_WORDS.get(type(node), type(node).__name__)
        raise CalculatorError(f"{what} is not allowed: {_ALLOWED}")

    def visit_Constant(self, node: ast.Constant) -> Number:
        if type(node.value) is int:
            return _bounded(Fraction(node.value))
        if type(node.value) is float:
            # The source text, not the binary float, so that 0.1 is exactly 1/10.
            return _exact_decimal(ast.get_source_segment(self.text, node) or repr(node.value))
        raise CalculatorError(f"{node.value!r} is not a number: {_ALLOWED}")

    def visit_Name(self, node: ast.Name) -> Number:
        if node.id in _FUNCTION_NAMES:
            raise CalculatorError(f"{node.id} is a function: write {node.id}(...)")
        raise CalculatorError(f"unknown name '{node.id}': {_ALLOWED}")

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Number:
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.USub):
            return -operand
        if isinstance(node.op, ast.UAdd):
            return operand
        raise CalculatorError(f"operator {type(node.op).__name__} is not allowed: {_ALLOWED}")

    def visit_BinOp(self, node: ast.BinOp) -> Number:
        left, right = self.visit(node.left), self.visit(node.right)
        op = node.op
        if isinstance(op, ast.Add):
            return _bounded(left + right)
        if isinstance(op, ast.Sub):
            return _bounded(left - right)
        if isinstance(op, ast.Mult):
            return _bounded(left * right)
        if isinstance(op, ast.Div):
            return _bounded(left / right)
        if isinstance(op, ast.FloorDiv):
            return _bounded(_exact(left // right))
        if isinstance(op, ast.Mod):
            return _bounded(left % right)
        if isinstance(op, ast.Pow):
            return _power(left, right)
        raise CalculatorError(f"operator {type(op).__name__} is not allowed: {_ALLOWED}")

    def visit_Call(self, node: ast.Call) -> Number:
        if not isinstance(node.func, ast.Name):
            return self.generic_visit(node.func)
        name = node.func.id
        if name not in _FUNCTION_NAMES:
            raise CalculatorError(f"unknown function '{name}': {_ALLOWED}")
        if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
            raise CalculatorError(f"{name}() takes plain numbers as arguments")
        args = [self.visit(arg) for arg in node.args]
        if name in ("min", "max"):
            if not args:
                raise CalculatorError(f"{name}() needs at least one number")
            return min(args) if name == "min" else max(args)
        if name == "round":
            if len(args) not in (1, 2):
                raise CalculatorError("round() takes a number and optionally a number of decimal places")
            return _round_function(args[0], _whole(args[1], "round()'s number of places") if len(args) == 2 else 0)
        if len(args) != 1:
            raise CalculatorError(f"{name}() takes exactly one number, got {len(args)}")
        value = args[0]
        if name == "abs":
            return abs(value)
        if name == "floor":
            return Fraction(math.floor(value))
        if name == "ceil":
            return Fraction(math.ceil(value))
        return _sqrt(value)


def _bounded(value: Number) -> Number:
    """Check a result against the size bounds.

    An exact result whose numerator or denominator passes MAX_DIGITS but whose value does not (as in
    ``0.999 ** 1000``) becomes a float: exactness is given up, not the answer.
    """
    if isinstance(value, Fraction):
        if max(value.numerator.bit_length(), value.denominator.bit_length()) <= _MAX_BITS:
            return value
        if abs(value.numerator).bit_length() - value.denominator.bit_length() > _MAX_BITS:
            raise CalculatorError(_TOO_LARGE)
        value = float(value)
    if not math.isfinite(value):
        raise CalculatorError(_TOO_LARGE_INEXACT)
    return value


def _exact(value: int | Number) -> Number:
    """``Fraction // x`` gives an int and ``float // x`` a whole float: make both exact Fractions."""
    if isinstance(value, int) or value.is_integer():
        return Fraction(int(value))
    return value


def _exact_decimal(literal: str) -> Fraction:
    try:
        decimal = Decimal(literal)
    except InvalidOperation:
        raise CalculatorError(f"not a number: {literal}") from None
    if abs(decimal.adjusted()) > MAX_DIGITS:
        raise CalculatorError(f"number too large (more than about {MAX_DIGITS} digits): {literal}")
    return Fraction(decimal)


def _whole(value: Number, what: str) -> int:
    if value != int(value):
        raise CalculatorError(f"{what} must be a whole number, got {format_number(value)}")
    return int(value)


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"exponent too large (max {MAX_EXPONENT})")
    integral = exponent == int(exponent)
    if integral and isinstance(base, Fraction):
        power = int(exponent)
        # Decide from bit lengths before computing, so that no huge power is ever built.
        size_bits = max(base.numerator.bit_length(), base.denominator.bit_length()) - 1
        if size_bits * abs(power) <= _MAX_BITS:
            return _bounded(base**power)
        magnitude_bits = abs(base.numerator).bit_length() - base.denominator.bit_length() - 1
        if magnitude_bits * power > _MAX_BITS:
            raise CalculatorError(_TOO_LARGE)
    if base < 0 and not integral:
        raise CalculatorError("a negative number to a fractional power is not a real number")
    return _bounded(float(base) ** float(exponent))


def _sqrt(value: Number) -> Number:
    if value < 0:
        raise CalculatorError("square root of a negative number")
    if isinstance(value, Fraction):
        top, bottom = math.isqrt(value.numerator), math.isqrt(value.denominator)
        if top * top == value.numerator and bottom * bottom == value.denominator:
            return Fraction(top, bottom)
    return _bounded(math.sqrt(value))


def _round_half_away(value: Number, places: int) -> Fraction:
    """School rounding (2.5 -> 3, -2.5 -> -3), unlike Python's round-half-to-even."""
    exact = Fraction(Decimal(repr(value))) if isinstance(value, float) else value
    scale = Fraction(10) ** places
    magnitude = math.floor(abs(exact) * scale + Fraction(1, 2)) / scale
    return magnitude if exact >= 0 else -magnitude


def _round_function(value: Number, places: int) -> Number:
    if abs(places) > MAX_DIGITS:
        raise CalculatorError(f"round() places must be between -{MAX_DIGITS} and {MAX_DIGITS}")
    return _bounded(_round_half_away(value, places))


# --- output ---

def format_number(value: Number) -> str:
    """Show a result as a model reads numbers: ``72``, ``0.2``, ``-4``, ``0.333333``, never ``72.0``."""
    if isinstance(value, float):
        if abs(value) >= 1e15:
            return f"{value:.15g}"  # beyond float precision an integer string would show noise digits
        value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    rounded = _round_half_away(value, DECIMAL_PLACES)
    if rounded == 0:
        with localcontext() as context:
            context.prec = 6
            return f"{Decimal(value.numerator) / Decimal(value.denominator):g}"
    units, fraction = divmod(abs(rounded.numerator) * 10**DECIMAL_PLACES // rounded.denominator, 10**DECIMAL_PLACES)
    sign = "-" if rounded < 0 else ""
    if fraction == 0:
        return f"{sign}{units}"
    return f"{sign}{units}.{fraction:0{DECIMAL_PLACES}d}".rstrip("0")
