"""Search strategies over one interface: ``suggest(n)`` points, then ``observe(point, value)``.

All three choose only among the space's valid points (canonical, valid spec, within the
call budget), so no evaluation is ever spent on a point over budget, and never suggest a
point that was observed or is still pending. All are deterministic for a seed and a
sequence of observations. ``value`` is the objective, higher is better; ``variance`` is
the variance of that value as an estimate (a score on n questions is noisy: about
p(1 - p) / n), which only BO uses.

- ``RandomSearch``: a seeded permutation of the valid points, in order.
- ``GreedySearch``: hill climbing: evaluate the unevaluated neighbours (one step along one
  dimension, in dimension order) of the best point so far; when the best point's
  neighbourhood is exhausted, jump to the next point of a seeded permutation.
- ``BayesianSearch``: ``bayes_opt`` (bayesian-optimization 3.x): a Gaussian process
  (Matern 5/2 with one length scale per dimension) over the integer knobs, and UCB, EI or
  POI as acquisition. The acquisition is maximised exactly over the valid points not yet
  observed or pending (the space is a few thousand points; scoring them all is cheaper and
  surer than the library's continuous optimiser followed by rounding, which proposes
  duplicates and points over budget). The GP is told how noisy the observations are:
  before each suggestion its ``alpha`` (the noise added to the kernel's diagonal, in the
  units of the normalised targets) is the mean observation variance over the variance of
  the targets, so scores a question apart are not fitted as real differences and the
  acquisition does not chase the luckiest trial. Several trials at once use the library's
  ``ConstantLiar``: each pending point is registered with a constant "lie" while the next
  is chosen. Until ``initial_random`` points are observed or pending (free observations,
  like the controller's single-model point, count), points come from a seeded permutation.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import numpy as np
from bayes_opt import BayesianOptimization, acquisition
from sklearn.gaussian_process.kernels import Matern
from threadpoolctl import threadpool_limits

from itas.errors import ConfigError
from itas.search.space import Point, SearchSpace

GP_ALPHA = 1e-4  # least observation noise (targets normalised): keeps the fit well-posed
MAX_ALPHA = 10.0  # noise beyond this much of the targets' spread leaves the GP flat anyway
# Random restarts of the hyperparameter fit: 3x slower and no better on our spaces; each fit
# starts from unit length scales, which keeps suggestions a function of the observations.
GP_RESTARTS = 0
# The GP's matrices are tiny (one row per trial): BLAS threads only contend with the
# evaluations for the CPU, and slow each fit by 10x on a busy two-core machine.
BLAS_THREADS = 1
LENGTH_SCALE_BOUNDS = (0.05, 50.0)
LIAR: Literal["max"] = "max"  # bayes_opt's default; pending points look as good as the best so far


class Strategy(Protocol):
    name: str

    def suggest(self, n: int) -> list[Point]: ...
    def observe(self, point: Point, value: float, variance: float = 0.0) -> None: ...


class _Base:
    """Bookkeeping shared by the strategies: what was observed and what is pending."""

    name = "base"

    def __init__(self, space: SearchSpace, seed: int) -> None:
        self.space = space
        self.seed = seed
        self.observed: dict[Point, float] = {}
        self.variances: dict[Point, float] = {}
        self.pending: set[Point] = set()
        order = list(space.valid_points)
        random.Random(f"{self.name}:{seed}").shuffle(order)
        self._order = order
        self._rank = {p: i for i, p in enumerate(order)}
        self._cursor = 0

    def observe(self, point: Point, value: float, variance: float = 0.0) -> None:
        if not self.space.is_valid(point):
            raise ConfigError(f"{self.name}: observed point {point} is not in the space")
        if variance < 0:
            raise ConfigError(f"{self.name}: observation variance must be >= 0, got {variance}")
        self.pending.discard(point)
        self.observed[point] = float(value)
        self.variances[point] = float(variance)
        self._observed_hook(point, float(value))

    def _observed_hook(self, point: Point, value: float) -> None:
        """Subclasses update their model here."""

    def _free(self, point: Point) -> bool:
        return point not in self.observed and point not in self.pending

    def _next_random(self) -> Point | None:
        while self._cursor < len(self._order):
            point = self._order[self._cursor]
            self._cursor += 1
            if self._free(point):
                return point
        return None

    def _take(self, point: Point | None, out: list[Point]) -> bool:
        if point is None:
            return False
        self.pending.add(point)
        out.append(point)
        return True


class RandomSearch(_Base):
    name = "random"

    def suggest(self, n: int) -> list[Point]:
        out: list[Point] = []
        while len(out) < n and self._take(self._next_random(), out):
            pass
        return out


class GreedySearch(_Base):
    name = "greedy"

    def suggest(self, n: int) -> list[Point]:
        out: list[Point] = []
        while len(out) < n:
            point = self._next_neighbour() or self._next_random()
            if not self._take(point, out):
                break
        return out

    def _next_neighbour(self) -> Point | None:
        if not self.observed:
            return None
        best = max(self.observed, key=lambda p: (self.observed[p], -self._rank[p]))
        return next((p for p in self.space.neighbours(best) if self._free(p)), None)


class _OnValidPoints:
    """Mixin for a bayes_opt acquisition: maximise it over a finite candidate set.

    ``bayes_opt``'s ``AcquisitionFunction.suggest`` fits the GP, builds the function to
    minimise (minus the acquisition) and hands it to ``_acq_min``; overriding that one
    step keeps the library's GP fitting, acquisition formulas and ``ConstantLiar``
    bookkeeping while the argmax runs over the points we allow. Ties go to the first
    candidate in the (seeded) candidate order.
    """

    candidates: np.ndarray
    candidate_points: list[Point]
    excluded: set[Point]

    def _acq_min(self, acq: Any, space: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        taken = {tuple(row) for row in np.asarray(space.params)}
        rows = [i for i, p in enumerate(self.candidate_points)
                if p not in self.excluded and tuple(self.candidates[i]) not in taken]
        if not rows:
            raise _Exhausted
        values = acq(self.candidates[rows])
        return np.asarray(self.candidates[rows[int(np.argmin(values))]], dtype=float)


class _Exhausted(Exception):
    """Every valid point is observed or pending."""


class _DiscreteUCB(_OnValidPoints, acquisition.UpperConfidenceBound):
    pass


class _DiscreteEI(_OnValidPoints, acquisition.ExpectedImprovement):
    pass


class _DiscretePOI(_OnValidPoints, acquisition.ProbabilityOfImprovement):
    pass


DiscreteAcquisition = _DiscreteUCB | _DiscreteEI | _DiscretePOI


def make_acquisition(kind: str, *, kappa: float, xi: float) -> DiscreteAcquisition:
    if kind == "ucb":
        return _DiscreteUCB(kappa=kappa)
    if kind == "ei":
        return _DiscreteEI(xi=xi)
    if kind == "poi":
        return _DiscretePOI(xi=xi)
    raise ConfigError(f"unknown acquisition {kind!r}; use ucb, ei or poi")


class BayesianSearch(_Base):
    name = "bo"

    def __init__(self, space: SearchSpace, seed: int, *, initial_random: int = 5,
                 acquisition_kind: str = "ucb", kappa: float = 2.576, xi: float = 0.01
                 ) -> None:
        super().__init__(space, seed)
        self.initial_random = initial_random
        self._dims = space.free_dimensions
        if not self._dims:
            raise ConfigError("bo: the space has a single point; nothing to optimise")
        # Float bounds: the candidates are integer points already, and bayes_opt's integer
        # parameters (rounding inside the kernel) are flagged experimental.
        pbounds = {d.name: (float(d.low), float(d.high)) for d in self._dims}
        self._base = make_acquisition(acquisition_kind, kappa=kappa, xi=xi)
        self._optimizer = BayesianOptimization(
            f=None, pbounds=pbounds, acquisition_function=acquisition.ConstantLiar(
                self._base, strategy=LIAR), random_state=seed, verbose=0)
        self._optimizer.set_gp_params(
            kernel=Matern(nu=2.5, length_scale=np.ones(len(self._dims)),
                          length_scale_bounds=LENGTH_SCALE_BOUNDS),
            alpha=GP_ALPHA, n_restarts_optimizer=GP_RESTARTS)
        self._keys = list(self._optimizer.space.keys)
        self._base.candidate_points = list(self._order)
        self._base.candidates = np.array([self._array(p) for p in self._order], dtype=float)
        self._base.excluded = self.pending

    def _array(self, point: Point) -> list[float]:
        return [float(getattr(point, key)) for key in self._keys]

    def _point(self, params: Mapping[str, Any]) -> Point:
        values = {key: round(float(params[key])) for key in self._keys}
        fixed = {d.name: d.low for d in self.space.dimensions if not d.free}
        return Point(**{**fixed, **values})

    def _observed_hook(self, point: Point, value: float) -> None:
        self._optimizer.register(params=dict(zip(self._keys, self._array(point), strict=True)),
                                 target=value)

    def noise_alpha(self) -> float:
        """The GP's ``alpha`` for the observations so far (see the module docstring)."""
        spread = float(np.var(list(self.observed.values()))) if len(self.observed) > 1 else 0.0
        noise = float(np.mean(list(self.variances.values()))) if self.variances else 0.0
        if spread <= 0 or noise <= 0:
            return GP_ALPHA
        return min(MAX_ALPHA, max(GP_ALPHA, noise / spread))

    def suggest(self, n: int) -> list[Point]:
        out: list[Point] = []
        while len(out) < n:
            if len(self.observed) + len(self.pending) < max(1, self.initial_random) \
                    or not self.observed:
                point = self._next_random()
            else:
                try:
                    self._optimizer.set_gp_params(alpha=self.noise_alpha())
                    with threadpool_limits(limits=BLAS_THREADS):
                        point = self._point(self._optimizer.suggest())
                except _Exhausted:
                    point = None
            if not self._take(point, out):
                break
        return out


def make_strategy(name: str, space: SearchSpace, seed: int, **bo_options: Any) -> Strategy:
    if name == "bo":
        return BayesianSearch(space, seed, **bo_options)
    if name == "random":
        return RandomSearch(space, seed)
    if name == "greedy":
        return GreedySearch(space, seed)
    raise ConfigError(f"unknown strategy {name!r}; use bo, random or greedy")
