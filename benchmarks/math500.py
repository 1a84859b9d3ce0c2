r"""MATH-500: competition problems whose final answer is a LaTeX expression.

Record: ``{"problem", "solution", "answer", "subject", "level", "unique_id"}``;
the id is ``unique_id`` (e.g. ``test/precalculus/807.json``).

Answer key: the reference solution with its last ``\boxed{}`` holding the
reference answer. Wrong answers are the same solution with a different final
box: the answer's first integer off by one, its last integer doubled (or plus
two inside LaTeX, where doubling \frac43 to \frac86 keeps the value), or the
sign flipped; an answer without digits (a name, a letter choice, an
expression such as ``\cot x``) takes another choice letter or other answers
of the same kind from the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from itas.answers.mathequiv import brace_group, normalize
from itas.benchmarks.datafiles import field, read_jsonl
from itas.benchmarks.question import Question, make_key, unit_hash, user

NAME = "math500"
FILES = ("math500/test.jsonl",)
URLS = ("https://raw.githubusercontent.com/openai/prm800k/main/prm800k/math_splits/test.jsonl",)
PROMPT = (
    "Solve the following math problem. Reason step by step and put the final answer "
    "in \\boxed{{}}.\n\n{problem}"
)
CHOICE_RE = re.compile(r"^(\\text\{)?\(([A-E])\)(\})?$")
MAX_WRONG = 3


def with_final(solution: str, answer: str) -> str:
    r"""``solution`` whose last ``\boxed{}`` holds ``answer`` (appended when it has none)."""
    for match in reversed(list(re.finditer(r"\\boxed\s*(?=\{)", solution))):
        group = brace_group(solution, match.end())
        if group is not None:
            return solution[: match.end()] + "{" + answer + "}" + solution[group[1] :]
    return f"{solution}\n\nThe final answer is $\\boxed{{{answer}}}$."


def _bump(answer: str, match: re.Match[str], new: int) -> str:
    return answer[: match.start()] + str(new) + answer[match.end() :]


def wrong_answers(answer: str, qid: str, pool: Sequence[str]) -> list[str]:
    """Up to three wrong final answers, none normalising to ``answer``."""
    runs = list(re.finditer(r"\d+", answer))
    candidates: list[str] = []
    if runs:
        first, last = runs[0], runs[-1]
        n, m = int(first.group()), int(last.group())
        candidates.append(_bump(answer, first, n + 1))
        # Doubling a digit run inside LaTeX can keep the value (\frac43 -> \frac86).
        plain = "\\" not in answer and m > 1
        candidates.append(_bump(answer, last, 2 * m if plain else m + 2))
        if "," not in answer and answer.strip() not in ("0", "-0"):
            stripped = answer.lstrip()
            candidates.append(stripped[1:] if stripped.startswith("-") else "-" + stripped)
        candidates.append(_bump(answer, first, n + 3))
    else:
        choice = CHOICE_RE.match(answer.strip())
        if choice:
            letters = [c for c in "ABCDE" if c != choice.group(2)]
            candidates += [f"\\text{{({c})}}" for c in letters]
        others = sorted(pool, key=lambda other: unit_hash("math-wrong", qid, other))
        candidates += others
    target = normalize(answer)
    chosen: list[str] = []
    for candidate in candidates:
        key = normalize(candidate)
        if key != target and key not in (normalize(c) for c in chosen):
            chosen.append(candidate)
        if len(chosen) == MAX_WRONG:
            break
    return chosen


def load(paths: Sequence[Path]) -> list[Question]:
    path = paths[0]
    rows = []
    for line, record in read_jsonl(path):
        where = f"{path}:{line}"
        rows.append(
            (
                field(record, "unique_id", where),
                field(record, "problem", where),
                field(record, "solution", where),
                field(record, "answer", where),
                record,
            )
        )
    wordy = sorted({a for *_, a, _ in rows if not re.search(r"\d", a)})
    questions = []
    for qid, problem, solution, answer, record in rows:
        pool = [a for a in wordy if normalize(a) != normalize(answer)]
        correct = with_final(solution, answer)
        wrong = [with_final(solution, w) for w in wrong_answers(answer, qid, pool)]
        questions.append(
            Question(
                id=qid,
                benchmark=NAME,
                messages=user(PROMPT.format(problem=problem)),
                reference=answer,
                metadata={
                    "subject": record.get("subject"),
                    "level": record.get("level"),
                    "solution": solution,
                },
                answer_key=make_key(NAME, qid, correct, wrong),
            )
        )
    return questions
