"""unit_test_evaluator: scores each candidate by the unit tests it passes and keeps the best.

Parameters: ``top_k`` (default all), ``first_k`` (Archon's early stop: evaluate the candidates
in order and stop once ``first_k`` of them pass every test; Archon's ``first_pass: true`` is
``first_k: 1``), ``task`` ("text" default, or "code"), the LLM fields (text), the execution
fields of ``code_tester`` (code). ``tests_in_prompt`` defaults to false here: the prompt lists
the tests on their own (Archon's ``remove_unit_tests_from_prompt``). Flow: needs candidates
and unit tests.

text: one call per candidate shows the tests and asks for one line per test, ``Test k: PASS``
or ``Test k: FAIL``. A reply that leaves a test without a verdict is re-asked; the fallback
counts tests without a readable verdict as failed (``fallback: "missing_as_failed"``).
code: the tests run in the sandbox, exactly as the code_tester runs them; no LLM call.

Fan-out: one request per candidate, all at once; with ``first_k``, one request for all, which
the agent evaluates in order and stops early, so it makes between ``first_k`` and n calls
(Archon's pattern: a 1,000-sample config costs about 2 calls, not 1,001).

Each candidate gets ``tests_passed``, ``tests_total``, ``score`` (fraction passed) and
``verdict`` (all passed). Selection (the merge): with ``first_k``, when ``first_k`` candidates
passed every test, those (in input order); otherwise, and without ``first_k``, the ``top_k``
with most tests passed (ties in input order). With no tests: the first ``top_k`` in input
order, and the trace says why.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import StrictBool

from itas.techniques.base import (
    ArchonForm,
    Count,
    Job,
    LLMParams,
    Material,
    Merged,
    OutputFormatError,
    Parsed,
    Shard,
    Technique,
    gather,
    judged_only,
    query_text,
)
from itas.techniques.code_tester import (
    ExecutionFields,
    RunOptions,
    execute,
    keep_best,
    required_tests,
)
from itas.techniques.contract import Candidate, Message, TechniqueReply

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


class UnitTestEvaluatorParams(LLMParams, ExecutionFields):
    technique: Literal["unit_test_evaluator"] = "unit_test_evaluator"
    top_k: Count | None = None
    first_k: Count | None = None
    task: Literal["text", "code"] = "text"
    tests_in_prompt: StrictBool = False


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


def _archon_evaluator(raw: dict[str, Any]) -> dict[str, Any]:
    """Archon's ``first_pass`` (first_k of 1) and ``remove_unit_tests_from_prompt``."""
    first_pass = raw.pop("first_pass", None)
    if first_pass is not None:
        if not isinstance(first_pass, bool):
            raise ValueError("'first_pass' must be true or false")
        if first_pass and raw.get("first_k") is None:
            raw["first_k"] = 1
    remove = raw.pop("tests_in_prompt", None)
    if remove is not None:
        if not isinstance(remove, bool):
            raise ValueError("'remove_unit_tests_from_prompt' must be true or false")
        raw["tests_in_prompt"] = not remove
    return raw


class UnitTestEvaluator(Technique[UnitTestEvaluatorParams]):
    name = "unit_test_evaluator"
    params_model = UnitTestEvaluatorParams
    summary = "scores candidates by the unit tests they pass and keeps the best"
    needs_tests = True
    runs_code = True
    archon = ArchonForm(
        renamed={"top_k": None, "first_k": None, "first_pass": None,
                 "remove_unit_tests_from_prompt": "tests_in_prompt"},
        ignored=frozenset({"samples", "unit_test_cap"}), convert=_archon_evaluator)

    def shards(self, p: UnitTestEvaluatorParams, n: int) -> list[Shard]:
        if p.first_k is not None:
            return [Shard(tuple(range(n)))] if n else []
        return [Shard((i,)) for i in range(n)]

    def request_calls(self, p: UnitTestEvaluatorParams, k: int) -> int:
        return 0 if p.task == "code" else k

    def min_calls(self, p: UnitTestEvaluatorParams, n: int) -> int:
        if p.first_k is None:
            return self.calls(p, n)
        return self.request_calls(p, min(p.first_k, n))

    def reasks(self, p: UnitTestEvaluatorParams) -> int:
        return 0 if p.task == "code" else p.parse_retries

    def executions(self, p: UnitTestEvaluatorParams, n: int) -> int:
        return n if p.task == "code" else 0

    def out_range(self, p: UnitTestEvaluatorParams, n: int) -> tuple[int, int]:
        kept = min(p.top_k or n, n)
        if p.first_k is None:
            return (kept, kept)
        early = min(p.first_k, n)
        return (min(kept, early), max(kept, early))

    def prompt_tokens(self, p: UnitTestEvaluatorParams, n: int, m: Material) -> int:
        if p.task == "code":
            return 0
        return n * (m.overhead + m.candidate + 2 * m.tests)

    def merge(self, p: UnitTestEvaluatorParams, incoming: Sequence[Candidate],
              results: Sequence[tuple[Shard, TechniqueReply | None]]) -> Merged:
        if p.first_k is not None:
            full = [c for c in judged_only(incoming, results)
                    if c.tests_total and c.tests_passed == c.tests_total]
            if len(full) >= p.first_k:
                return Merged(full[: p.first_k])
        return keep_best(incoming, results, p.top_k)

    async def run(self, job: Job[UnitTestEvaluatorParams]) -> TechniqueReply:
        tests = required_tests(job.request, self.name)
        if not tests:
            job.note("no_tests", "no unit tests to evaluate against")
            return job.reply(job.candidates)
        if job.params.task == "code":
            await execute(job.candidates, tests, RunOptions.of(job.params),
                          job.agent.run_limiter)
        elif job.params.first_k is not None:
            passed_all = 0
            for i, candidate in enumerate(job.candidates):
                await self._grade(job, tests, i, candidate)
                passed_all += bool(candidate.verdict)
                if passed_all >= job.params.first_k:
                    job.note("early_stop", f"{passed_all} candidate(s) passed every test after "
                                           f"{i + 1} of {len(job.candidates)} evaluated")
                    break
        else:
            await gather([functools.partial(self._grade, job, tests, i, c)
                          for i, c in enumerate(job.candidates)])
        for candidate in job.candidates:
            candidate.meta["evaluator"] = job.agent.service
        return job.reply(job.candidates)

    async def _grade(self, job: Job[UnitTestEvaluatorParams], tests: Sequence[str], i: int,
                     candidate: Candidate) -> None:
        total = len(tests)
        listed = "\n".join(f"{k}. {' '.join(t.split())}" for k, t in enumerate(tests, 1))
        prompt = PROMPT.format(query=query_text(job.request.messages),
                               response=candidate.text.strip(), tests=listed)
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


TECHNIQUE = UnitTestEvaluator()
