"""Which scorer grades which benchmark (see ``score`` for the interface).

A benchmark defined by a user (``custom``) names one of the built-in scorers
(``SCORER_KINDS``) on each of its questions (``Question.scorer``); ``scorer_for`` takes
that kind, so a question carries everything needed to grade it, in any process.

Rule-based: gsm8k (final number), math500 (answer equivalence), humaneval and
mbpp (execution in the sandbox), the multiple-choice half of mixeval_hard
(option letter). How an answer is read out of a response lives in
``itas.answers`` (shared with majority_vote); this module only compares. Judge-based: mt_bench, arena_hard, alpaca_eval and the
free-form half of mixeval_hard; pass ``judge`` to score them.
"""

from __future__ import annotations

import anyio

from itas.answers.choice import LETTERS, chosen_option
from itas.answers.exact import matches
from itas.answers.mathequiv import equivalent, extract_answer
from itas.answers.numeric import extract_number, format_number, same_number
from itas.benchmarks.codeexec import DEFAULT_TIMEOUT_S, CodeScorer
from itas.benchmarks.custom import SCORER_KINDS
from itas.benchmarks.mixeval import MULTIPLE_CHOICE
from itas.benchmarks.question import Question
from itas.benchmarks.registry import spec_of
from itas.benchmarks.score import Judge, JudgeScorer, Score, Scorer, verdict
from itas.errors import ConfigError

MIXED = ("mixeval_hard", "mixeval_hard_mc")


class NumericScorer:
    """Scores a response by its final number against ``question.reference``."""

    needs_judge = False

    async def score(self, question: Question, answer_text: str) -> Score:
        return score_number(str(question.reference), answer_text)


def score_number(reference: str, answer_text: str) -> Score:
    target = extract_number(reference)
    if target is None:
        raise ValueError(f"reference {reference!r} holds no number")
    got = extract_number(answer_text)
    if got is None:
        return verdict(False, f"no number found; expected {format_number(target)}")
    ok = same_number(got, target)
    return verdict(ok, f"extracted {format_number(got)}; expected {format_number(target)}")


def score_math(reference: str, answer_text: str) -> Score:
    got = extract_answer(answer_text)
    if got is None:
        return verdict(False, f"no final answer found; expected {reference}")
    ok = equivalent(got, reference)
    return verdict(ok, f"extracted {got!r}; expected {reference!r}")


class MathScorer:
    """Scores a response by its boxed final answer against ``question.reference``."""

    needs_judge = False

    async def score(self, question: Question, answer_text: str) -> Score:
        return score_math(str(question.reference), answer_text)


class ChoiceScorer:
    """Correct when the chosen option's index is among ``question.reference``."""

    needs_judge = False

    async def score(self, question: Question, answer_text: str) -> Score:
        options = list(question.metadata.get("options") or [])
        targets = list(question.reference or [])
        picked = chosen_option(answer_text, options)
        expected = ", ".join(LETTERS[t] for t in targets)
        if picked is None:
            return verdict(False, f"no option chosen; expected {expected}")
        return verdict(picked in targets, f"chose {LETTERS[picked]}; expected {expected}")


class ExactScorer:
    """Correct when the response's final answer is one of the accepted answers
    (``question.reference``: a text or a list of texts), after normalising."""

    needs_judge = False

    async def score(self, question: Question, answer_text: str) -> Score:
        ref = question.reference
        accepted = [ref] if isinstance(ref, str) else [str(r) for r in ref or ()]
        ok, got = matches(answer_text, accepted)
        shown = " | ".join(accepted)
        if got is None:
            return verdict(False, f"no answer found; expected {shown}")
        return verdict(ok, f"read {got!r}; expected {shown}")


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


def scorer_of_kind(
    kind: str,
    benchmark: str,
    *,
    judge: Judge | None = None,
    limiter: anyio.CapacityLimiter | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Scorer:
    """A built-in scorer by kind (``SCORER_KINDS``); ConfigError when unknown."""
    if kind == "numeric":
        return NumericScorer()
    if kind == "exact":
        return ExactScorer()
    if kind == "choice":
        return ChoiceScorer()
    if kind == "math":
        return MathScorer()
    if kind == "code":
        return CodeScorer(timeout_s=timeout_s, limiter=limiter)
    if kind == "judge":
        return JudgeScorer(benchmark, judge)
    raise ConfigError(f"unknown scorer {kind!r}; use one of {', '.join(SCORER_KINDS)}")


def scorer_for(
    benchmark: str,
    *,
    kind: str = "",
    judge: Judge | None = None,
    limiter: anyio.CapacityLimiter | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Scorer:
    """The scorer of a benchmark: by ``kind`` when given (a user-defined benchmark's
    ``Question.scorer``), else by name (as in ``BENCHMARKS``); ConfigError when unknown.

    judge: for judge-based benchmarks. limiter, timeout_s: for code execution.
    """
    if kind:
        return scorer_of_kind(kind, benchmark, judge=judge, limiter=limiter,
                              timeout_s=timeout_s)
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
    scorer = scorer_for(question.benchmark, kind=question.scorer, judge=judge)
    return await scorer.score(question, answer_text)
