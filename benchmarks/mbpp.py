"""MBPP: short Python tasks, each checked by three asserts.

Record: ``{"task_id", "text", "code", "test_list", "test_setup_code",
"challenge_test_list"}``. The reference is ``test_list``; the prompt shows the
asserts (as the MBPP paper does), since they fix the function's name and
signature. ``metadata["split"]`` is the paper's split by task id (prompt 1-10,
test 11-510, validation 511-600, train 601-974); the loader keeps all records.

Visible tests: the same asserts, since the standard prompt shows them; selection with
them sees nothing the model was not shown (``challenge_test_list`` stays hidden).

Answer key: the reference code in a ``python`` block; wrong answers are its
mutants (see ``mutate``), targeting the function the first assert calls.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

from itas.benchmarks.datafiles import field, read_jsonl
from itas.benchmarks.humaneval import fenced
from itas.benchmarks.mutate import mutants, parse
from itas.benchmarks.question import Question, make_key, user
from itas.errors import ConfigError

NAME = "mbpp"
FILES = ("mbpp/mbpp.jsonl",)
URLS = ("https://raw.githubusercontent.com/google-research/google-research/master/mbpp/mbpp.jsonl",)
PROMPT = (
    "You are an expert Python programmer, and here is your task: {text} "
    "Your code should pass these tests:\n\n{tests}\n\n"
    "Reply with the code in one ```python code block."
)
SPLITS = ((10, "prompt"), (510, "test"), (600, "validation"))


def mbpp_split(task_id: int) -> str:
    for last, name in SPLITS:
        if task_id <= last:
            return name
    return "train"


def called_function(test: str, code: str) -> str | None:
    """The function the assert tests: the first call to a name the code defines."""
    defined = {
        node.name
        for node in ast.walk(parse(code))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    calls = [
        node.func.id
        for node in ast.walk(parse(test))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    return next((c for c in calls if c in defined), calls[0] if calls else None)


def load(paths: Sequence[Path]) -> list[Question]:
    path = paths[0]
    questions = []
    for line, record in read_jsonl(path):
        where = f"{path}:{line}"
        task_id = field(record, "task_id", where, int)
        text = field(record, "text", where)
        code = field(record, "code", where).replace("\r\n", "\n")
        tests = [str(t) for t in field(record, "test_list", where, list)]
        if not tests:
            raise ConfigError(f"{where}: field 'test_list' is empty")
        qid = str(task_id)
        try:
            entry_point = called_function(tests[0], code)
            wrong = [fenced(m) for m in mutants(code, entry_point)]
        except SyntaxError as e:
            raise ConfigError(f"{where}: code or test_list is not valid Python: {e}") from e
        questions.append(
            Question(
                id=qid,
                benchmark=NAME,
                messages=user(PROMPT.format(text=text, tests="\n".join(tests))),
                reference=tests,
                metadata={
                    "entry_point": entry_point,
                    "test_setup_code": record.get("test_setup_code") or "",
                    "challenge_test_list": record.get("challenge_test_list") or [],
                    "split": mbpp_split(task_id),
                    "code": code,
                },
                answer_key=make_key(NAME, qid, fenced(code), wrong, tests=tests),
                visible_tests=tuple(tests),
            )
        )
    return questions
