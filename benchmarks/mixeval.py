"""MixEval-Hard (2024-06-01): questions mixed from many benchmarks, multiple-choice and
free-form, in two files of ``{id: {"problem_type", "context", "prompt", "options"?,
"target", "benchmark_name"}}``.

Both files load into the one benchmark ``mixeval_hard``; ids are ``mc-<id>``
and ``ff-<id>``, and ``metadata["problem_type"]`` says which kind (the scorer
dispatches on it). Multiple-choice: the reference is the list of correct
option indices, options are shown lettered A, B, ...; the key answers with the
letter, wrong answers with other letters (fewer than two when the question has
only two options). Free-form: the reference is the list of accepted answers
(a judge decides); the key answers with the first one, wrong answers are a
number off by one or accepted answers of other questions from the same source.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from itas.benchmarks.datafiles import field, read_json
from itas.benchmarks.question import Question, make_key, unit_hash, user
from itas.errors import ConfigError

NAME = "mixeval_hard"
MULTIPLE_CHOICE = "multiple-choice"
FREE_FORM = "free-form"
FILES = ("mixeval_hard/multiple-choice.json", "mixeval_hard/free-form.json")
_BASE = "https://raw.githubusercontent.com/Psycoy/MixEval/main/mix_eval/data/mixeval-2024-06-01/mixeval-hard/"
URLS = (_BASE + "multiple-choice.json", _BASE + "free-form.json")
MC_INSTRUCTION = "Answer with the letter of the correct option."
FF_INSTRUCTION = "Answer the question briefly."
LETTERS = string.ascii_uppercase
MAX_WRONG = 3


def _records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object of id -> question")
    rows = []
    for key, record in data.items():
        if not isinstance(record, dict):
            raise ConfigError(f"{path}: entry {key!r} is not an object")
        rows.append((str(key), record))
    return rows


def _prompt(record: dict[str, Any], where: str) -> str:
    context = record.get("context")
    question = field(record, "prompt", where)
    return f"{context}\n{question}" if context else question


def load_multiple_choice(path: Path) -> list[Question]:
    questions = []
    for key, record in _records(path):
        where = f"{path}: entry {key!r}"
        options = [str(o) for o in field(record, "options", where, list)]
        targets = field(record, "target", where, list)
        if not options or len(options) > len(LETTERS):
            raise ConfigError(f"{where}: field 'options' must hold 1..{len(LETTERS)} options")
        if not targets or any(not isinstance(t, int) or not 0 <= t < len(options) for t in targets):
            raise ConfigError(f"{where}: field 'target' must list option indices")
        qid = f"mc-{key}"
        lettered = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
        text = f"{_prompt(record, where)}\n{lettered}\n{MC_INSTRUCTION}"
        right = LETTERS[targets[0]]
        others = [LETTERS[i] for i in range(len(options)) if i not in targets]
        others.sort(key=lambda letter: unit_hash("mc-wrong", qid, letter))
        questions.append(
            Question(
                id=qid,
                benchmark=NAME,
                messages=user(text),
                reference=list(targets),
                metadata={
                    "problem_type": MULTIPLE_CHOICE,
                    "options": options,
                    "source": record.get("benchmark_name"),
                },
                answer_key=make_key(
                    NAME,
                    qid,
                    f"The answer is {right}.",
                    [f"The answer is {w}." for w in others[:MAX_WRONG]],
                ),
            )
        )
    return questions


def _wrong_free_form(qid: str, targets: list[str], pool: list[str]) -> list[str]:
    wrong: list[str] = []
    number = re.fullmatch(r"-?\d+", targets[0].strip())
    if number:
        wrong.append(str(int(number.group()) + 1))
    accepted = {t.strip().lower() for t in targets}
    for other in sorted(pool, key=lambda o: unit_hash("ff-wrong", qid, o)):
        if other.strip().lower() not in accepted and other not in wrong:
            wrong.append(other)
        if len(wrong) == MAX_WRONG:
            break
    return wrong


def load_free_form(path: Path) -> list[Question]:
    rows = []
    for key, record in _records(path):
        where = f"{path}: entry {key!r}"
        targets = [str(t) for t in field(record, "target", where, list)]
        if not targets:
            raise ConfigError(f"{where}: field 'target' is empty")
        rows.append((key, record, targets, _prompt(record, where)))
    pools: dict[Any, list[str]] = {}
    for _, record, targets, _ in rows:
        pools.setdefault(record.get("benchmark_name"), []).append(targets[0])
    questions = []
    for key, record, targets, prompt in rows:
        qid = f"ff-{key}"
        wrong = _wrong_free_form(qid, targets, pools[record.get("benchmark_name")])
        questions.append(
            Question(
                id=qid,
                benchmark=NAME,
                messages=user(f"{prompt}\n{FF_INSTRUCTION}"),
                reference=targets,
                metadata={"problem_type": FREE_FORM, "source": record.get("benchmark_name")},
                answer_key=make_key(
                    NAME,
                    qid,
                    f"The answer is {targets[0]}.",
                    [f"The answer is {w}." for w in wrong],
                ),
            )
        )
    return questions


def load(paths: Sequence[Path]) -> list[Question]:
    """Both parts: ``paths`` = (multiple-choice file, free-form file)."""
    return load_multiple_choice(paths[0]) + load_free_form(paths[1])


def load_mc(paths: Sequence[Path]) -> list[Question]:
    return load_multiple_choice(paths[0])


def load_ff(paths: Sequence[Path]) -> list[Question]:
    return load_free_form(paths[0])
