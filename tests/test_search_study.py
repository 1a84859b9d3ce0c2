"""The search-efficiency study's replays and noise floors on synthetic score tables (no
agents): a replay never spends more than its budget and names a point it observed; the
floors are zero without noise and only noise makes them positive."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import ModuleType

import pytest

from itas.search.config import SearchConfig, load_search_config
from itas.search.space import Point
from itas.search.study import Scored, budgeted_run, space_for

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "search" / "sim_gsm8k_efficiency.yaml"
RANKED = ["strong", "medium", "weak"]
SIZES = {"search": 40, "confirm": 60, "heldout": 200}


def perf_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "search_efficiency", REPO / "perf" / "search_efficiency.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_table(config: SearchConfig, seed: int, noise: bool) -> dict[Point, Scored]:
    """Every valid point with a seeded true score; per-question scores are Bernoulli draws
    of it (``noise``) or the true score itself on every question."""
    rng = random.Random(seed)
    space = space_for(config, RANKED)
    table = {}
    for point in space.valid_points:
        truth = rng.uniform(0.3, 0.9)
        scores = {name: [float(rng.random() < truth) if noise else truth for _ in range(n)]
                  for name, n in SIZES.items()}
        cost = space.calls_per_query(point)
        table[point] = Scored(point, scores, {k: cost * n for k, n in SIZES.items()}, cost)
    return table


@pytest.mark.parametrize("strategy", ["random", "greedy", "bo"])
def test_a_replay_stays_within_its_budget_and_names_a_point_it_evaluated(
        strategy: str) -> None:
    config = load_search_config(CONFIG)
    space = space_for(config, RANKED)
    confirm_ids = [f"c{i}" for i in range(SIZES["confirm"])]
    table = synthetic_table(config, 0, noise=True)
    for seed in range(1 if strategy == "bo" else 5):
        rng = random.Random(seed)
        budget = rng.randrange(0, 2500)
        free = space.single_model_point() if rng.random() < 0.5 else None
        run = budgeted_run(config, space, table, strategy, seed, budget, free, confirm_ids)
        assert run["spent"] <= budget, (strategy, seed)
        assert Point(*run["picked"]) in table and Point(*run["naive"]) in table
        if run["trials"] == 0:  # nothing bought: the free point, if any, is all there is
            assert free is None or Point(*run["picked"]) == free, (strategy, seed)
        assert run["confirm_calls"] >= 0


def test_noise_floors_are_zero_without_noise() -> None:
    config = load_search_config(CONFIG)
    floors = perf_module().noise_floors(config, synthetic_table(config, 1, noise=False))
    assert floors["heldout_regret_all_search"] == pytest.approx(0.0, abs=1e-12)
    assert floors["heldout_split_half_regret"] == pytest.approx(0.0, abs=1e-12)


def test_noise_floors_grow_with_noise() -> None:
    config = load_search_config(CONFIG)
    module = perf_module()
    for seed in range(2):
        floors = module.noise_floors(config, synthetic_table(config, seed, noise=True))
        # Hundreds of points within a question of each other: the noisy pick misses.
        assert floors["heldout_regret_all_search"] > 0, seed
        assert floors["heldout_split_half_regret"] > 0, seed
