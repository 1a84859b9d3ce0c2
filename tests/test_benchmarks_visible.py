"""Visible tests vs grading tests: what selection may see comes from the task statement only.

The promises: HumanEval's visible tests are its docstring examples (never its hidden
``check``), each one right about the canonical solution (the errata excepted, and each
erratum really is wrong); MBPP's are the asserts its prompt prints; the simulated
unit-test writer writes the visible ones; a query carries the visible tests unless the
evaluation asks for oracle tests, and every record says which.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itas.benchmarks import Question, load_benchmark
from itas.benchmarks.examples import docstring_tests, signature_test
from itas.benchmarks.humaneval import ERRATA, check_asserts
from itas.benchmarks.selection import ORACLE, VISIBLE, grading_tests, selection_tests_for
from itas.evaluation.evaluate import evaluate
from itas.execution.sandbox import run_tests
from itas.orchestrator.inprocess import InProcessCaller
from itas.orchestrator.runner import Orchestrator
from itas.spec import Architecture, load_architecture
from tests.helpers import DATA_DIR, REPO
from tests.test_eval_api import POOL

pytestmark = pytest.mark.anyio


@functools.cache
def humaneval() -> tuple[Question, ...]:
    return tuple(load_benchmark("humaneval", data_dir=DATA_DIR))


async def test_every_visible_test_holds_for_the_canonical_solution_and_errata_fail() -> None:
    failures: list[str] = []
    limiter = anyio.CapacityLimiter(2)
    by_id = {q.id: q for q in humaneval()}

    async def check(question: Question, tests: Sequence[str], expect_pass: bool) -> None:
        program = question.metadata["prompt"] + question.metadata["canonical_solution"]
        async with limiter:
            result = await run_tests(program, list(tests))
        for outcome in result.tests:
            if outcome.passed is not expect_pass:
                failures.append(f"{question.id}: {tests[outcome.index]} "
                                f"{'failed' if expect_pass else 'passed'} ({outcome.error})")

    async with anyio.create_task_group() as tg:
        for question in humaneval():
            tg.start_soon(check, question, question.visible_tests, True)
        for task_id, test in ERRATA:
            tg.start_soon(check, by_id[task_id], [test], False)
    assert not failures, failures
    with_examples = [q for q in humaneval() if q.visible_tests[0] != signature_test(
        q.metadata["entry_point"])]
    assert len(with_examples) >= 135  # most docstrings give examples; see examples.py


def test_visible_tests_come_from_the_prompt_alone() -> None:
    """The same tests from the prompt with a stub body: nothing of the solution leaks; and
    the hidden check only grades (the key's tests are the visible ones)."""
    differs = 0
    for q in humaneval():
        entry = q.metadata["entry_point"]
        stub = docstring_tests(q.metadata["prompt"] + "    pass\n", entry)
        shown = [t for t in stub if (q.id, t) not in ERRATA] or [signature_test(entry)]
        assert list(q.visible_tests) == shown, q.id
        assert q.answer_key is not None and q.answer_key["tests"] == list(q.visible_tests)
        hidden = check_asserts(q.reference, entry)
        if set(hidden) != set(q.visible_tests):
            differs += 1
        assert grading_tests(q) == (hidden or [f"{q.reference.rstrip()}\n\n\ncheck({entry})\n"])
    # Almost every task hides some of its grading tests (HumanEval/5's docstring happens
    # to show all of its asserts).
    assert differs >= len(humaneval()) - 2


def test_mbpp_shows_its_listed_asserts_and_hides_the_challenge_ones() -> None:
    for q in load_benchmark("mbpp", limit=60, data_dir=DATA_DIR):
        assert list(q.visible_tests) == q.reference
        assert all(t in q.prompt for t in q.visible_tests)
        assert not set(q.metadata["challenge_test_list"]) & set(q.visible_tests)
        assert selection_tests_for(q, VISIBLE) == selection_tests_for(q, ORACLE) == q.reference
    gsm = load_benchmark("gsm8k", limit=3, data_dir=DATA_DIR)
    assert all(selection_tests_for(q, VISIBLE) is None for q in gsm)


# -- the docstring reader, over random docstrings ----------------------------------------

FORMATS = ("doctest", "==", "==>", "=>", "->", "➞", "# =>", "should return")
values = st.one_of(st.integers(-1000, 1000), st.booleans(),
                   st.text("abcxyz ", max_size=6), st.lists(st.integers(-9, 9), max_size=4))
examples = st.lists(st.tuples(st.lists(st.integers(-50, 50), min_size=1, max_size=3), values,
                              st.sampled_from(FORMATS)), max_size=6)
noise = st.lists(st.sampled_from([
    "Return the thing.", "For n = 3 the output should be 7.", "f(n) = f(n - 1) + 1",
    "Note: inputs are valid.", "solve(x) == y for every y", ""]), max_size=4)


def docstring(examples: Sequence[tuple[list[int], Any, str]], noise: Sequence[str]) -> str:
    lines = list(noise)
    for args, value, form in examples:
        call = f"solve({', '.join(map(str, args))})"
        if form == "doctest":
            lines += [f">>> {call}", repr(value)]
        else:
            lines.append(f"{call} {form} {value!r}")
    body = "\n    ".join(lines)
    return f'def solve(*args):\n    """Do it.\n    {body}\n    """\n'


@settings(max_examples=200, deadline=None)
@given(examples, noise)
def test_each_written_example_becomes_exactly_its_assert(
        written: list[tuple[list[int], Any, str]], prose: list[str]) -> None:
    expected = []
    for args, value, _ in written:
        test = f"assert solve({', '.join(map(str, args))}) == {value!r}"
        if test not in expected:
            expected.append(test)
    got = docstring_tests(docstring(written, prose), "solve")
    assert got == (expected or [signature_test("solve")])


def test_floats_compare_with_a_tolerance_and_prose_is_not_a_test() -> None:
    program = ('def mean(xs):\n    """Mean.\n    >>> mean([1, 2])\n    1.5\n    mean(x) == '
               'x + 1\n    mean([2]) ➞ 2.0 (just the value)\n    mean(true) == false\n    """\n')
    assert docstring_tests(program, "mean") == [
        "assert abs(mean([1, 2]) - 1.5) < 1e-6", "assert abs(mean([2]) - 2.0) < 1e-6",
        "assert mean(True) == False"]
    assert docstring_tests("def f():\n    pass\n", "f") == ["assert callable(f)"]
    assert docstring_tests("not python (", "f") == ["assert callable(f)"]


# -- what a query carries -------------------------------------------------------------


class Recording:
    """A query runner that records the tests each query carried."""

    def __init__(self, inner: Orchestrator) -> None:
        self.inner = inner
        self.tests: dict[str, list[str] | None] = {}

    async def run(self, arch: Architecture, messages: Sequence[Mapping[str, str]], *,
                  sim: Mapping[str, Any] | None = None, tests: Sequence[str] | None = None,
                  **options: Any) -> dict[str, Any]:
        self.tests[str((sim or {}).get("id"))] = None if tests is None else list(tests)
        return await self.inner.run(arch, messages, sim=sim, tests=tests, **options)


@pytest.mark.parametrize("oracle", [False, True])
async def test_humaneval_selection_sees_visible_tests_and_grading_the_hidden_ones(
        oracle: bool) -> None:
    wanted = {"HumanEval/0", "HumanEval/2", "HumanEval/13", "HumanEval/38", "HumanEval/47"}
    questions = [q for q in humaneval() if q.id in wanted]
    arch = load_architecture(REPO / "configs" / "architectures" / "sim_code_exec.yaml")
    async with InProcessCaller(POOL) as caller:
        runner = Recording(Orchestrator(caller))
        summary = await evaluate(arch, questions, runner, concurrency=3, oracle_tests=oracle)
    label = ORACLE if oracle else VISIBLE
    assert summary.selection_tests == label and summary.errors == 0
    assert all(r["selection_tests"] == label for r in summary.results)
    for q in questions:
        sent = runner.tests[f"humaneval/{q.id}"]
        assert sent == (grading_tests(q) if oracle else list(q.visible_tests))
        assert sent != (list(q.visible_tests) if oracle else grading_tests(q))
