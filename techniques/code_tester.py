"""code_tester: runs each candidate's code against the unit tests and keeps the best.

Parameters: ``top_k`` (default all), the execution fields ``timeout_s`` (per candidate run,
default 10), ``memory_mb`` (default 512), ``entry_point`` (the function under test),
``prompt`` (HumanEval: the code the candidate completes; a candidate that gives only a
function body is appended to it), ``setup`` (MBPP's test_setup_code, appended to the
program). No LLM. Flow: needs candidates and unit tests (a unit_test_generator's, or the
benchmark's with ``tests: benchmark``), leaves ``min(top_k, n)``. Fan-out: one request per
candidate, one sandboxed run each.

Tests (request ``tests``): a list of statements (asserts), each one test; or, with
``entry_point`` set, a single script defining ``check(candidate)``, run as
``check(<entry_point>)`` (HumanEval), one test.

Every run is a fresh sandboxed interpreter (``itas.execution.sandbox``: namespaces,
seccomp without sockets, private capped temp space, every process killed at the end; it fails
closed where no isolation works, and the agent checks that at start), so failing code,
crashes and infinite loops become results, never agent failures. At most
``max_parallel_runs`` (agent setting, default the CPU count) run at once per agent process.
Each candidate gets ``tests_passed``, ``tests_total``, ``score`` (fraction passed),
``verdict`` (all passed) and ``meta["execution"]`` (status, duration, the first failures, the
isolation the sandbox applied). The merge orders by tests passed, ties in input order, and
keeps ``top_k``; with no tests it keeps the first ``top_k`` in input order and says so.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import anyio
from pydantic import Field

from itas.execution.programs import extract_code, humaneval_program
from itas.execution.sandbox import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, MIN_MEMORY_MB, run_tests
from itas.techniques.base import (
    ComponentParams,
    Count,
    Job,
    Merged,
    Shard,
    Technique,
    ToolParams,
    gather,
    judged_only,
)
from itas.techniques.contract import Candidate, TechniqueReply, TechniqueRequest, bad_request

MAX_TIMEOUT_S = 300.0
MAX_MEMORY_MB = 64 * 1024
FAILURES_SHOWN = 3
CHECK_RE = re.compile(r"^def\s+check\s*\(", re.MULTILINE)


class ExecutionFields(ComponentParams):
    """How candidate code runs: shared by code_tester and the code unit_test_evaluator."""

    timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0.0, le=MAX_TIMEOUT_S)
    memory_mb: int = Field(DEFAULT_MEMORY_MB, ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB, strict=True)
    entry_point: str | None = None
    prompt: str | None = None
    setup: str | None = None


class CodeTesterParams(ToolParams, ExecutionFields):
    technique: Literal["code_tester"] = "code_tester"
    top_k: Count | None = None


@dataclass(frozen=True, slots=True)
class RunOptions:
    timeout_s: float
    memory_mb: int
    entry_point: str | None
    prompt: str | None
    setup: str | None

    @classmethod
    def of(cls, p: ExecutionFields) -> RunOptions:
        return cls(p.timeout_s, p.memory_mb, p.entry_point, p.prompt, p.setup)


def program_for(text: str, options: RunOptions) -> str:
    """The runnable program of a candidate's text (fenced or raw code, or a body)."""
    if options.prompt and options.entry_point:
        program = humaneval_program(options.prompt, text, options.entry_point)
    else:
        program = extract_code(text, options.entry_point)
    return program + ("\n" + options.setup if options.setup else "")


def tests_argument(tests: Sequence[str], options: RunOptions) -> str | list[str]:
    if options.entry_point and len(tests) == 1 and CHECK_RE.search(tests[0]):
        return tests[0]
    return list(tests)


def required_tests(request: TechniqueRequest, technique: str) -> list[str]:
    if request.tests is None:
        raise bad_request("tests", f"required by {technique}: the unit tests to run")
    return request.tests


async def execute(candidates: Sequence[Candidate], tests: Sequence[str], options: RunOptions,
                  limiter: anyio.CapacityLimiter) -> None:
    """Run every candidate against the tests (concurrently, up to the limiter) and record
    the outcome on it."""
    argument = tests_argument(tests, options)
    entry = options.entry_point if isinstance(argument, str) else None

    async def one(candidate: Candidate) -> None:
        result = await run_tests(program_for(candidate.text, options), argument,
                                 entry_point=entry, timeout_s=options.timeout_s,
                                 memory_mb=options.memory_mb)
        candidate.tests_passed, candidate.tests_total = result.passed, result.total
        candidate.score = result.passed / result.total if result.total else None
        candidate.verdict = result.all_passed
        failures = [{"test": t.index, "error": t.error or ""}
                    for t in result.tests if not t.passed][:FAILURES_SHOWN]
        candidate.meta["execution"] = {
            "status": result.status.value, "duration_s": round(result.duration_s, 3),
            "failures": failures, "load_error": result.load_error,
            "isolation": sorted(result.isolation)}

    await gather([functools.partial(one, c) for c in candidates], limiter)


def by_tests_passed(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Most tests passed first (as a fraction); ties keep input order."""
    def key(i: int) -> tuple[float, int]:
        c = candidates[i]
        return (-((c.tests_passed or 0) / c.tests_total if c.tests_total else 0.0), i)

    return [candidates[i] for i in sorted(range(len(candidates)), key=key)]


def keep_best(incoming: Sequence[Candidate],
              results: Sequence[tuple[Shard, TechniqueReply | None]], top_k: int | None
              ) -> Merged:
    """The test-based selection of code_tester and unit_test_evaluator: judged candidates by
    tests passed, ``top_k`` of them; nothing judged (no tests, or every request failed):
    the first ``top_k`` in input order, with the reason in the trace."""
    keep = top_k or len(incoming)
    judged = [c for c in judged_only(incoming, results) if c.tests_total is not None]
    if judged:
        return Merged(by_tests_passed(judged)[:keep])
    if not incoming:
        return Merged([])
    problem = ("no candidate was tested (no unit tests, or every request failed); kept the "
               f"first {min(keep, len(incoming))} in input order")
    return Merged(list(incoming[:keep]), problems=[problem])


class CodeTester(Technique[CodeTesterParams]):
    name = "code_tester"
    params_model = CodeTesterParams
    summary = "runs each candidate's code against the tests and keeps the best"
    uses_llm = False
    needs_tests = True
    runs_code = True

    def out_range(self, p: CodeTesterParams, n: int) -> tuple[int, int]:
        kept = min(p.top_k or n, n)
        return (kept, kept)

    def executions(self, p: CodeTesterParams, n: int) -> int:
        return n

    def merge(self, p: CodeTesterParams, incoming: Sequence[Candidate],
              results: Sequence[tuple[Shard, TechniqueReply | None]]) -> Merged:
        return keep_best(incoming, results, p.top_k)

    async def run(self, job: Job[CodeTesterParams]) -> TechniqueReply:
        tests = required_tests(job.request, self.name)
        if tests:
            await execute(job.candidates, tests, RunOptions.of(job.params),
                          job.agent.run_limiter)
            for candidate in job.candidates:
                candidate.meta["tester"] = job.agent.service
        else:
            job.note("no_tests", "no tests to run")
        return job.reply(job.candidates)


TECHNIQUE = CodeTester()
