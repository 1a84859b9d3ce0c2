"""Plausible wrong programs for simulated models: the canonical solution with a typical bug.

The first three mutants change every value the target function returns, so
they fail any test that checks a returned value: a stub that returns None (the
model gave up), results off by one (booleans negated), results doubled
(booleans always True). Only the third can pass, when every tested result is
0, empty or True (2 of 974 MBPP tasks, 0 of 164 HumanEval tasks). When one of
them does not apply (no return value) slips inside the body follow, each
applied to every matching spot: integer constants off by one, comparisons
flipped (< for >=, == for !=, in for not in), + and - swapped, and/or
swapped; those can leave the behaviour unchanged. The order is fixed, so every
simulated model shares the same mistakes.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

from itas.execution.programs import parse

MAX_MUTANTS = 3
FLIPPED_COMPARE: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.Gt: ast.LtE,
    ast.LtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
BOOL_CALLS = frozenset(
    {"all", "any", "bool", "isinstance", "callable", "hasattr", "startswith", "endswith"}
)
SWAPPED_ARITH: dict[type[ast.operator], type[ast.operator]] = {ast.Add: ast.Sub, ast.Sub: ast.Add}


def _target(tree: ast.Module, name: str | None) -> ast.AST:
    """The function to mutate: ``name`` if defined anywhere, else the whole module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return node
    return tree


def _docstring_ids(root: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(root):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _off_by_one(root: ast.AST) -> bool:
    skip = _docstring_ids(root)
    changed = False
    for node in ast.walk(root):
        if isinstance(node, ast.Constant) and type(node.value) is int and id(node) not in skip:
            node.value += 1
            changed = True
    return changed


def _flip_comparisons(root: ast.AST) -> bool:
    changed = False
    for node in ast.walk(root):
        if isinstance(node, ast.Compare):
            node.ops = [FLIPPED_COMPARE.get(type(op), type(op))() for op in node.ops]
            changed = True
    return changed


def _swap_arithmetic(root: ast.AST) -> bool:
    changed = False
    for node in ast.walk(root):
        if isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in SWAPPED_ARITH:
            node.op = SWAPPED_ARITH[type(node.op)]()
            changed = True
    return changed


def _swap_bool_ops(root: ast.AST) -> bool:
    changed = False
    for node in ast.walk(root):
        if isinstance(node, ast.BoolOp):
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            changed = True
    return changed


def _stub(root: ast.AST) -> bool:
    if not isinstance(root, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    doc = root.body[:1] if id(getattr(root.body[0], "value", None)) in _docstring_ids(root) else []
    root.body = [*doc, ast.Return(value=ast.Constant(value=None))]
    return True


def _is_none(value: ast.expr | None) -> bool:
    return value is None or (isinstance(value, ast.Constant) and value.value is None)


def _own_returns(function: ast.AST) -> list[ast.Return]:
    """Return statements of ``function`` itself, not of functions or classes nested in it."""
    found: list[ast.Return] = []
    stack = list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(node, ast.Return) and not _is_none(node.value):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _returns_bool(function: ast.FunctionDef | ast.AsyncFunctionDef, value: ast.expr) -> bool:
    if isinstance(function.returns, ast.Name) and function.returns.id == "bool":
        return True
    if isinstance(value, ast.Compare | ast.BoolOp) or (
        isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.Not)
    ):
        return True
    if isinstance(value, ast.Constant) and isinstance(value.value, bool):
        return True
    if isinstance(value, ast.Call):
        name = (
            value.func.id if isinstance(value.func, ast.Name) else getattr(value.func, "attr", "")
        )
        return name in BOOL_CALLS or name.startswith("is")
    return False


def _mutate_results(root: ast.AST, arithmetic: ast.operator, amount: int) -> bool:
    """Every result of the function changed: a boolean one negated (first variant) or
    always True (second), any other ``result <op> amount`` (a wrong value, or an error
    for non-numbers)."""
    if not isinstance(root, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    changed = False
    for node in _own_returns(root):
        value = node.value
        if value is None:
            continue
        if not _returns_bool(root, value):
            node.value = ast.BinOp(left=value, op=arithmetic, right=ast.Constant(amount))
        elif amount == 1 and isinstance(value, ast.Constant):
            node.value = ast.Constant(not value.value)
        elif amount == 1:
            node.value = ast.UnaryOp(op=ast.Not(), operand=value)
        else:
            node.value = ast.Constant(True)
        changed = True
    return changed


def _result_off_by_one(root: ast.AST) -> bool:
    return _mutate_results(root, ast.Add(), 1)


def _result_doubled(root: ast.AST) -> bool:
    return _mutate_results(root, ast.Mult(), 2)


MUTATIONS: tuple[Callable[[ast.AST], bool], ...] = (
    _stub,
    _result_off_by_one,
    _result_doubled,
    _off_by_one,
    _flip_comparisons,
    _swap_arithmetic,
    _swap_bool_ops,
)


def mutants(source: str, function: str | None, limit: int = MAX_MUTANTS) -> list[str]:
    """Up to ``limit`` distinct buggy versions of ``source`` (mutating ``function``)."""
    tree = parse(source)
    original = ast.unparse(tree)
    found: list[str] = []
    for mutation in MUTATIONS:
        fresh = parse(source)  # cheaper than deepcopy
        if not mutation(_target(fresh, function)):
            continue
        text = ast.unparse(ast.fix_missing_locations(fresh))
        if text != original and text not in found:
            found.append(text)
        if len(found) >= limit:
            break
    return found
