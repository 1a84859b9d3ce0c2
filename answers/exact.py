"""Short free-text answers ("Paris", "mitochondria", "O(n log n)"): find the final answer
and compare it with the accepted ones after normalising.

Where the final answer is, most explicit first: after the last "answer is" / "answer:"
/ "answer =" on its line, else the last non-empty line. Normalising folds case,
collapses whitespace, drops surrounding quotes, backticks, bold/italic markers and
brackets, and trailing sentence punctuation, so "The answer is **Paris**." matches
"paris" while "Paris, Texas" does not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MARKER_RE = re.compile(r"answer\s*(?:is|:|=)\s*", re.IGNORECASE)
WRAPPERS = "\"'`*_“”‘’ "
TRAILING = ".!?;:,"


def final_answer(text: str) -> str | None:
    """The final answer part of ``text`` (see the module docstring), None when empty."""
    markers = list(MARKER_RE.finditer(text))
    if markers:
        rest = text[markers[-1].end():]
        line = rest.split("\n", 1)[0]
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        line = lines[-1] if lines else ""
    return line.strip() or None


def normalize(answer: str) -> str:
    value = " ".join(answer.split()).casefold()
    previous = None
    while previous != value:
        previous = value
        value = value.rstrip(TRAILING).strip(WRAPPERS)
        if len(value) > 1 and value[0] + value[-1] in ("()", "[]", "{}"):
            value = value[1:-1].strip()
    return value


def matches(text: str, accepted: Sequence[str]) -> tuple[bool, str | None]:
    """(whether the final answer of ``text`` is one of ``accepted``, the answer read)."""
    got = final_answer(text)
    if got is None:
        return False, None
    key = normalize(got)
    return any(key == normalize(a) for a in accepted), got
