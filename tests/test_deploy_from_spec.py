"""Pools and simulated dry runs derived from a spec (``itas.deploy``): exactly the services the
architecture calls, with their endpoints, and a simulated twin that says it is simulated."""

from __future__ import annotations

from pathlib import Path

import pytest

from itas.agents.kinds import build_agent
from itas.deploy import SIMULATED_SUFFIX, pool_for, sim_skill, simulated
from itas.spec import load_architecture, parse_architecture

ARCHON = Path(__file__).parents[1] / "configs" / "archon"
ARCHITECTURES = Path(__file__).parents[1] / "configs" / "architectures"
ALL_SPECS = sorted([*ARCHON.glob("*.json"), *ARCHITECTURES.glob("*.yaml")])


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.name)
def test_the_pool_serves_exactly_the_services_the_spec_calls(path: Path) -> None:
    arch = load_architecture(path)
    entries = pool_for(arch)
    served = [build_agent(e.kind, e.settings).service for e in entries
              if e.settings.get("provider") in (None, "sim", "local")]
    wanted = [s for s in arch.services if s.split("@")[-1].split(":")[0] in ("sim", "local")
              or "@" not in s]
    assert served == wanted
    assert len(entries) == len(arch.services)
    for entry in entries:
        assert not any(k in entry.settings for k in ("api_key", "key", "secret"))


def test_endpoints_and_key_names_reach_the_pool() -> None:
    arch = load_architecture(ARCHON / "gcrf_together.json")
    [first, *_] = pool_for(arch)
    assert first.settings == {"provider": "openai", "model": "Qwen/Qwen2-72B-Instruct",
                              "base_url": "https://api.together.xyz/v1",
                              "api_key_env": "TOGETHER_API_KEY"}


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.name)
def test_a_simulated_dry_run_keeps_the_flow_and_says_it_is_simulated(path: Path) -> None:
    arch = load_architecture(path)
    dry = simulated(arch)
    assert dry.name == arch.name + SIMULATED_SUFFIX and "simulated" in (dry.description or "")
    assert simulated(dry) == dry
    assert [[c.technique for c in layer] for layer in dry.layers] == \
        [[c.technique for c in layer] for layer in arch.layers]
    for (_, _, real), (_, _, sim) in zip(arch.components(), dry.components(), strict=True):
        assert sim.model == real.model
        if real.model is not None:
            assert sim.provider == "sim" and getattr(sim, "base_url", None) is None
    for entry in pool_for(dry):  # every agent of the dry run can be built here, no keys
        build_agent(entry.kind, entry.settings)


def test_sim_skills_are_stable_and_in_range() -> None:
    names = [f"model-{i}" for i in range(200)]
    skills = [sim_skill(n) for n in names]
    assert skills == [sim_skill(n) for n in names]
    assert all(0.45 <= s <= 0.8 for s in skills) and len(set(skills)) > 150


def test_tool_components_keep_their_bare_service() -> None:
    arch = parse_architecture({"name": "v", "layers": [
        [{"technique": "generator", "provider": "openai", "model": "gpt-4o", "samples": 3}],
        [{"technique": "majority_vote"}]]})
    assert [e.kind for e in pool_for(simulated(arch))] == ["generator", "majority_vote"]
    assert simulated(arch).services == ("generator@sim:gpt-4o", "majority_vote")
