"""code_tester: runs each candidate's code against the request's tests and ranks by tests passed.

Params: ``top_k`` (default all), ``timeout_s`` (per candidate run, default 10),
``memory_mb`` (default 512), ``entry_point`` (the function under test),
``prompt`` (HumanEval: the code the candidate completes; a candidate that gives
only a function body is appended to it), ``setup`` (MBPP's test_setup_code,
appended to the program).

Tests (request ``tests``): a list of statements (asserts), each one test; or,
with ``entry_point`` set, a single script defining ``check(candidate)``, run as
``check(<entry_point>)`` (HumanEval), one test.

Every run is a fresh sandboxed interpreter (``itas.execution.sandbox``: subprocess, own
temp dir, wall-clock and CPU limits, memory limit, no network where the OS
allows), so failing code, crashes and infinite loops become results, never
agent failures. At most ``max_parallel_runs`` (agent setting, default the CPU
count) run at once per agent process. Each candidate gets ``tests_passed``,
``tests_total``, ``score`` (fraction passed), ``verdict`` (all passed) and
``meta["execution"]``: status (passed/failed/timeout/crashed/memory), duration,
the first failures and the isolation the sandbox applied. Candidates are
ordered by tests passed, ties in input order. No LLM is called.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio

from itas.errors import ConfigError
from itas.execution.programs import extract_code, humaneval_program
from itas.execution.sandbox import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, MIN_MEMORY_MB, run_tests
from itas.techniques.base import Job, TechniqueAgent, gather
from itas.techniques.contract import Candidate, Params, TechniqueReply, bad_request

MAX_TIMEOUT_S = 300.0
MAX_MEMORY_MB = 64 * 1024
FAILURES_SHOWN = 3
CHECK_RE = re.compile(r"^def\s+check\s*\(", re.MULTILINE)
EXECUTION_PARAMS = frozenset({"timeout_s", "memory_mb", "entry_point", "prompt", "setup"})


@dataclass(frozen=True, slots=True)
class RunOptions:
    timeout_s: float
    memory_mb: int
    entry_point: str | None
    prompt: str | None
    setup: str | None

    @classmethod
    def from_params(cls, params: Params) -> RunOptions:
        return cls(
            timeout_s=params.number("timeout_s", DEFAULT_TIMEOUT_S, low=0.01, high=MAX_TIMEOUT_S),
            memory_mb=params.integer("memory_mb", DEFAULT_MEMORY_MB, low=MIN_MEMORY_MB,
                                     high=MAX_MEMORY_MB) or DEFAULT_MEMORY_MB,
            entry_point=params.text("entry_point"),
            prompt=params.text("prompt"),
            setup=params.text("setup"),
        )


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


def required_tests(job: Job) -> list[str]:
    if job.request.tests is None:
        raise bad_request("tests", f"required by {job.agent.technique}: the unit tests to run")
    return job.request.tests


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
        candidate.score = result.passed / result.total if result.total else 0.0
        candidate.verdict = result.all_passed
        failures = [{"test": t.index, "error": t.error or ""}
                    for t in result.tests if not t.passed][:FAILURES_SHOWN]
        candidate.meta["execution"] = {
            "status": result.status.value, "duration_s": round(result.duration_s, 3),
            "failures": failures, "load_error": result.load_error,
            "isolation": sorted(result.isolation)}

    await gather([lambda c=c: one(c) for c in candidates], limiter)


def by_tests_passed(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Most tests passed first; ties keep input order."""
    order = sorted(range(len(candidates)), key=lambda i: (-(candidates[i].tests_passed or 0), i))
    return [candidates[i] for i in order]


def parallel_runs(settings: Mapping[str, Any], where: str) -> int:
    value = settings.get("max_parallel_runs", os.cpu_count() or 2)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: setting 'max_parallel_runs' must be an integer >= 1, "
                          f"got {value!r}")
    return value


class SandboxedAgent(TechniqueAgent):
    """A technique that runs code: sandbox runs share one limit per agent process
    (``max_parallel_runs``), whatever its credit, so a burst cannot swamp the cores."""

    own_settings: ClassVar[frozenset[str]] = frozenset({"max_parallel_runs"})

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.limiter = anyio.CapacityLimiter(parallel_runs(settings, f"agent {self.technique!r}"))


class CodeTesterAgent(SandboxedAgent):
    technique = "code_tester"
    uses_llm = False
    default_credit = 8
    known_params: ClassVar[frozenset[str]] = EXECUTION_PARAMS | {"top_k"}

    async def run(self, job: Job) -> TechniqueReply:
        top_k = job.params.integer("top_k", None, low=1)
        options = RunOptions.from_params(job.params)
        tests = required_tests(job)
        if not tests:
            job.note("no_tests", "no tests to run; candidates kept in input order")
            return job.reply(job.candidates[:top_k])
        await execute(job.candidates, tests, options, self.limiter)
        for candidate in job.candidates:
            candidate.meta["tester"] = self.service
        return job.reply(by_tests_passed(job.candidates)[:top_k])
