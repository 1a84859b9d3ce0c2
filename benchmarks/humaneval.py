"""HumanEval: complete a Python function from its signature and docstring.

Record: ``{"task_id", "prompt", "canonical_solution", "test", "entry_point"}``;
``test`` defines ``check(candidate)``. The reference is that test code; the
prompt, entry point and canonical solution are in ``metadata``.

Answer key: the prompt plus canonical solution in a ``python`` block. Wrong
answers are mutants of it (see ``mutate``). The key's ``tests`` are the
top-level asserts of ``check`` with ``candidate`` renamed to the entry point,
for simulated unit-test writers.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

from itas.benchmarks.datafiles import field, read_jsonl
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
            tests = check_asserts(test, entry_point)
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
                answer_key=make_key(NAME, qid, fenced(program), wrong, tests=tests),
            )
        )
    return questions
