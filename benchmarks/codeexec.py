"""Code benchmarks scored by running the candidate against the benchmark's tests.

Models answer in many shapes: a fenced ``python`` block among prose, several
blocks (the solution and a usage example), raw code, code after a sentence of
prose, or (HumanEval) only the body of the function whose header the prompt
gave. ``extract_code`` picks the block that defines the wanted function (else
the longest), and ``humaneval_program`` builds a runnable program either way:
the prompt (imports, helpers, header) followed by the candidate's full
definition, or the prompt with the body appended.

Execution happens in ``itas.sandbox`` (fresh process, limits, no network); a
candidate passes when every test passes. ``CodeScorer`` takes an optional
``anyio.CapacityLimiter`` so an evaluation does not start more interpreters at
once than the machine has cores.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import anyio

from itas.benchmarks.mutate import parse
from itas.benchmarks.question import Question
from itas.benchmarks.score import Score, verdict
from itas.sandbox import DEFAULT_MEMORY_MB, SandboxResult, run_tests

DEFAULT_TIMEOUT_S = 10.0
FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
CODE_LANGS = ("", "python", "py", "python3")
CODE_START_RE = re.compile(r"^(?:def |class |import |from |async def |@)", re.MULTILINE)


def _parses(code: str) -> bool:
    try:
        parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _defines(code: str, name: str, *, top_level: bool = False) -> bool:
    indent = "" if top_level else r"[ \t]*"
    pattern = rf"^{indent}(?:async\s+)?def\s+{re.escape(name)}\s*\("
    return re.search(pattern, code, re.MULTILINE) is not None


def extract_code(text: str, entry_point: str | None = None) -> str:
    """The Python code in a model's response (see the module docstring for the rules)."""
    blocks = [body for lang, body in FENCE_RE.findall(text) if lang.lower() in CODE_LANGS]
    if blocks:
        if entry_point:
            defining = [b for b in blocks if _defines(b, entry_point)]
            if defining:
                return defining[0]
        return max(blocks, key=len)
    if _parses(text):
        return text
    start = CODE_START_RE.search(text)
    if start is not None and _parses(text[start.start() :]):
        return text[start.start() :]
    return text


def humaneval_program(prompt: str, completion: str, entry_point: str) -> str:
    """A runnable program from the HumanEval prompt and a response (full function or body)."""
    code = extract_code(completion, entry_point)
    if _defines(code, entry_point, top_level=True):
        # A docstring-only body is a valid definition; the candidate's one replaces it.
        return prompt + "\n" + code
    body = code.strip("\n")
    first = next((line for line in body.splitlines() if line.strip()), "")
    if first and not first[0].isspace():
        body = textwrap.indent(textwrap.dedent(body), "    ")
    return prompt + body + "\n"


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
            program = humaneval_program(meta["prompt"], answer_text, entry_point)
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
