"""Scoring one architecture on a set of questions, as a ``Measurement`` the store keeps.

The search evaluates through ``itas.evaluation.evaluate.evaluate`` (the API behind
``itas eval``) with whatever ``QueryRunner`` it is given: ``ViaBroker`` for the deployed
mesh, ``Orchestrator`` over an ``InProcessCaller`` for in-process studies. Per-query errors
are scored 0 by that API, never dropped. With ``results_path`` every answered question is
on disk at once, so a trial cut off by a kill resumes with only its missing questions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from itas.benchmarks import Question
from itas.evaluation.evaluate import evaluate
from itas.orchestrator.runner import QueryRunner
from itas.search.store import Measurement
from itas.spec import Architecture

Progress = Callable[[int], None]  # called with 1 per question done


async def measure(arch: Architecture, questions: Sequence[Question], runner: QueryRunner, *,
                  concurrency: int, progress: Progress | None = None,
                  results_path: Path | None = None, oracle_tests: bool = False
                  ) -> Measurement:
    """The score (with its standard error and every question's score), calls and cost of
    ``arch`` on ``questions``; ``oracle_tests`` as in ``evaluate``."""
    started = time.perf_counter()
    summary = await evaluate(arch, questions, runner, concurrency=concurrency,
                             results_path=results_path, oracle_tests=oracle_tests,
                             progress=(lambda *_: progress(1)) if progress else False)
    return Measurement(
        score=summary.score, n=summary.n, correct=summary.correct, errors=summary.errors,
        calls=summary.calls, cached_calls=summary.cached_calls, tokens=summary.tokens,
        cost_usd=summary.cost_usd, latency_s=summary.latency_s,
        time_s=time.perf_counter() - started, stderr=summary.stderr,
        scores=summary.scores(), cost_known=summary.cost_known)
