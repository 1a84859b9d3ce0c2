"""GSM8K test split: grade-school word problems with a numeric final answer.

Record: ``{"question", "answer"}`` where the answer is the worked solution
(with ``<<...>>`` calculator annotations) ending in ``#### <final>``. Ids are
the record's ``idx`` when present, else its 0-based position in the file.

Answer key: the worked solution without annotations, ending "The answer is N."
Wrong answers keep the worked solution but replace every occurrence of the
final number by a wrong one (an arithmetic slip that propagates): off by one,
off by a factor of ten, doubled. The key has no ``final`` token: the worked
solutions are full of numbers ("1,100" would contain a final answer of 100).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from itas.answers.numeric import extract_number, format_number
from itas.benchmarks.datafiles import field, read_jsonl
from itas.benchmarks.question import Question, make_key, unit_hash, user
from itas.errors import ConfigError

NAME = "gsm8k"
FILES = ("gsm8k/test.jsonl",)
URLS = (
    "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data/test.jsonl",
)
PROMPT = (
    "Solve the following math word problem. Reason step by step, then finish with a line "
    'of the form "The answer is N." where N is a number.\n\n{question}'
)
CALCULATOR_RE = re.compile(r"<<[^>]*>>")


def wrong_values(value: Fraction, salt: str) -> list[Fraction]:
    """Three distinct plausible wrong numbers; which slips come first depends on ``salt``."""
    up, down = value + 1, value - 1
    first, other = (up, down) if unit_hash("gsm8k-wrong", salt) < 0.5 else (down, up)
    pool = [first, value * 10 if value else Fraction(10), other, value * 2, value + 10]
    chosen: list[Fraction] = []
    for candidate in pool:
        if candidate != value and candidate not in chosen:
            chosen.append(candidate)
    return chosen[:3]


def _replace_number(text: str, value: Fraction, new: str) -> str:
    forms = {format_number(value)}
    if value.denominator == 1 and abs(value) >= 1000:
        forms.add(f"{value.numerator:,}")
    for form in sorted(forms, key=len, reverse=True):
        text = re.sub(rf"(?<![\w.,]){re.escape(form)}(?![\w]|[.,]\d)", new, text)
    return text


def load(paths: Sequence[Path]) -> list[Question]:
    path = paths[0]
    questions: list[Question] = []
    for line, record in read_jsonl(path):
        where = f"{path}:{line}"
        problem = field(record, "question", where)
        solution = field(record, "answer", where)
        if "####" not in solution:
            raise ConfigError(f"{where}: field 'answer' has no '#### <final answer>'")
        reasoning, final_text = solution.rsplit("####", 1)
        value = extract_number(final_text)
        if value is None:
            raise ConfigError(f"{where}: no number after '####' in field 'answer'")
        qid = str(record.get("idx", len(questions)))
        final = format_number(value)
        steps = CALCULATOR_RE.sub("", reasoning).strip()
        answer = f"{steps}\nThe answer is {final}."
        wrong = []
        for bad in wrong_values(value, qid):
            bad_text = format_number(bad)
            wrong.append(f"{_replace_number(steps, value, bad_text)}\nThe answer is {bad_text}.")
        questions.append(
            Question(
                id=qid,
                benchmark=NAME,
                messages=user(PROMPT.format(question=problem)),
                reference=final,
                metadata={"solution": solution},
                answer_key=make_key(NAME, qid, answer, wrong),
            )
        )
    return questions
