"""The search space: points, the architecture each point stands for, validity and budget.

A point fixes the Archon-style knobs (arXiv 2409.15254, section 4):

============== ============================================================================
models         how many of the best-ranked models generate (the controller ranks them first)
samples        samples each of those models draws
critic         0/1: a critic annotates every candidate
ranker_top_k   0 = no ranker; k = a listwise ranker keeps the best k
fusion_layers  layers of fusion; the last writes one answer
fusers         fused answers written by each fusion layer but the last (``n_outputs``)
verifier       0/1: a verifier keeps the candidates whose reasoning checks out
unit_tests     0/1: a unit-test generator (layer 1) and an evaluator that keeps the best one
vote           0/1: majority vote over what is left (only where more than one can be left)
============== ============================================================================

Layers, in Archon's order: generators (+ unit-test generator), critic, ranker, fusion
layers, verifier, unit-test evaluator, majority vote. Critic, ranker, fusers, verifier and
unit tests run on the judge model (the best-ranked model unless the config names one).
Every spec answers with its first final candidate (``final: first``): rankers and
evaluators put their best first, and a fusion layer ends with one answer.

Each point maps to exactly one architecture; points that would build the same one are
folded onto one canonical point (``fusers`` means nothing with fewer than two fusion layers;
a vote over one candidate is no vote), so a trial key names an architecture. A point is
*valid* when it is canonical, its spec passes ``itas.spec`` validation (e.g. a ranker's
top_k cannot exceed the candidates that reach it) and its calls per query when every output
parses (``itas.plan.estimate_cost(...).base_calls_per_query``, the worst case over candidate
counts) are within the budget; parse re-asks are paid from what the budget leaves, which the
orchestrator enforces (``itas.orchestrator.budget``). No I/O here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

from itas.errors import ConfigError
from itas.plan import estimate_cost
from itas.search.config import SearchConfig
from itas.spec import Architecture, parse_architecture

FINAL = "first"
UNIT_TEST_TOP_K = 1


class Point(NamedTuple):
    models: int
    samples: int
    critic: int
    ranker_top_k: int
    fusion_layers: int
    fusers: int
    verifier: int
    unit_tests: int
    vote: int


DIMENSIONS: tuple[str, ...] = Point._fields


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model as a spec names it (the config's pool settings stay with the deployment)."""

    name: str
    provider: str
    model: str
    max_tokens: int | None = None
    base_url: str | None = None  # the model's endpoint, part of its services' names
    api_key_env: str | None = None

    @classmethod
    def of(cls, model: Any) -> ModelRef:
        """From a config's ``ModelConfig`` (its endpoint settings, not its key, go along)."""
        endpoint = {k: v for k in ("base_url", "api_key_env")
                    if isinstance(v := model.settings.get(k), str)}
        return cls(model.name, model.provider, model.model, model.max_tokens, **endpoint)

    def component(self, technique: str, **fields: Any) -> dict[str, Any]:
        extra = {k: v for k, v in (("max_tokens", self.max_tokens), ("base_url", self.base_url),
                                   ("api_key_env", self.api_key_env)) if v is not None}
        return {"technique": technique, "provider": self.provider, "model": self.model,
                **extra, **fields}


@dataclass(frozen=True, slots=True)
class Dimension:
    """One knob and the values it may take, in order (neighbours are adjacent values)."""

    name: str
    values: tuple[int, ...]

    @property
    def low(self) -> int:
        return self.values[0]

    @property
    def high(self) -> int:
        return self.values[-1]

    @property
    def free(self) -> bool:
        return len(self.values) > 1


@dataclass(frozen=True, slots=True)
class Verdict:
    valid: bool
    reason: str = ""  # why not: "not canonical", "over budget: 31 > 24", a spec error
    calls_per_query: int | None = None


