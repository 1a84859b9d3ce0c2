"""unit_test_generator: writes unit tests for the query.

Parameters: ``num_tests`` (default 5), ``task`` ("text" default, or "code"), ``entry_point``
(code: the function the tests call) and the LLM fields. Flow: needs no candidates and passes
the incoming ones on unchanged; it writes the query's unit tests, which every later
unit_test_evaluator and code_tester runs, and which every later generator, critic, ranker,
fuser and verifier sees appended to the query (Archon's way; a component's
``tests_in_prompt: false`` leaves them out of its prompts). Fan-out: one request, one call.

code: the model writes Python ``assert`` statements in a fenced block. Every top-level assert
becomes one test, preceded by the other top-level statements (imports, helper values) written
before it, so each test runs on its own. text: natural-language checks as a numbered (or
bulleted) list, one per line, which the unit_test_evaluator's model judges per candidate.

At most ``num_tests`` are kept; fewer are accepted (the detail says how many). Unreadable
output is re-asked; the fallback is no tests (``fallback: "no_tests"``), which the evaluator
answers by keeping candidates in input order, with a ``no_tests`` problem in the trace.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from itas.execution.programs import CODE_LANGS, FENCE_RE
from itas.techniques.base import (
    ArchonForm,
    Job,
    LLMParams,
    Material,
    OutputFormatError,
    Parsed,
    Shard,
    Technique,
    query_text,
)
from itas.techniques.contract import ContractError, Message, TechniqueReply, TechniqueRequest

MAX_TESTS = 50
DEFAULT_NUM_TESTS = 5
SYSTEM = (
    "You write unit tests that decide whether an answer to a request is correct. Each test "
    "checks one specific, verifiable property that every correct answer has."
)
CODE_PROMPT = """## Request
{query}

Write {n} unit tests for a correct solution to this request, as Python assert statements\
{about}. Each assert must be deterministic and check one behaviour; cover edge cases. Do not \
write the solution. Reply with one ```python code block that holds only the assert statements \
(imports allowed), one per line."""
TEXT_PROMPT = """## Request
{query}

Write {n} unit tests for a response to this request: short, specific checks that a correct and \
complete response passes and a flawed one fails (for example: it states the right final \
result, it covers each part of the request, it respects the stated constraints). Each check \
must be decidable by reading the response alone. Reply with a numbered list, one check per line:
1. <check>
2. <check>"""
CODE_HINT = "Reply with one ```python code block of assert statements, one per line."
TEXT_HINT = "Reply with a numbered list of checks, one per line: '1. ...', '2. ...'."
ITEM_RE = re.compile(r"(?m)^[ \t]*(?:\d+[.):]|[-*\u2022]|test\s*\d+\s*[:.])[ \t]+(\S.*?)\s*$",
                     re.IGNORECASE)


class UnitTestGeneratorParams(LLMParams):
    technique: Literal["unit_test_generator"] = "unit_test_generator"
    num_tests: int = Field(DEFAULT_NUM_TESTS, ge=1, le=MAX_TESTS, strict=True)
    task: Literal["text", "code"] = "text"
    entry_point: str | None = None


def render_tests(task: str) -> Callable[[Any], str]:
    def render(tests: Any) -> str:
        if task == "code":
            return "```python\n" + "\n".join(str(t) for t in tests) + "\n```"
        return "\n".join(f"{i}. {' '.join(str(t).split())}" for i, t in enumerate(tests, 1))

    return render


def code_tests(text: str) -> Parsed[list[str]]:
    """Each top-level assert of the reply's code, prefixed by the non-assert statements."""
    blocks = [body for lang, body in FENCE_RE.findall(text) if lang.lower() in CODE_LANGS]
    source = "\n".join(blocks) if blocks else text
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        problem = f"the code is not valid Python (line {exc.lineno}: {exc.msg})"
        raise OutputFormatError(problem) from exc
    setup: list[str] = []
    tests: list[str] = []
    for node in tree.body:
        segment = ast.get_source_segment(source, node) or ""
        if isinstance(node, ast.Assert):
            tests.append("\n".join([*setup, segment]))
        else:
            setup.append(segment)
    if not tests:
        raise OutputFormatError("there are no assert statements")
    return Parsed(tests, "python_asserts", f"{len(tests)} asserts"
                  + (f", {len(setup)} setup statements" if setup else ""))


def text_tests(text: str) -> Parsed[list[str]]:
    items = [m.strip() for m in ITEM_RE.findall(text) if m.strip()]
    if not items:
        raise OutputFormatError("there is no numbered list of checks")
    return Parsed(items, "numbered_list", f"{len(items)} checks")


class UnitTestGenerator(Technique[UnitTestGeneratorParams]):
    name = "unit_test_generator"
    params_model = UnitTestGeneratorParams
    summary = "writes unit tests for the query"
    needs_candidates = False
    produces = False
    makes_tests = True
    reply_shape = "writes_tests"
    archon = ArchonForm(renamed={"unit_test_cap": "num_tests"}, ignored=frozenset({"samples"}))

    def shards(self, p: UnitTestGeneratorParams, n: int) -> list[Shard]:
        return [Shard()]

    def request_calls(self, p: UnitTestGeneratorParams, k: int) -> int:
        return 1

    def prompt_tokens(self, p: UnitTestGeneratorParams, n: int, m: Material) -> int:
        return m.overhead

    def test_tokens(self, p: UnitTestGeneratorParams) -> int:
        return p.max_tokens

    def check_reply(self, p: UnitTestGeneratorParams, request: TechniqueRequest,
                    reply: TechniqueReply) -> None:
        super().check_reply(p, request, reply)
        if reply.tests is not None and len(reply.tests) > p.num_tests:
            raise ContractError("reply.tests", f"{len(reply.tests)} tests; the request asked "
                                               f"for at most {p.num_tests}")

    async def run(self, job: Job[UnitTestGeneratorParams]) -> TechniqueReply:
        p = job.params
        query = query_text(job.request.messages)
        if p.task == "code":
            about = f" that call `{p.entry_point}`" if p.entry_point else ""
            prompt = CODE_PROMPT.format(query=query, n=p.num_tests, about=about)
        else:
            prompt = TEXT_PROMPT.format(query=query, n=p.num_tests)
        messages: list[Message] = [{"role": "system", "content": SYSTEM},
                                   {"role": "user", "content": prompt}]

        def parse(text: str) -> Parsed[list[str]]:
            parsed = code_tests(text) if p.task == "code" else text_tests(text)
            kept = parsed.value[:p.num_tests]
            return Parsed(kept, parsed.method, f"{parsed.detail}; kept {len(kept)} of "
                                               f"{p.num_tests} asked")

        asked = await job.ask(
            messages, role="write_tests", parse=parse, fallback=lambda _t: [],
            fallback_name="no_tests", format_hint=CODE_HINT if p.task == "code" else TEXT_HINT,
            render=render_tests(p.task), extra={"num_tests": p.num_tests, "task": p.task},
            subject="tests")
        return job.reply(job.candidates, tests=asked.value)


TECHNIQUE = UnitTestGenerator()
