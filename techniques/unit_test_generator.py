"""unit_test_generator: writes unit tests for the query; the reply's ``tests`` carries them.

Params: ``num_tests`` (default 5), ``task`` ("text" default, or "code"),
``entry_point`` (code: the function the tests call), ``temperature``, ``max_tokens``.

code: the model writes Python ``assert`` statements in a fenced block. Every
top-level assert becomes one test, preceded by the other top-level statements
(imports, helper values) written before it, so each test runs on its own.
text: natural-language checks as a numbered (or bulleted) list, one per line,
which the unit_test_evaluator's model judges per candidate.

At most ``num_tests`` are kept; fewer are accepted (the detail says how many).
Unreadable output is re-asked; the fallback is no tests (``fallback: "no_tests"``),
which the evaluator answers with a ``no_tests`` note instead of a ranking.
Incoming candidates pass through unchanged (a layer of only test generators
hands its candidates on).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import Any, ClassVar

from itas.execution.programs import CODE_LANGS, FENCE_RE
from itas.techniques.base import Job, OutputFormatError, Parsed, TechniqueAgent, query_text
from itas.techniques.contract import Message, TechniqueReply

TASKS = ("text", "code")
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


class UnitTestGeneratorAgent(TechniqueAgent):
    technique = "unit_test_generator"
    known_params: ClassVar[frozenset[str]] = frozenset({"num_tests", "task", "entry_point"})

    async def run(self, job: Job) -> TechniqueReply:
        num_tests = job.params.integer("num_tests", DEFAULT_NUM_TESTS, low=1, high=MAX_TESTS)
        assert num_tests is not None
        task = job.params.choice("task", "text", TASKS)
        entry_point = job.params.text("entry_point")
        query = query_text(job.request.messages)
        if task == "code":
            about = f" that call `{entry_point}`" if entry_point else ""
            prompt = CODE_PROMPT.format(query=query, n=num_tests, about=about)
        else:
            prompt = TEXT_PROMPT.format(query=query, n=num_tests)
        messages: list[Message] = [{"role": "system", "content": SYSTEM},
                                   {"role": "user", "content": prompt}]

        def parse(text: str) -> Parsed[list[str]]:
            parsed = code_tests(text) if task == "code" else text_tests(text)
            kept = parsed.value[:num_tests]
            return Parsed(kept, parsed.method, f"{parsed.detail}; kept {len(kept)} of "
                                               f"{num_tests} asked")

        asked = await job.ask(
            messages, role="write_tests", parse=parse, fallback=lambda _t: [],
            fallback_name="no_tests", format_hint=CODE_HINT if task == "code" else TEXT_HINT,
            render=render_tests(task), extra={"num_tests": num_tests, "task": task},
            subject="tests")
        return job.reply(job.candidates, tests=asked.value)
