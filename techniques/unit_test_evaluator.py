"""unit_test_evaluator: scores each candidate by the unit tests it passes and keeps the best.

Params: ``top_k`` (default all), ``select`` ("top_k" default, or "first_pass"),
``task`` ("text" default, or "code"), ``temperature``, ``max_tokens``, and for
code the execution params of ``code_tester`` (``timeout_s``, ``memory_mb``,
``entry_point``, ``prompt``, ``setup``). The request's ``tests`` are required.

text: one call per candidate (concurrent) shows the tests and asks for one line
per test, ``Test k: PASS`` or ``Test k: FAIL``. A reply that leaves a test
without a verdict is re-asked; the fallback counts tests without a readable
verdict as failed (``fallback: "missing_as_failed"``).
code: the tests run in the sandbox, exactly as the code_tester runs them; no
LLM call.

Each candidate gets ``tests_passed``, ``tests_total``, ``score`` (fraction
passed) and ``verdict`` (all passed). ``select: top_k`` keeps the ``top_k`` with
most tests passed (ties in input order). ``select: first_pass`` keeps one: the
first candidate in input order that passes every test, or, when none does, the
best one, with the note ``no_full_pass``. With an empty test list nothing can
be scored: the first ``top_k`` are kept in input order with the note ``no_tests``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from itas.techniques.base import (
    Job,
    OutputFormatError,
    Parsed,
    gather,
    query_text,
)
from itas.techniques.code_tester import (
    EXECUTION_PARAMS,
    RunOptions,
    SandboxedAgent,
    by_tests_passed,
    execute,
    required_tests,
)
from itas.techniques.contract import Candidate, Message, TechniqueReply

SELECTIONS = ("top_k", "first_pass")
TASKS = ("text", "code")
SYSTEM = (
    "You are a strict grader. You check a response against unit tests one at a time, and "
    "judge each test on its own."
)
PROMPT = """## Request
{query}

## Response
{response}

## Unit tests
{tests}

For each unit test, decide whether the response passes it. Reply with exactly one line per \
test, in order, in this form:
Test 1: PASS
Test 2: FAIL"""
FORMAT_HINT = "Write exactly one line per test, 'Test <number>: PASS' or 'Test <number>: FAIL'."
LINE_RE = re.compile(r"(?im)^\W*test\s*#?\s*(\d+)\W*?[:=-]\W*(pass|fail)\b")


def render_results(results: Any) -> str:
    return "\n".join(f"Test {i}: {'PASS' if ok else 'FAIL'}" for i, ok in enumerate(results, 1))


def read_results(text: str, total: int) -> dict[int, bool]:
    """Readable verdicts by 1-based test number (the last line for a test wins)."""
    found: dict[int, bool] = {}
    for number, word in LINE_RE.findall(text):
        if 1 <= int(number) <= total:
            found[int(number)] = word.lower() == "pass"
    return found


def results_parser(total: int) -> Callable[[str], Parsed[list[bool]]]:
    def parse(text: str) -> Parsed[list[bool]]:
        found = read_results(text, total)
        missing = [k for k in range(1, total + 1) if k not in found]
        if missing:
            raise OutputFormatError(f"no PASS/FAIL line for test(s) {', '.join(map(str, missing))}")
        results = [found[k] for k in range(1, total + 1)]
        return Parsed(results, "test_lines", f"{sum(results)}/{total} passed")

    return parse


def missing_as_failed(total: int) -> Callable[[str], list[bool]]:
    def fallback(text: str) -> list[bool]:
        found = read_results(text, total)
        return [found.get(k, False) for k in range(1, total + 1)]

    return fallback


class UnitTestEvaluatorAgent(SandboxedAgent):
    technique = "unit_test_evaluator"
    known_params: ClassVar[frozenset[str]] = EXECUTION_PARAMS | {"top_k", "select", "task"}

    async def run(self, job: Job) -> TechniqueReply:
        top_k = job.params.integer("top_k", None, low=1)
        select = job.params.choice("select", "top_k", SELECTIONS)
        task = job.params.choice("task", "text", TASKS)
        options = RunOptions.from_params(job.params)
        tests = required_tests(job)
        keep = 1 if select == "first_pass" else top_k
        if not tests:
            job.note("no_tests", "no unit tests to evaluate against; candidates kept in "
                                 "input order")
            return job.reply(job.candidates[:keep])
        if task == "code":
            await execute(job.candidates, tests, options, self.limiter)
        else:
            await self._judge(job, tests)
        for candidate in job.candidates:
            candidate.meta["evaluator"] = self.service
        ranked = by_tests_passed(job.candidates)
        if select == "first_pass":
            first = next((c for c in job.candidates if c.verdict), None)
            if first is None and ranked:
                job.note("no_full_pass", f"no candidate passed all {len(tests)} tests; kept the "
                                         f"best ({ranked[0].tests_passed} passed)")
            return job.reply([first] if first else ranked[:1])
        return job.reply(ranked[:keep])

    async def _judge(self, job: Job, tests: Sequence[str]) -> None:
        total = len(tests)
        listed = "\n".join(f"{i}. {' '.join(t.split())}" for i, t in enumerate(tests, 1))
        query = query_text(job.request.messages)

        async def grade(i: int, candidate: Candidate) -> None:
            prompt = PROMPT.format(query=query, response=candidate.text.strip(), tests=listed)
            messages: list[Message] = [{"role": "system", "content": SYSTEM},
                                       {"role": "user", "content": prompt}]
            asked = await job.ask(
                messages, role="run_tests", parse=results_parser(total),
                fallback=missing_as_failed(total), fallback_name="missing_as_failed",
                format_hint=FORMAT_HINT, candidates=[candidate.text], render=render_results,
                extra={"tests": list(tests)}, order=i, subject=candidate.id)
            results = asked.value
            candidate.tests_passed, candidate.tests_total = sum(results), total
            candidate.score = sum(results) / total
            candidate.verdict = all(results)
            candidate.meta["test_results"] = results

        await gather([lambda i=i, c=c: grade(i, c) for i, c in enumerate(job.candidates)])
