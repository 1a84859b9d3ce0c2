"""Tests a model may be shown: the worked examples in a task's own statement, as asserts.

HumanEval hides its grading tests (``check``) from the model; what the model does see
is the function's docstring, which usually gives examples in one of a few shapes:

* doctest: ``>>> f(1, 2)`` followed by the expected value on the next line;
* one line: ``f(1, 2) == 3``, ``f(1, 2) ==> 3``, ``f(1, 2) => 3``, ``f(1, 2) -> 3``,
  ``f(1, 2) ➞ 3``, ``f(1, 2) # => 3``, ``f(1, 2) should return 3``, ``f(1, 2) returns 3``;
  a trailing explanation in parentheses or an "= 3" at the end of a worked sum is cut.

Each example becomes ``assert f(1, 2) == 3`` (``abs(f(x) - y) < 1e-6`` when the
expected value is a float, since docstrings round). Only examples whose call and value
both parse as Python expressions and that call the entry point are kept; prose
examples ("For N = 1000 the output should be ...") give none. A task whose statement
yields no example still shows the function's name and signature, so its visible test is
``assert callable(<entry point>)``: selection then learns only that the code defines
the function, never anything from the hidden tests.
"""

from __future__ import annotations

import ast
import builtins
import doctest
import re

from itas.execution.programs import parse

FLOAT_TOLERANCE = "1e-6"
ARROW_RE = re.compile(
    r"\s*(?:#\s*)?(==>|=>|->|➞|→|==|should\s+return|returns?|=)\s*", re.IGNORECASE)
TRAILING_NOTE_RE = re.compile(r"\s*\(.*\)\s*$")
LOWERCASE_BOOLEANS = {"true": True, "false": False}
BUILTIN_NAMES = frozenset(dir(builtins))


def _expression(text: str) -> bool:
    try:
        ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return False
    return True


def _call_end(text: str, open_paren: int) -> int | None:
    """Index just past the bracket that closes the one at ``open_paren``."""
    depth = 0
    quote: str | None = None
    for i in range(open_paren, len(text)):
        char = text[i]
        if quote:
            if char == quote and text[i - 1] != "\\":
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def function_docstring(program: str, name: str) -> str:
    """The cleaned docstring of function ``name`` in ``program`` ("" when none)."""
    try:
        tree = parse(program)
    except (SyntaxError, ValueError):
        return ""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return ast.get_docstring(node) or ""
    return ""


Example = tuple[int, str, str]  # (line in the docstring, call, expected value)


def _doctest_pairs(doc: str, entry_point: str) -> list[Example]:
    try:
        examples = doctest.DocTestParser().get_examples(doc)
    except ValueError:  # inconsistent indentation: the line rules below still apply
        examples = []
    pairs = []
    for example in examples:
        call, want = example.source.strip(), example.want.strip()
        if want and entry_point in call and _expression(call) and _expression(want):
            pairs.append((example.lineno, call, want))
    return pairs


def _line_pairs(doc: str, entry_point: str) -> list[Example]:
    lines = doc.splitlines()
    pairs: list[Example] = []
    head = re.compile(rf"(?:>>>\s*)?{re.escape(entry_point)}\s*\(")
    for index, raw in enumerate(lines):
        line = raw.strip()
        if line.startswith(">>>") and index + 1 < len(lines):
            call, want = line[3:].strip(), lines[index + 1].strip()
            if (entry_point in call and want and not want.startswith(">>>")
                    and _expression(call) and _expression(want)):
                pairs.append((index, call, want))
                continue
        match = head.match(line)
        if match is None:
            continue
        end = _call_end(line, match.end() - 1)
        if end is None:
            continue
        call = line[:end].removeprefix(">>>").strip()
        arrow = ARROW_RE.match(line[end:])
        if arrow is None:
            continue
        want = line[end + arrow.end():].strip().rstrip(".,;")
        if not _expression(want):
            want = TRAILING_NOTE_RE.sub("", want)
        if not _expression(want) and "=" in want:
            want = want.rsplit("=", 1)[1].strip()
        if _expression(call) and _expression(want):
            pairs.append((index, call, want))
    return pairs


class _Booleans(ast.NodeTransformer):
    """``true``/``false`` as some docstrings write them, read as Python's."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in LOWERCASE_BOOLEANS:
            return ast.Constant(LOWERCASE_BOOLEANS[node.id])
        return node


def _closed(expression: ast.expr, entry_point: str) -> bool:
    """True when every name it uses is the entry point or a builtin: an example over free
    variables (``f(n) == f(n - 1) + ...``) or unquoted strings is prose, not a test."""
    names = {n.id for n in ast.walk(expression) if isinstance(n, ast.Name)}
    return names <= {entry_point, *BUILTIN_NAMES}


def _assertion(call: str, want: str, entry_point: str) -> str | None:
    """The assert for one example (comments dropped by re-printing), or None."""
    called = _Booleans().visit(ast.parse(call, mode="eval")).body
    value = _Booleans().visit(ast.parse(want, mode="eval")).body
    if not (_closed(called, entry_point) and _closed(value, entry_point)):
        return None
    call, want = ast.unparse(called), ast.unparse(value)
    number = value.operand if isinstance(value, ast.UnaryOp) else value
    if isinstance(number, ast.Constant) and isinstance(number.value, float):
        return f"assert abs({call} - {want}) < {FLOAT_TOLERANCE}"
    return f"assert {call} == {want}"


def docstring_tests(program: str, entry_point: str) -> list[str]:
    """The examples of ``entry_point``'s docstring in ``program`` as asserts, in order, no
    duplicates; ``[assert callable(entry_point)]`` when there is none (see the module doc)."""
    doc = function_docstring(program, entry_point)
    found: list[str] = []
    pairs = sorted(_doctest_pairs(doc, entry_point) + _line_pairs(doc, entry_point),
                   key=lambda pair: pair[0])
    for _, call, want in pairs:
        test = _assertion(call, want, entry_point)
        if test is not None and test not in found:
            found.append(test)
    return found or [signature_test(entry_point)]


def signature_test(entry_point: str) -> str:
    """The one test any task statement shows: the function it names exists."""
    return f"assert callable({entry_point})"
