"""Which agents a set of architectures needs (no processes: the mapping alone)."""

from __future__ import annotations

import pytest

from itas import protocol as P
from itas.agents.kinds import build_agent
from itas.errors import ConfigError
from itas.search.config import DeployConfig, parse_search_config
from itas.search.deploy import PROBED_KINDS, pool_entries, probe_bodies
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


@pytest.mark.anyio
@pytest.mark.parametrize("kind", sorted(PROBED_KINDS))
async def test_every_settings_probe_is_a_request_its_technique_accepts(kind: str) -> None:
    """A probe out of step with its technique would make every reused agent 'unchecked'
    (the probe cannot tell), so each probe must be one the technique answers, and two skills
    must decide at least one probe differently."""
    decided = []
    for skill in (0.75, 0.3):
        agent = build_agent(kind, {"provider": "sim", "model": "strong", "skill": skill,
                                   "latency": 0.0, "cache": False})
        await agent.start()
        try:
            decided.append([await agent.handle(P.unpack(P.pack(b)))
                            for b in probe_bodies(kind, "fixed")])
        finally:
            await agent.aclose()
    if kind == "unit_test_generator":
        return  # a sim test writer writes the same tests at every skill: nothing to tell
    assert decided[0] != decided[1], f"the {kind} probe cannot tell skill 0.75 from 0.3"
