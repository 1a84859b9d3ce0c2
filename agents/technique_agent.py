"""The agent process of a technique: one technique module, served through the broker.

Settings (a pool entry's ``settings``): ``provider`` and ``model`` (required for techniques that
call an LLM; optional, both or neither, for tool techniques, where they only name the
service), ``credit`` (requests served at once), ``max_parallel_runs`` (techniques that run code:
sandboxed runs at once in this process, default the CPU count, whatever the credit, so a burst
cannot swamp the cores). Every other key goes to the provider (``make_provider``), which
rejects what it does not know.

A request is checked against the technique contract (``itas.techniques.contract``) and its
parameters against the technique's parameter model; what is wrong comes back as a
``bad_request`` error reply naming the field. The service name is the one rule of
``itas.techniques.base.service_name``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

from itas.agents.base import Agent
from itas.agents.providers import Provider, make_provider
from itas.agents.providers.cache import bypassing
from itas.errors import ConfigError
from itas.techniques import technique as technique_named
from itas.techniques.base import AgentContext, Job, Technique, default_parallel_runs, service_name
from itas.techniques.contract import ContractError, TechniqueRequest, bad_request

AGENT_KEYS = frozenset({"provider", "model", "credit"})
RUN_KEYS = frozenset({"max_parallel_runs"})
DEFAULT_CREDIT = 16
TOOL_CREDIT = 64
MAX_CREDIT = 10_000


def _int_setting(settings: Mapping[str, Any], key: str, default: int, low: int, high: int,
                 where: str) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where}: setting {key!r} must be an integer in [{low}, {high}], "
                          f"got {value!r}")
    return value


def _name_setting(settings: Mapping[str, Any], key: str, where: str) -> str | None:
    value = settings.get(key)
    if value is None:
        return None
    # Colons are fine (Ollama's "llama3:8b"): a service name splits at its first ':' only.
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ConfigError(f"{where}: setting {key!r} must be a non-empty name without "
                          f"spaces, got {value!r}")
    return value


class TechniqueAgent(Agent):
    """Serves one technique with one provider and model."""

    def __init__(self, technique: Technique[Any], settings: Mapping[str, Any], *,
                 provider: Provider | None = None) -> None:
        """``provider`` replaces the one the settings describe (tests wrap providers)."""
        where = f"agent {technique.name!r}"
        if not isinstance(settings, Mapping):
            raise ConfigError(f"{where}: settings must be a mapping")
        self.technique = technique
        self.provider_name = _name_setting(settings, "provider", where)
        self.model = _name_setting(settings, "model", where)
        if technique.uses_llm and (self.provider_name is None or self.model is None):
            raise ConfigError(f"{where}: settings 'provider' and 'model' are required "
                              "(e.g. provider: sim, model: strong)")
        if (self.provider_name is None) != (self.model is None):
            raise ConfigError(f"{where}: give both 'provider' and 'model', or neither")
        endpoint = {k: settings.get(k) for k in ("base_url", "api_key_env")
                    if isinstance(settings.get(k), str)}
        self.service = service_name(technique.name, self.provider_name, self.model, **endpoint)
        default_credit = DEFAULT_CREDIT if technique.uses_llm else TOOL_CREDIT
        self.credit = _int_setting(settings, "credit", default_credit, 1, MAX_CREDIT, where)
        own = AGENT_KEYS | (RUN_KEYS if technique.runs_code else frozenset())
        runs = _int_setting(settings, "max_parallel_runs", default_parallel_runs(), 1,
                            MAX_CREDIT, where) if technique.runs_code else 1
        self.run_limiter = anyio.CapacityLimiter(runs)
        rest = {k: v for k, v in settings.items() if k not in own}
        self.provider: Provider | None = None
        if technique.uses_llm:
            assert self.provider_name is not None  # checked above
            self.provider = provider or make_provider(self.provider_name, rest)
        elif rest:
            raise ConfigError(f"{where}: unknown setting(s) {sorted(rest)}; known: "
                              f"{', '.join(sorted(own))}")
        self._context = AgentContext(self.service, self.provider, self.model, self.run_limiter)

    @classmethod
    def for_kind(cls, kind: str) -> Any:
        """The factory ``itas.agents.kinds`` registers for a technique's kind."""
        return lambda settings: cls(technique_named(kind), settings)

    async def start(self) -> None:
        if self.technique.runs_code and not self.technique.uses_llm:
            from itas.execution.sandbox import check_isolation

            await check_isolation()  # fail closed at start, not per request

    async def aclose(self) -> None:
        if self.provider is not None:
            await self.provider.aclose()

    async def handle(self, body: Any) -> Any:
        try:
            request = TechniqueRequest.from_body(body)
            params = self.technique.params(request.params, provider=self.provider_name,
                                           model=self.model)
        except ContractError as exc:
            raise bad_request(exc.where, exc.problem) from exc
        if self.technique.uses_llm and not request.messages:
            raise bad_request("messages", "must hold the query conversation (at least one "
                                          "message)")
        job = Job(self.technique, self._context, request, params)
        try:
            with bypassing(request.fresh):
                reply = await self.technique.run(job)
        except ContractError as exc:
            raise bad_request(exc.where, exc.problem) from exc
        return reply.to_dict()
