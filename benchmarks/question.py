"""The one record every loader yields, and the deterministic numbers attached to it.

A ``Question`` carries what a model is shown (``messages``), what a scorer
checks against (``reference``) and, for simulated models, an ``answer_key``.
The key's ``answer`` is a full response text that the benchmark's own scorer
accepts and its ``wrong`` entries are plausible responses it rejects; they are
the same for every simulated model, so simulated mistakes correlate across
models as real ones do. ``difficulty`` is a hash of the id: deterministic,
spread uniformly over [0, 1), unrelated to the true difficulty.

Tests come in two kinds. ``reference`` holds what grades a code answer (HumanEval's
hidden ``check``, MBPP's asserts); ``visible_tests`` holds the tests a model may be
shown: the examples of the task statement (HumanEval's docstring, MBPP's listed asserts,
which its standard prompt prints). Selection inside an architecture (``tests:
benchmark``) sees only the visible ones unless an evaluation asks for oracle tests and
says so in every output (see ``itas.benchmarks.selection``).

``scorer`` names the built-in scorer of a benchmark defined by a user
(``itas.benchmarks.custom``); "" means the benchmark's own (see ``scoring``).

Multi-turn questions (MT-Bench) list every user turn in ``turns``; ``messages``
is the first turn. After answering turn k, ``conversation(answers)`` gives the
messages for turn k + 1: the user turns interleaved with the model's answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]
AnswerKey = dict[str, Any]

HASH_SCALE = float(1 << 64)
DIGEST_CHARS = 16


def unit_hash(*parts: object) -> float:
    """A stable float in [0, 1) from the parts (same in every process and platform)."""
    blob = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big") / HASH_SCALE


def difficulty(benchmark: str, question_id: str) -> float:
    return round(unit_hash("difficulty", benchmark, question_id), 6)


def make_key(
    benchmark: str, question_id: str, answer: str, wrong: Sequence[str], **extra: Any
) -> AnswerKey:
    """An answer key in the shape ``SimTask.key`` expects; ``extra`` adds e.g. ``final``."""
    return {
        "id": f"{benchmark}/{question_id}",
        "answer": answer,
        "wrong": list(wrong),
        "difficulty": difficulty(benchmark, question_id),
        **extra,
    }


@dataclass(frozen=True, slots=True)
class Question:
    """One benchmark item.

    reference: what the scorer compares against; its type depends on the
      benchmark (a final-answer string, test code, a list of asserts, option
      indices, a baseline output, or None for judge-only benchmarks).
    answer_key: for simulated models; None where no checkable answer exists.
    visible_tests: tests a model may be shown (see the module docstring); () when none.
    scorer: a built-in scorer name for user-defined benchmarks, "" for the benchmark's own.
    """

    id: str
    benchmark: str
    messages: list[Message]
    reference: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    answer_key: AnswerKey | None = None
    turns: tuple[str, ...] = ()
    visible_tests: tuple[str, ...] = ()
    scorer: str = ""

    @property
    def prompt(self) -> str:
        """The text of the first user message."""
        return next((m["content"] for m in self.messages if m["role"] == "user"), "")

    def conversation(self, answers: Sequence[str]) -> list[Message]:
        """Messages for the next turn after the model gave ``answers`` to the first turns."""
        turns = self.turns or (self.prompt,)
        if len(answers) >= len(turns):
            raise IndexError(
                f"question {self.benchmark}/{self.id} has {len(turns)} turn(s); "
                f"{len(answers)} answer(s) given"
            )
        messages: list[Message] = []
        for turn, answer in zip(turns, answers, strict=False):
            messages += [
                {"role": "user", "content": turn},
                {"role": "assistant", "content": answer},
            ]
        messages.append({"role": "user", "content": turns[len(answers)]})
        return messages


def questions_digest(questions: Iterable[Question]) -> str:
    """A hash of everything a score depends on in these questions, in order: ids, what is
    shown, what grades, the tests, the scorer and the simulated answer keys. Same questions,
    same digest, in any process; a changed file or another sample gives another one."""
    digest = hashlib.sha256()
    for q in questions:
        record = [q.benchmark, q.id, q.messages, q.reference, list(q.turns),
                  list(q.visible_tests), q.scorer, q.answer_key]
        digest.update(json.dumps(record, sort_keys=True, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:DIGEST_CHARS]


def user(content: str) -> list[Message]:
    return [{"role": "user", "content": content}]
