"""What a scorer returns and the interface every scorer offers.

A scorer is an object with ``needs_judge`` and ``async score(question,
answer_text) -> Score``. Rule-based scorers (answer matching, code execution)
decide alone. Judge-based benchmarks (MT-Bench, Arena-Hard, MixEval free-form)
need an LLM; their scorer takes a ``Judge`` (any async callable with the same
signature as ``score``) and, built without one, raises ConfigError when asked
to score, so an evaluation cannot silently report zeros.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from itas.benchmarks.question import Question
from itas.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Score:
    """value: in [0, 1]; correct: None when the scorer grades without a right/wrong
    verdict (a judge's 1-10 rating); detail: what was extracted and compared."""

    value: float
    correct: bool | None
    detail: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"Score.value must be in [0, 1], got {self.value}")


def verdict(correct: bool, detail: str) -> Score:
    return Score(1.0 if correct else 0.0, correct, detail)


Judge = Callable[[Question, str], Awaitable[Score]]


class Scorer(Protocol):
    needs_judge: bool

    async def score(self, question: Question, answer_text: str) -> Score: ...


class JudgeScorer:
    """Delegates to an LLM judge; without one, says so instead of scoring."""

    needs_judge = True

    def __init__(self, benchmark: str, judge: Judge | None = None) -> None:
        self.benchmark = benchmark
        self.judge = judge

    async def score(self, question: Question, answer_text: str) -> Score:
        if self.judge is None:
            raise ConfigError(
                f"benchmark {self.benchmark!r} is scored by an LLM judge; "
                f"call scorer_for({self.benchmark!r}, judge=...) with one"
            )
        return await self.judge(question, answer_text)
