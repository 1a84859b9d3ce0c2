"""Which tests selection inside an architecture may see, and how outputs label it.

An architecture that says ``tests: benchmark`` receives unit tests with each query and
selects among its candidates with them (code_tester, unit_test_evaluator). If those were
the grading tests, the pick would be graded by the very tests that chose it: an oracle
pass@k reported as pass@1. So by default a query carries the question's *visible* tests
(what the task statement shows, ``Question.visible_tests``); the grading tests reach
selection only in ``oracle`` mode, which exists for pass@k studies and is named in every
record, summary and table. The label of a run:

- ``visible``: selection saw the tests a model may be shown;
- ``oracle``: selection saw the grading tests (an upper bound, not a pass@1);
- ``none``: the architecture takes no benchmark tests (it may write its own).
"""

from __future__ import annotations

from typing import Literal

from itas.benchmarks.humaneval import check_asserts
from itas.benchmarks.question import Question

SelectionTests = Literal["visible", "oracle", "none"]
VISIBLE: SelectionTests = "visible"
ORACLE: SelectionTests = "oracle"
NONE: SelectionTests = "none"


def selection_label(uses_benchmark_tests: bool, oracle: bool) -> SelectionTests:
    if not uses_benchmark_tests:
        return NONE
    return ORACLE if oracle else VISIBLE


def grading_tests(question: Question) -> list[str] | None:
    """The tests that grade ``question`` as a list of statements: its reference asserts
    (MBPP, code benchmarks of one's own), HumanEval's ``check`` unrolled into asserts, or
    that whole ``check`` called on the entry point as one test when it has no top-level
    assert to unroll; None when the question has no tests."""
    ref = question.reference
    if isinstance(ref, list) and ref and all(isinstance(t, str) for t in ref):
        return list(ref)
    entry_point = question.metadata.get("entry_point")
    if isinstance(ref, str) and entry_point and "def check" in ref:
        unrolled = check_asserts(ref, str(entry_point))
        return unrolled or [f"{ref.rstrip()}\n\n\ncheck({entry_point})\n"]
    return None


def selection_tests_for(question: Question, mode: SelectionTests) -> list[str] | None:
    """What a query carries as ``tests`` under ``mode`` (None: nothing to send)."""
    if mode == NONE:
        return None
    if mode == ORACLE:
        return grading_tests(question)
    return list(question.visible_tests) or None
