"""Agent kinds a pool file can name, and how to build each from its settings.

Entries are "module:factory" strings so that starting an echo agent does not
import LLM clients. A factory takes the settings mapping from the pool file and
returns an ``Agent``; it raises ``ConfigError`` naming the bad setting.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from itas.agents.base import Agent
from itas.errors import ConfigError
from itas.techniques import MODULES

#: Agent kinds besides the techniques (every technique in ``itas.techniques`` is a kind too).
KINDS: dict[str, str] = {
    "echo": "itas.agents.utility:EchoAgent.from_settings",
    "sleep": "itas.agents.utility:SleepAgent.from_settings",
    "orchestrator": "itas.orchestrator.service:OrchestratorAgent.from_settings",
}
TECHNIQUE_KINDS = MODULES
for _kind in TECHNIQUE_KINDS:
    KINDS[_kind] = "itas.agents.technique_agent:TechniqueAgent.for_kind"


def build_agent(kind: str, settings: Mapping[str, Any]) -> Agent:
    """Build the agent a pool entry describes; ConfigError names what is wrong."""
    target = KINDS.get(kind)
    if target is None:
        raise ConfigError(f"unknown agent kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    module_name, _, attr = target.partition(":")
    factory: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        factory = getattr(factory, part)
    if kind in TECHNIQUE_KINDS:
        factory = factory(kind)
    agent_factory: Callable[[Mapping[str, Any]], Agent] = factory
    return agent_factory(settings)
