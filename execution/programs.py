"""Programs out of model text: the code in a response, and the runnable program it makes.

Models answer in many shapes: a fenced ``python`` block among prose, several
blocks (the solution and a usage example), raw code, code after a sentence of
prose, or (HumanEval) only the body of the function whose header the prompt
gave. ``extract_code`` picks the block that defines the wanted function (else
the longest), and ``humaneval_program`` builds a runnable program either way:
the prompt (imports, helpers, header) followed by the candidate's full
definition, or the prompt with the body appended.

Techniques that run code (code_tester, the unit-test evaluator) and the code
benchmarks' scorer both read responses this way, so a candidate is run the same
way when it is selected and when it is graded. Execution itself is
``itas.execution.sandbox``.
"""

from __future__ import annotations

import ast
import re
import textwrap
import warnings

FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
CODE_LANGS = ("", "python", "py", "python3")
CODE_START_RE = re.compile(r"^(?:def |class |import |from |async def |@)", re.MULTILINE)


def parse(source: str) -> ast.Module:
    """``ast.parse`` without warnings: old code has "\\w" in plain strings (a
    DeprecationWarning, SyntaxWarning from 3.12), and under ``-W error`` that warning
    would become a SyntaxError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return ast.parse(source)



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


