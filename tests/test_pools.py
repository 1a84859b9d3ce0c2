"""Every shipped pool file is valid, and each architecture has a pool that serves it."""

from __future__ import annotations

import pytest

from itas.agents.pool import load_pool, parse_pool
from itas.errors import ConfigError
from itas.spec import load_architecture
from itas.stack import packaged_config, service_names
from tests.helpers import REPO
from tests.provider_vendors import set_test_credentials

POOLS = {path.stem: path for path in (REPO / "configs" / "pools").glob("*.yaml")}
SERVED_BY = {"local_gcrf": "local", "openai_gcrf": "openai", "anthropic_gcrf": "anthropic",
             "sim_gcrf": "sim", "sim_single": "sim", "sim_vote": "sim", "sim_gvf": "sim",
             "sim_code": "sim", "sim_code_exec": "sim"}


@pytest.fixture(autouse=True)
def placeholder_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents refuse to start without their provider's key; these never reach a server."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-placeholder")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-placeholder")
    set_test_credentials(monkeypatch)  # AWS credentials and region, nothing from this machine
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-placeholder")


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pool_loads_and_builds_every_agent(name: str) -> None:
    assert service_names(load_pool(POOLS[name]))


@pytest.mark.parametrize("arch,pool", sorted(SERVED_BY.items()))
def test_architecture_services_are_in_its_pool(arch: str, pool: str) -> None:
    services = set(service_names(load_pool(POOLS[pool])))
    needed = set(load_architecture(packaged_config("architectures", arch)).services)
    assert needed <= services, needed - services


@pytest.mark.parametrize("data,message", [
    ({"agents": [{"kind": "generatr"}]}, "agents[1].kind: unknown agent kind 'generatr'"),
    ({"agents": [{"kind": "echo", "replica": 2}]}, "agents[1]: unknown field(s) ['replica']"),
    ({"agents": [{"kind": "echo", "replicas": -1}]}, "agents[1].replicas"),
    ({"agent": []}, "expected a mapping with an 'agents' list"),
])
def test_bad_pool_files_name_the_entry_and_field(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)").replace("]", r"\]")):
        parse_pool(data, "pool.yaml")
