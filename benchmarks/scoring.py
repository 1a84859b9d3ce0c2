"""Which scorer grades which benchmark (see ``score`` for the interface).

Rule-based: gsm8k (final number), math500 (answer equivalence), humaneval and
mbpp (execution in the sandbox), the multiple-choice half of mixeval_hard
(option letter). Judge-based: mt_bench, arena_hard, alpaca_eval and the
free-form half of mixeval_hard; pass ``judge`` to score them.
"""

from __future__ import annotations

import anyio

from itas.benchmarks.choice import ChoiceScorer
from itas.benchmarks.codeexec import DEFAULT_TIMEOUT_S, CodeScorer
from itas.benchmarks.mathequiv import MathScorer
from itas.benchmarks.mixeval import MULTIPLE_CHOICE
from itas.benchmarks.numeric import NumericScorer
from itas.benchmarks.question import Question
from itas.benchmarks.registry import spec_of
from itas.benchmarks.score import Judge, JudgeScorer, Score, Scorer

MIXED = ("mixeval_hard", "mixeval_hard_mc")


class MixEvalScorer:
    """Multiple-choice questions by letter, free-form ones by the judge (when given)."""

    needs_judge = True  # for the free-form questions only

    def __init__(self, judge: Judge | None = None) -> None:
        self.choice = ChoiceScorer()
        self.free_form = JudgeScorer("mixeval_hard", judge)

    async def score(self, question: Question, answer_text: str) -> Score:
        if question.metadata.get("problem_type") == MULTIPLE_CHOICE:
            return await self.choice.score(question, answer_text)
        return await self.free_form.score(question, answer_text)


def scorer_for(
    benchmark: str,
    *,
    judge: Judge | None = None,
    limiter: anyio.CapacityLimiter | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Scorer:
    """The scorer of a benchmark name (as in ``BENCHMARKS``); ConfigError when unknown.

    judge: for judge-based benchmarks. limiter, timeout_s: for code execution.
    """
    spec_of(benchmark)
    if benchmark == "gsm8k":
        return NumericScorer()
    if benchmark == "math500":
        return MathScorer()
    if benchmark in ("humaneval", "mbpp"):
        return CodeScorer(timeout_s=timeout_s, limiter=limiter)
    if benchmark in MIXED:
        return MixEvalScorer(judge)
    return JudgeScorer(benchmark, judge)


async def score_answer(
    question: Question, answer_text: str, *, judge: Judge | None = None
) -> Score:
    """Score one response with its benchmark's default scorer."""
    return await scorer_for(question.benchmark, judge=judge).score(question, answer_text)
