"""HumanEval: complete a Python function from its signature and docstring.

Record: ``{"task_id", "prompt", "canonical_solution", "test", "entry_point"}``;
``test`` defines ``check(candidate)``. The reference is that test code; the
prompt, entry point and canonical solution are in ``metadata``.

Visible tests (what a model may be shown): the examples of the docstring as asserts
(see ``examples``), minus the few the canonical solution contradicts (``ERRATA``: the
statement is wrong there, and a test that fails the reference would steer selection
away from correct code). The hidden ``check`` only grades.

Answer key: the prompt plus canonical solution in a ``python`` block. Wrong
answers are mutants of it (see ``mutate``). The key's ``tests`` are the visible tests:
a simulated unit-test writer writes what a model could derive from the prompt, never
the hidden ones.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

from itas.benchmarks.datafiles import field, read_jsonl
from itas.benchmarks.examples import docstring_tests, signature_test
from itas.benchmarks.mutate import mutants, parse
from itas.benchmarks.question import Question, make_key, user
from itas.errors import ConfigError

NAME = "humaneval"
FILES = ("humaneval/HumanEval.jsonl.gz",)
URLS = ("https://github.com/openai/human-eval/raw/master/data/HumanEval.jsonl.gz",)
PROMPT = (
    "Complete the following Python function. Reply with the complete function "
    "(signature included) in one ```python code block.\n\n```python\n{prompt}```"
)

#: Docstring examples that disagree with the task's canonical solution (and with its hidden
#: tests): HumanEval's statement is wrong there. ``tests/test_benchmarks_visible.py`` runs
#: every visible test against the canonical solutions and checks each entry still fails.
ERRATA = frozenset({
    ("HumanEval/47", "assert abs(median([-10, 4, 6, 1000, 10, 20]) - 15.0) < 1e-6"),
    ("HumanEval/116", "assert sort_array([1, 5, 2, 3, 4]) == [1, 2, 3, 4, 5]"),
    ("HumanEval/116", "assert sort_array([-2, -3, -4, -5, -6]) == [-6, -5, -4, -3, -2]"),
    ("HumanEval/130", "assert tri(1) == 3"),
    ("HumanEval/130", "assert tri(2) == 2"),
    ("HumanEval/130", "assert tri(4) == 3"),
    ("HumanEval/130", "assert tri(3) == tri(2) + tri(1) + tri(4)"),
    ("HumanEval/148", "assert bf('Earth', 'Mercury') == 'Venus'"),
})


def visible_tests(task_id: str, program: str, entry_point: str) -> list[str]:
    """The docstring's examples as asserts, without the errata (see the module doc)."""
    tests = [t for t in docstring_tests(program, entry_point) if (task_id, t) not in ERRATA]
    return tests or [signature_test(entry_point)]


def fenced(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


class _Rename(ast.NodeTransformer):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def visit_Name(self, node: ast.Name) -> ast.Name:
        return ast.Name(self.new, node.ctx) if node.id == self.old else node


def check_asserts(test: str, entry_point: str) -> list[str]:
    """The asserts directly in ``check``'s body, calling the entry point by name."""
    tree = parse(test)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            param = node.args.args[0].arg if node.args.args else "candidate"
            rename = _Rename(param, entry_point)
            return [
                ast.unparse(rename.visit(stmt))
                for stmt in node.body
                if isinstance(stmt, ast.Assert)
            ]
    return []


def load(paths: Sequence[Path]) -> list[Question]:
    path = paths[0]
    questions = []
    for line, record in read_jsonl(path):
        where = f"{path}:{line}"
        qid = field(record, "task_id", where)
        prompt = field(record, "prompt", where)
        solution = field(record, "canonical_solution", where)
        test = field(record, "test", where)
        entry_point = field(record, "entry_point", where)
        program = prompt + solution
        try:
            wrong = [fenced(m) for m in mutants(program, entry_point)]
            check_asserts(test, entry_point)  # the grading code must parse too
            shown = visible_tests(qid, program, entry_point)
        except SyntaxError as e:
            raise ConfigError(f"{where}: prompt, solution or test is not valid Python: {e}") from e
        questions.append(
            Question(
                id=qid,
                benchmark=NAME,
                messages=user(PROMPT.format(prompt=prompt)),
                reference=test,
                metadata={
                    "prompt": prompt,
                    "entry_point": entry_point,
                    "canonical_solution": solution,
                },
                answer_key=make_key(NAME, qid, fenced(program), wrong, tests=shown),
                visible_tests=tuple(shown),
            )
        )
    return questions