#: What each part of a ``point_key`` means, printed under every table of keys.
KEY_LEGEND = ("key: m = models used, s = samples per model, c = critic (1: on), r = ranker "
              "top_k (0: no ranker), fNxK = N fusion layers of K fusers, v = verifier (1: on), "
              "u = unit tests (1: on), mv = majority vote (1: on)")


def point_key(point: Point) -> str:
    """A short stable name of a point, used as trial key and architecture name."""
    return (f"m{point.models}-s{point.samples}-c{point.critic}-r{point.ranker_top_k}-"
            f"f{point.fusion_layers}x{point.fusers}-v{point.verifier}-u{point.unit_tests}-"
            f"mv{point.vote}")


def point_from_dict(data: Mapping[str, Any]) -> Point:
    try:
        return Point(**{name: int(data[name]) for name in DIMENSIONS})
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"not a search point: {dict(data)!r} ({e})") from e


def dimensions_for(config: SearchConfig) -> tuple[Dimension, ...]:
    """The value lists of every dimension; a technique not allowed pins its knob to off."""
    allowed = set(config.techniques)
    space = config.space

    def span(bounds: tuple[int, int]) -> tuple[int, ...]:
        return tuple(range(bounds[0], bounds[1] + 1))

    def switch(technique: str) -> tuple[int, ...]:
        return (0, 1) if technique in allowed else (0,)

    return (
        Dimension("models", span(space.models)),
        Dimension("samples", span(space.samples)),
        Dimension("critic", switch("critic")),
        Dimension("ranker_top_k",
                  (0, *span(space.ranker_top_k)) if "ranker" in allowed else (0,)),
        Dimension("fusion_layers", span(space.fusion_layers) if "fuser" in allowed else (0,)),
        Dimension("fusers", span(space.fusers) if "fuser" in allowed else (space.fusers[0],)),
        Dimension("verifier", switch("verifier")),
        Dimension("unit_tests", switch("unit_test_generator")),
        Dimension("vote", switch("majority_vote")),
    )


