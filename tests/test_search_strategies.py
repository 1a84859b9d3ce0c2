"""Strategies: deterministic per seed, never repeat or pick invalid points, and BO beats
random search on a smooth objective over the space."""

from __future__ import annotations

import statistics

import pytest

from itas.search.space import Point, SearchSpace
from itas.search.strategies import BayesianSearch, GreedySearch, RandomSearch, make_strategy
from tests.test_search_space import MODELS, config, space_of


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return space_of(config())


def objective(point: Point) -> float:
    """A smooth stand-in for accuracy: more samples and a ranker help, critics cost."""
    return (0.5 + 0.04 * point.samples * point.models - 0.003 * (point.samples * point.models) ** 2
            + 0.05 * (point.ranker_top_k == 2) + 0.03 * point.fusion_layers + 0.004 * point.fusers
            - 0.02 * point.critic + 0.01 * point.verifier - 0.01 * point.vote
            - 0.005 * point.unit_tests)


def drive(strategy, steps: int, batch: int = 1, stop: frozenset[Point] = frozenset()
          ) -> list[Point]:
    seen: list[Point] = []
    while len(seen) < steps and not stop & set(seen):
        points = strategy.suggest(batch)
        if not points:
            break
        for point in points:
            strategy.observe(point, objective(point))
        seen.extend(points)
    return seen


@pytest.mark.parametrize("name", ["bo", "random", "greedy"])
def test_deterministic_per_seed_and_no_repeats(space: SearchSpace, name: str) -> None:
    options = {"initial_random": 4} if name == "bo" else {}
    first = drive(make_strategy(name, space, 7, **options), 14)
    again = drive(make_strategy(name, space, 7, **options), 14)
    other = drive(make_strategy(name, space, 8, **options), 14)
    assert first == again
    assert first != other
    assert len(set(first)) == len(first) == 14
    assert all(space.is_valid(p) for p in first)


def test_parallel_suggestions_are_distinct_and_pending_is_respected(space: SearchSpace) -> None:
    bo = BayesianSearch(space, 0, initial_random=3)
    drive(bo, 6)
    batch = bo.suggest(4)  # ConstantLiar: four pending points at once
    assert len(set(batch)) == 4
    assert not set(batch) & set(bo.observed)
    assert bo.pending == set(batch)
    more = bo.suggest(2)
    assert not set(more) & set(batch)


def test_bo_finds_the_optimum_faster_than_random(space: SearchSpace) -> None:
    top = max(objective(p) for p in space.valid_points)
    best = frozenset(p for p in space.valid_points if objective(p) == top)
    cap = 120
    bo_steps, random_steps = [], []
    for seed in range(3):
        bo = drive(BayesianSearch(space, seed, initial_random=5), cap, stop=best)
        bo_steps.append(len(bo) if best & set(bo) else cap * 10)
        rnd = drive(RandomSearch(space, seed), len(space.valid_points), stop=best)
        random_steps.append(len(rnd))
    assert statistics.mean(bo_steps) < statistics.mean(random_steps) / 3


def test_greedy_climbs_from_the_best_point(space: SearchSpace) -> None:
    greedy = GreedySearch(space, 0)
    start = space.single_model_point()
    greedy.observe(start, objective(start))
    step = greedy.suggest(1)[0]
    assert step in space.neighbours(start)


def test_random_exhausts_the_space_exactly_once() -> None:
    space = space_of(config(techniques=["ranker"], space={"models": [1, 2], "samples": [1, 2],
                                                          "ranker_top_k": [1, 2]}))
    points = drive(RandomSearch(space, 1), 1000)
    assert sorted(points) == sorted(space.valid_points)
    assert RandomSearch(space, 1).suggest(0) == []
    assert MODELS[0] == space.ranked_models[0].name


@pytest.mark.parametrize("name", ["bo", "random", "greedy"])
def test_a_resumed_strategy_continues_as_if_never_stopped(space: SearchSpace, name: str) -> None:
    """Resume replays the stored observations in order; the suggestions that follow are
    the ones an uninterrupted run makes."""
    options = {"initial_random": 3} if name == "bo" else {}
    whole = drive(make_strategy(name, space, 5, **options), 10)
    resumed = make_strategy(name, space, 5, **options)
    for point in whole[:6]:
        resumed.observe(point, objective(point))
    assert drive(resumed, 4) == whole[6:]
