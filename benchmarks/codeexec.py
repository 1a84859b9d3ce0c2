"""Code benchmarks scored by running the candidate against the benchmark's tests.

The response is turned into a program by ``itas.execution.programs`` and run in
``itas.execution.sandbox`` (fresh process, limits, no network); a candidate
passes when every test passes. ``CodeScorer`` takes an optional
``anyio.CapacityLimiter`` so an evaluation does not start more interpreters at
once than the machine has cores.
"""

from __future__ import annotations

from typing import Any

import anyio

from itas.benchmarks.question import Question
from itas.benchmarks.score import Score, verdict
from itas.execution.programs import extract_code, humaneval_program
from itas.execution.sandbox import DEFAULT_MEMORY_MB, SandboxResult, run_tests

DEFAULT_TIMEOUT_S = 10.0


def summarize(result: SandboxResult) -> str:
    first_fail = next((t for t in result.tests if not t.passed), None)
    detail = f"{result.status.value}: {result.passed}/{result.total} tests passed"
    if first_fail is not None and first_fail.error:
        detail += f"; first failure: {first_fail.error}"
    return detail


class CodeScorer:
    """HumanEval (``check(entry_point)``) or MBPP (one assert per test) by execution."""

    needs_judge = False

    def __init__(
        self,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.limiter = limiter

    async def score(self, question: Question, answer_text: str) -> Score:
        meta: dict[str, Any] = question.metadata
        entry_point = meta.get("entry_point")
        if question.benchmark == "humaneval":
            program = humaneval_program(meta["prompt"], answer_text, str(entry_point))
            tests: str | list[str] = str(question.reference)
        else:
            program = extract_code(answer_text, entry_point)
            setup = meta.get("test_setup_code") or ""
            program = program + ("\n" + setup if setup else "")
            tests = list(question.reference)
            entry_point = None
        if self.limiter is not None:
            async with self.limiter:
                result = await self._run(program, tests, entry_point)
        else:
            result = await self._run(program, tests, entry_point)
        return verdict(result.all_passed, summarize(result))

    async def _run(
        self, program: str, tests: str | list[str], entry_point: str | None
    ) -> SandboxResult:
        return await run_tests(
            program,
            tests,
            entry_point=entry_point,
            timeout_s=self.timeout_s,
            memory_mb=self.memory_mb,
        )
