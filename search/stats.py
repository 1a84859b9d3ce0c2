"""The statistics the search reports with its scores: standard errors and paired differences.

A score on n questions is an estimate; two architectures scored on the same questions
are compared by the per-question differences (paired), which removes the questions'
shared difficulty from the noise. ``paired`` gives the mean difference, its standard
error, a 95% interval, the normal-approximation probability that the first is better
and the same from a seeded paired bootstrap (resampling questions), so "beats the best
single model" is said with a confidence, not a bare ``>``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

Z_95 = 1.96
BOOTSTRAP_RESAMPLES = 2000


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n)); (0, 0) if empty."""
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    mean = math.fsum(values) / n
    if n == 1:
        return mean, 0.0
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@dataclass(frozen=True, slots=True)
class PairedDifference:
    """``first - second`` on the questions both were scored on."""

    n: int
    mean: float
    stderr: float
    low: float  # 95% interval
    high: float
    p_better: float  # P(first's true score > second's), normal approximation
    bootstrap_p_better: float  # the same, paired bootstrap over questions

    @property
    def significant(self) -> bool:
        """The 95% interval excludes zero."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired(first: Mapping[str, float], second: Mapping[str, float], *, seed: int = 0,
           resamples: int = BOOTSTRAP_RESAMPLES) -> PairedDifference:
    """Compare two score maps (question id -> score) on their common questions;
    ``resamples=0`` skips the bootstrap (its p is then the normal one).

    With no common question the difference is 0 with p 0.5; with no spread at all the
    interval is a point and p is 1, 0 or 0.5 by the sign of the mean."""
    common = sorted(set(first) & set(second))
    diffs = [first[q] - second[q] for q in common]
    mean, se = mean_and_stderr(diffs)
    if not diffs:
        return PairedDifference(0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5)
    if se == 0:
        p = 1.0 if mean > 0 else 0.0 if mean < 0 else 0.5
    else:
        p = normal_cdf(mean / se)
    return PairedDifference(len(diffs), mean, se, mean - Z_95 * se, mean + Z_95 * se, p,
                            _bootstrap(diffs, seed, resamples) if resamples else p)


def _bootstrap(diffs: Sequence[float], seed: int, resamples: int) -> float:
    """Share of resamples (questions drawn with replacement) whose total favours the first;
    ties count half."""
    rng = random.Random(seed)
    n = len(diffs)
    wins = 0.0
    for _ in range(resamples):
        total = math.fsum(diffs[rng.randrange(n)] for _ in range(n))
        wins += 1.0 if total > 0 else 0.5 if total == 0 else 0.0
    return wins / resamples
