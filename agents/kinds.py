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

KINDS: dict[str, str] = {
    "echo": "itas.agents.utility:EchoAgent.from_settings",
    "sleep": "itas.agents.utility:SleepAgent.from_settings",
    "generator": "itas.techniques.generator:GeneratorAgent.from_settings",
    "critic": "itas.techniques.critic:CriticAgent.from_settings",
    "ranker": "itas.techniques.ranker:RankerAgent.from_settings",
    "fuser": "itas.techniques.fuser:FuserAgent.from_settings",
    "verifier": "itas.techniques.verifier:VerifierAgent.from_settings",
    "unit_test_generator":
        "itas.techniques.unit_test_generator:UnitTestGeneratorAgent.from_settings",
    "unit_test_evaluator":
        "itas.techniques.unit_test_evaluator:UnitTestEvaluatorAgent.from_settings",
    "majority_vote": "itas.techniques.majority_vote:MajorityVoteAgent.from_settings",
    "code_tester": "itas.techniques.code_tester:CodeTesterAgent.from_settings",
    "judge": "itas.techniques.judge:JudgeAgent.from_settings",
    "orchestrator": "itas.orchestrator.service:OrchestratorAgent.from_settings",
}


def service_name(technique: str, provider: str | None, model: str | None) -> str:
    """The one naming rule for technique services: ``technique@provider:model``, or the
    bare technique for tools run without a model. Specs and agents both use it, so what an
    architecture calls is exactly what an agent registers."""
    if model is None:
        return technique
    return f"{technique}@{provider}:{model}"


def build_agent(kind: str, settings: Mapping[str, Any]) -> Agent:
    """Build the agent a pool entry describes; ConfigError names what is wrong."""
    target = KINDS.get(kind)
    if target is None:
        raise ConfigError(f"unknown agent kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    module_name, _, attr = target.partition(":")
    factory: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        factory = getattr(factory, part)
    agent_factory: Callable[[Mapping[str, Any]], Agent] = factory
    return agent_factory(settings)
