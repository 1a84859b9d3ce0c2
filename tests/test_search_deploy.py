"""Which agents a set of architectures needs (no processes: the mapping alone)."""

from __future__ import annotations

import pytest

from itas.agents.kinds import build_agent
from itas.errors import ConfigError
from itas.search.config import DeployConfig, parse_search_config
from itas.search.deploy import pool_entries
from itas.search.space import ModelRef, SearchSpace
from tests.test_search_space import MODELS, config


def test_entries_serve_exactly_the_services_of_the_architectures() -> None:
    data = config()
    data["models"][0]["settings"] = {"skill": 0.9, "latency": 0.0}
    cfg = parse_search_config(data, "t.yaml")
    space = SearchSpace.from_config(cfg, [ModelRef(m, "sim", m) for m in MODELS])
    archs = [space.architecture(p) for p in space.valid_points[::97]]
    services = [s for arch in archs for s in arch.services] + ["orchestrator"]
    entries = pool_entries(services, cfg.models, replicas=2, orchestrators=1)
    built = [build_agent(e.kind, e.settings) for e in entries if e.kind != "orchestrator"]
    assert {a.service for a in built} | {"orchestrator"} == set(services)
    strong = next(e for e in entries if e.kind == "generator" and e.settings["model"] == "strong")
    assert strong.settings["skill"] == 0.9 and strong.replicas == 2
    assert next(e for e in entries if e.kind == "orchestrator").replicas == 1
    assert DeployConfig().broker is None


def test_a_service_on_an_unknown_model_is_named() -> None:
    cfg = parse_search_config(config(), "t.yaml")
    with pytest.raises(ConfigError, match="generator@sim:giant"):
        pool_entries(["generator@sim:giant"], cfg.models, replicas=1)
