"""Multiple-choice scoring: which option did the response pick?

Read in order, first hit wins: "answer is (B)" / "Answer: B" (the last such
phrase), ``\\boxed{B}``, a reply that starts with the letter ("B", "(B)",
"B. text"), a single letter in parentheses or bold anywhere, and finally the
text of exactly one option quoted in the response. Letters beyond the
question's options are ignored, so "A" the article is not read as a choice
unless it stands alone as one.
"""

from __future__ import annotations

import re
import string

LETTERS = string.ascii_uppercase


def _patterns(letters: str) -> list[tuple[re.Pattern[str], bool]]:
    """(pattern, use the last match) in priority order; group 1 is the letter."""
    x = f"([{letters}])"
    return [
        (re.compile(rf"(?i:answer)\s*(?:(?i:is)|:)?\s*[:\-]?\s*[(*\[]*\s*{x}(?![A-Za-z])"), True),
        (re.compile(rf"\\boxed\{{\s*(?:\\text\{{)?\(?{x}\)?"), True),
        (re.compile(rf"^\s*[(*\[]*{x}(?:[)\].:*]|\s*$)"), False),
        (re.compile(rf"(?:\(|\*\*){x}(?:\)|\*\*)"), False),
    ]


def chosen_option(text: str, options: list[str]) -> int | None:
    """Index of the option ``text`` chooses, or None when it picks none or several."""
    letters = LETTERS[: len(options)]
    for pattern, last in _patterns(letters):
        found = [m.group(1) for m in pattern.finditer(text)]
        if not found:
            continue
        if last:
            return letters.index(found[-1])
        if len(set(found)) == 1:
            return letters.index(found[0])
    lowered = text.lower()
    quoted = [
        i
        for i, option in enumerate(options)
        if option.strip()
        and re.search(rf"(?<!\w){re.escape(option.strip().lower())}(?!\w)", lowered)
    ]
    return quoted[0] if len(quoted) == 1 else None