class SearchSpace:
    """Points of one search, over models already ranked best first."""

    def __init__(self, dimensions: Sequence[Dimension], ranked_models: Sequence[ModelRef],
                 judge: ModelRef, budget_calls: int | None) -> None:
        if tuple(d.name for d in dimensions) != DIMENSIONS:
            raise ConfigError(f"search space: dimensions must be {', '.join(DIMENSIONS)}")
        if dimensions[0].high > len(ranked_models):
            raise ConfigError(f"search space: 'models' goes up to {dimensions[0].high} but "
                              f"only {len(ranked_models)} model(s) are ranked")
        self.dimensions = tuple(dimensions)
        self.ranked_models = tuple(ranked_models)
        self.judge = judge
        self.budget_calls = budget_calls
        self._by_name = {d.name: d for d in self.dimensions}

    @classmethod
    def from_config(cls, config: SearchConfig, ranked_models: Sequence[ModelRef]
                    ) -> SearchSpace:
        """The space of ``config`` once its models are ranked (best first)."""
        if config.judge == "best":
            judge = ranked_models[0]
        else:
            judge = next(m for m in ranked_models if m.name == config.judge)
        return cls(dimensions_for(config), ranked_models, judge, config.budget.calls_per_query)

    # -- points ------------------------------------------------------------------------

    @property
    def free_dimensions(self) -> tuple[Dimension, ...]:
        """Dimensions with more than one value: the optimizer's parameters."""
        return tuple(d for d in self.dimensions if d.free)

    def canonical(self, point: Point) -> Point:
        """The point that builds the same architecture, with unused knobs at their lowest."""
        fusers = point.fusers if point.fusion_layers >= 2 else self._by_name["fusers"].low
        vote = point.vote if self._most_before_vote(point) > 1 else self._by_name["vote"].low
        return point._replace(fusers=fusers, vote=vote)

    def in_bounds(self, point: Point) -> bool:
        return all(getattr(point, d.name) in d.values for d in self.dimensions)

    def single_model_point(self) -> Point | None:
        """The best-ranked model alone, one sample: the baseline, when the space has it."""
        point = Point(1, 1, 0, 0, 0, self._by_name["fusers"].low, 0, 0, 0)
        return point if self.in_bounds(point) and self.check(point).valid else None

    def check(self, point: Point) -> Verdict:
        if not self.in_bounds(point):
            return Verdict(False, "out of bounds")
        if self.canonical(point) != point:
            return Verdict(False, "not canonical")
        try:
            arch = self.architecture(point)
        except ConfigError as e:
            return Verdict(False, str(e))
        calls = estimate_cost(arch).base_calls_per_query
        if self.budget_calls is not None and calls > self.budget_calls:
            return Verdict(False, f"over budget: {calls} > {self.budget_calls} calls per query",
                           calls)
        return Verdict(True, "", calls)

    @cached_property
    def valid_points(self) -> tuple[Point, ...]:
        """Every valid point, in a fixed order (the product of the value lists)."""
        return tuple(p for p in self._all_canonical() if self.check(p).valid)

    @cached_property
    def _valid_set(self) -> frozenset[Point]:
        return frozenset(self.valid_points)

    def is_valid(self, point: Point) -> bool:
        return point in self._valid_set

    def calls_per_query(self, point: Point) -> int:
        return estimate_cost(self.architecture(point)).base_calls_per_query

    def _all_canonical(self) -> Iterator[Point]:
        for values in itertools.product(*(d.values for d in self.dimensions)):
            point = Point(*values)
            if self.canonical(point) == point:
                yield point

    def neighbours(self, point: Point) -> list[Point]:
        """Valid points one step away along one dimension (after canonicalising)."""
        found: dict[Point, None] = {}
        for d in self.free_dimensions:
            index = d.values.index(getattr(point, d.name))
            for step in (-1, 1):
                if 0 <= index + step < len(d.values):
                    moved = self.canonical(point._replace(**{d.name: d.values[index + step]}))
                    if moved != point and self.is_valid(moved):
                        found[moved] = None
        return list(found)

    # -- architectures -------------------------------------------------------------------

    def spec(self, point: Point) -> dict[str, Any]:
        """The architecture mapping of a point (not yet validated)."""
        judge = self.judge
        first = [m.component("generator", samples=point.samples)
                 for m in self.ranked_models[:point.models]]
        if point.unit_tests:
            first.append(judge.component("unit_test_generator"))
        layers: list[list[dict[str, Any]]] = [first]
        if point.critic:
            layers.append([judge.component("critic")])
        if point.ranker_top_k:
            layers.append([judge.component("ranker", top_k=point.ranker_top_k)])
        for i in range(point.fusion_layers):
            outputs = 1 if i == point.fusion_layers - 1 else point.fusers
            layers.append([judge.component("fuser", n_outputs=outputs)])
        if point.verifier:
            layers.append([judge.component("verifier")])
        if point.unit_tests:
            layers.append([judge.component("unit_test_evaluator", top_k=UNIT_TEST_TOP_K)])
        if point.vote:
            layers.append([{"technique": "majority_vote"}])
        described = ", ".join(f"{m.name} x{point.samples}"
                              for m in self.ranked_models[:point.models])
        return {"name": point_key(point), "description": f"ITAS point: {described}",
                "final": FINAL, "layers": layers}

    def architecture(self, point: Point) -> Architecture:
        """The validated architecture of a point; ConfigError if the spec is invalid."""
        return parse_architecture(self.spec(point), f"search point {point_key(point)}")

    def _most_before_vote(self, point: Point) -> int:
        """Most candidates that can reach the vote layer (static, from the flow rules)."""
        most = point.models * point.samples
        if point.ranker_top_k:
            most = min(most, point.ranker_top_k)
        if point.fusion_layers:
            most = 1
        if point.unit_tests:
            most = min(most, UNIT_TEST_TOP_K)
        return most
