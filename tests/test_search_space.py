"""The search space: every valid point is a valid architecture within budget, the count of
valid points is what the rules give, and configs fail with the file and field named."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from itas.errors import ConfigError
from itas.plan import estimate_cost
from itas.search.config import load_search_config, parse_search_config
from itas.search.space import (
    DIMENSIONS,
    ModelRef,
    Point,
    SearchSpace,
    point_from_dict,
    point_key,
)
from itas.spec import parse_architecture

REPO = Path(__file__).resolve().parents[1]
MODELS = ("strong", "medium", "weak")
ALL_TECHNIQUES = ["critic", "ranker", "fuser", "verifier", "unit_test_generator",
                  "unit_test_evaluator", "majority_vote"]


def config(**overrides: object) -> dict:
    data = {
        "name": "t",
        "models": [{"name": m, "provider": "sim", "model": m} for m in MODELS],
        "techniques": ALL_TECHNIQUES,
        "budget": {"calls_per_query": 30},
        "space": {"models": [1, 3], "samples": [1, 4], "ranker_top_k": [1, 3],
                  "fusion_layers": [0, 2], "fusers": [1, 3]},
    }
    data.update(overrides)
    return data


def space_of(data: dict) -> SearchSpace:
    cfg = parse_search_config(data, "test.yaml")
    return SearchSpace.from_config(cfg, [ModelRef(m, "sim", m) for m in MODELS])


def test_every_valid_point_is_a_valid_spec_within_budget() -> None:
    space = space_of(config())
    points = space.valid_points
    assert len(points) > 500
    for point in random.Random(0).sample(points, 300):
        spec = space.spec(point)
        arch = parse_architecture(spec, "check")  # validates; raises on a bad spec
        assert estimate_cost(arch).base_calls_per_query <= 30
        assert arch.name == point_key(point)
        generators = [c for c in arch.layers[0] if c.technique == "generator"]
        assert [g.model for g in generators] == list(MODELS[:point.models])
        assert all(g.samples == point.samples for g in generators)
        techniques = {c.technique for _, _, c in arch.components()}
        assert ("critic" in techniques) == bool(point.critic)
        assert ("ranker" in techniques) == bool(point.ranker_top_k)
        assert ("verifier" in techniques) == bool(point.verifier)
        assert ("unit_test_evaluator" in techniques) == bool(point.unit_tests)
        assert sum(1 for layer in arch.layers if layer[0].technique == "fuser") \
            == point.fusion_layers


def test_count_of_valid_points_matches_the_rules() -> None:
    """Count by brute force over the raw product with the rules written out here, and
    compare with the space's own enumeration."""
    space = space_of(config())
    expected = 0
    for m, s, c, r, f, fw, v, u, mv in itertools.product(
            range(1, 4), range(1, 5), (0, 1), (0, 1, 2, 3), range(3), range(1, 4),
            (0, 1), (0, 1), (0, 1)):
        if f < 2 and fw != 1:
            continue  # fusers only matter with two or more fusion layers
        candidates = m * s
        if r > candidates:
            continue  # a ranker cannot keep more than reach it
        left = min(candidates, r) if r else candidates
        left = 1 if f else left
        left = 1 if u else left
        if mv and left == 1:
            continue  # a vote over one candidate is no vote
        calls = m * s + u + c * candidates + (1 if r else 0)
        calls += (f - 1) * fw + 1 if f else 0
        into_verifier = 1 if f else (min(candidates, r) if r else candidates)
        calls += v * into_verifier + u * into_verifier
        if calls <= 30:
            expected += 1
    assert len(space.valid_points) == expected


def test_canonical_folding_and_validity_reasons() -> None:
    space = space_of(config())
    raw = Point(2, 2, 0, 0, 1, 3, 0, 0, 0)
    assert space.canonical(raw).fusers == 1
    assert space.check(raw).reason == "not canonical"
    assert "top_k" in space.check(Point(1, 1, 0, 2, 0, 1, 0, 0, 0)).reason
    over = Point(3, 4, 1, 0, 0, 1, 1, 0, 0)  # 12 + 12 + 12 calls
    verdict = space.check(over)
    assert not verdict.valid and verdict.reason.startswith("over budget")
    assert verdict.calls_per_query == 36
    assert space.check(Point(9, 1, 0, 0, 0, 1, 0, 0, 0)).reason == "out of bounds"


def test_techniques_not_allowed_pin_their_knobs() -> None:
    space = space_of(config(techniques=["ranker"]))
    free = {d.name for d in space.free_dimensions}
    assert free == {"models", "samples", "ranker_top_k"}
    assert all(p.critic == 0 and p.fusion_layers == 0 and p.vote == 0
               for p in space.valid_points)


def test_neighbours_are_valid_one_step_moves() -> None:
    space = space_of(config())
    point = Point(2, 2, 0, 2, 1, 1, 0, 0, 0)
    neighbours = space.neighbours(point)
    assert neighbours and all(space.is_valid(n) for n in neighbours)
    for n in neighbours:
        changed = [d for d in DIMENSIONS if getattr(n, d) != getattr(point, d)]
        assert 1 <= len(changed) <= 2  # one move, plus a knob it made unused


def test_point_round_trip_and_single_model_point() -> None:
    space = space_of(config())
    point = space.valid_points[17]
    assert point_from_dict(point._asdict()) == point
    with pytest.raises(ConfigError, match="not a search point"):
        point_from_dict({"models": 1})
    single = space.single_model_point()
    assert single is not None
    arch = space.architecture(single)
    assert len(arch.layers) == 1 and arch.layers[0][0].model == "strong"


def test_config_errors_name_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"test.yaml: space.samples: .*min > max"):
        parse_search_config(config(space={"samples": [4, 1]}), "test.yaml")
    with pytest.raises(ConfigError, match=r"test.yaml: budget: Field required"):
        parse_search_config({k: v for k, v in config().items() if k != "budget"}, "test.yaml")
    with pytest.raises(ConfigError, match=r"test.yaml: search.acquisition.kind"):
        parse_search_config(config(search={"acquisition": {"kind": "thompson"}}), "test.yaml")
    with pytest.raises(ConfigError, match=r"test.yaml: models.0.provider"):
        parse_search_config(config(models=[{"name": "a", "provider": "nope", "model": "x"}]),
                            "test.yaml")
    with pytest.raises(ConfigError, match=r"test.yaml: serach: unknown field"):
        parse_search_config(config(serach={}), "test.yaml")
    with pytest.raises(ConfigError, match="unit_test_generator and unit_test_evaluator"):
        parse_search_config(config(techniques=["unit_test_generator"]), "test.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_search_config(bad)


def test_shipped_configs_load_and_have_a_space() -> None:
    for path in sorted((REPO / "configs" / "search").glob("*.yaml")):
        cfg = load_search_config(path)
        refs = [ModelRef(m.name, m.provider, m.model) for m in cfg.models]
        space = SearchSpace.from_config(cfg, refs)
        assert space.valid_points, path
        assert space.single_model_point() is not None, path
