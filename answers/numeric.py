"""GSM8K-style scoring: find the final number in a free-text answer and compare values.

Where the final answer is, most explicit first: after the last ``####``, after
the last "answer is" / "answer:", inside the last ``\\boxed{}``, else the last
number in the text. Numbers may carry thousands commas ("1,234"), a currency
sign ("$18", "\\$18"), units ("72 dollars", "50%"), a sign ("-5"), decimals
("5.0" equals "5") or be a fraction ("3/4"); small numbers written in words
("seventy-two", "one hundred and five") count when no digit is there to read.
Values compare exactly up to a tiny tolerance, so 0.1 + 0.2 style float
rounding in a model's arithmetic does not fail an otherwise right answer.
"""

from __future__ import annotations

import re
from fractions import Fraction

# Float slips like 0.30000000000000004 pass; 1,449,999 for 1,450,000 does not.
ABS_TOLERANCE = 1e-6
REL_TOLERANCE = 1e-12
SEGMENT_CHARS = 200
# A sign only when glued to the digits and not part of "16-3"; "\$" is LaTeX's dollar.
NUMBER_RE = re.compile(
    r"(?P<sign>(?<![\w)\]])[-−])?(?:\\?\$\s?)?"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)?(?P<frac>\.\d+)?"
    r"(?:\s?/\s?(?P<den>\d+)(?![\d.]))?"
)
MARKER_RE = re.compile(r"(?:answer\s*(?:is|:|=)|####)", re.IGNORECASE)
BOXED_RE = re.compile(r"\\boxed\s*\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")

UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_WORD = "(?:" + "|".join(sorted([*UNITS, *TENS, *SCALES], key=len, reverse=True)) + r")\b"
WORD_RE = re.compile(
    r"\b(?:(?:minus|negative)\s+)?" + _WORD + r"(?:[\s-]+(?:and[\s-]+)?" + _WORD + ")*",
    re.IGNORECASE,
)


def _to_fraction(match: re.Match[str]) -> Fraction | None:
    whole, frac, den = match.group("int"), match.group("frac"), match.group("den")
    if whole is None and frac is None:
        return None
    value = Fraction((whole or "0").replace(",", "") + (frac or ""))
    if den is not None and frac is None:
        if int(den) == 0:
            return None
        value /= int(den)
    return -value if match.group("sign") else value


def numbers(text: str) -> list[Fraction]:
    """Every number in ``text``, in order."""
    found = []
    for match in NUMBER_RE.finditer(text):
        value = _to_fraction(match)
        if value is not None:
            found.append(value)
    return found


def words_to_number(phrase: str) -> int | None:
    """'seventy-two' -> 72, 'one hundred and five' -> 105, 'minus three' -> -3."""
    tokens = [t for t in re.split(r"[\s-]+", phrase.lower()) if t and t != "and"]
    sign = 1
    if tokens and tokens[0] in ("minus", "negative"):
        sign, tokens = -1, tokens[1:]
    if not tokens:
        return None
    total = current = 0
    for token in tokens:
        if token in UNITS:
            current += UNITS[token]
        elif token in TENS:
            current += TENS[token]
        elif token == "hundred":
            current = max(current, 1) * 100
        elif token in SCALES:
            total += max(current, 1) * SCALES[token]
            current = 0
        else:
            return None
    return sign * (total + current)


def _last_word_number(text: str) -> Fraction | None:
    phrases = [m.group(0).strip(" -") for m in WORD_RE.finditer(text)]
    for phrase in reversed(phrases):
        value = words_to_number(phrase)
        if value is not None:
            return Fraction(value)
    return None


def _first_in(segment: str) -> Fraction | None:
    found = numbers(segment)
    if found:
        return found[0]
    phrases = [m.group(0).strip(" -") for m in WORD_RE.finditer(segment)]
    value = words_to_number(phrases[0]) if phrases else None
    return None if value is None else Fraction(value)


def extract_number(text: str) -> Fraction | None:
    """The final numeric answer in ``text``, or None when it states none."""
    markers = list(MARKER_RE.finditer(text))
    if markers:
        value = _first_in(text[markers[-1].end() : markers[-1].end() + SEGMENT_CHARS])
        if value is not None:
            return value
    boxes = BOXED_RE.findall(text)
    if boxes:
        value = _first_in(boxes[-1])
        if value is not None:
            return value
    found = numbers(text)
    if found:
        return found[-1]
    return _last_word_number(text)


def same_number(a: Fraction, b: Fraction) -> bool:
    return abs(a - b) <= max(ABS_TOLERANCE, REL_TOLERANCE * abs(b))


def format_number(value: Fraction) -> str:
    """Plain decimal text: 72, -3, 2.5 (repeating fractions as a/b)."""
    if value.denominator == 1:
        return str(value.numerator)
    as_float = float(value)
    if Fraction(repr(as_float)) == value:
        return repr(as_float)
    return f"{value.numerator}/{value.denominator}"
