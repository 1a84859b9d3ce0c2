"""Deploying the agent topology that the search's trials need, and only that.

A trial's architecture names its services (``technique@provider:model``); each maps to a
pool entry: the technique as agent kind, the model's provider and name, and the model's
settings from the search config (skill and latency for ``sim``, ``cache``, ...). Before a
trial runs, ``Deployment.ensure`` asks the broker which services have workers, starts
(or scales up to ``replicas``) only the missing ones through the pool ``Supervisor``, and
waits until they registered. Services already served on the broker (say by ``itas up``)
are reused and never stopped; the processes the search started are stopped when the
deployment closes, on success, error or cancellation alike.

A reused agent may run other settings than the search measures with (a sim model of
another skill or seed answers differently under the same service name). So before a
reused sim service serves a trial, ``settings_probe`` sends it a few requests and
compares its decisions with those of an agent built here from the search's settings;
any difference is a ConfigError naming the service. Other providers cannot be checked
without paying for calls: they are reported as reused but unverified in the summary
(``Deployment.reuse_report``). The probe sees what changes decisions (skill, seed,
tokens per answer), not latency.

Without a broker endpoint in the config, the search runs a private stack (broker on a
free loopback port plus orchestrator processes) through ``itas.stack.run_stack``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import yaml

from itas import protocol as P
from itas.agents.kinds import build_agent
from itas.agents.pool import PoolEntry, Supervisor
from itas.client import AsyncClient
from itas.errors import AgentError, ConfigError, ItasError, RemoteError
from itas.query import ORCHESTRATOR_SERVICE
from itas.search.config import DeployConfig, ModelConfig
from itas.stack import run_stack, wait_for_services
from itas.techniques import TECHNIQUES
from itas.techniques.base import service_name

log = logging.getLogger("itas.search")

PRIVATE_BIND = "tcp://127.0.0.1:0"
POOL_FILE = "orchestrators.yaml"
STATUS_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 30.0
PROBE_QUESTIONS = 8  # difficulties spread over (0, 1): every skill decides some differently
PROBE_SAMPLES = 8
#: Agent kinds whose sim decisions the probe can compare; tools have no model settings.
PROBED_KINDS = frozenset({"generator", "critic", "ranker", "fuser", "verifier",
                          "unit_test_generator", "unit_test_evaluator", "judge"})
GENERATING_KINDS = frozenset({"generator", "unit_test_generator"})


def pool_entries(services: Iterable[str], models: Sequence[ModelConfig], *, replicas: int,
                 orchestrators: int = 1) -> list[PoolEntry]:
    """The pool entries that serve ``services``; ConfigError for a model not in the config.
    Services are matched by the one naming rule (``itas.techniques.base.service_name``,
    endpoint included), never by parsing their names."""
    by_service: dict[str, tuple[str, ModelConfig | None]] = {}
    for technique in TECHNIQUES:
        by_service[technique] = (technique, None)  # a tool technique without a model
        for m in models:
            endpoint = {k: v for k in ("base_url", "api_key_env")
                        if isinstance(v := m.settings.get(k), str)}
            by_service[service_name(technique, m.provider, m.model, **endpoint)] = (technique, m)
    entries = []
    for service in dict.fromkeys(services):
        if service == ORCHESTRATOR_SERVICE:
            entries.append(PoolEntry(ORCHESTRATOR_SERVICE, orchestrators, {}))
            continue
        found = by_service.get(service)
        if found is None:
            raise ConfigError(f"service {service!r}: no model of the search config's "
                              "'models' serves it")
        technique, model = found
        settings = {} if model is None else {"provider": model.provider, "model": model.model,
                                             **model.settings}
        entries.append(PoolEntry(technique, replicas, settings))
    return entries


class Deployment:
    """Starts agent processes on one broker as trials need them; see the module docstring."""

    def __init__(self, broker: str, models: Sequence[ModelConfig], config: DeployConfig,
                 task_group: anyio.abc.TaskGroup) -> None:
        self.broker = broker
        self.models = list(models)
        self.config = config
        self._tg = task_group
        self._scopes: list[anyio.CancelScope] = []
        self._lock = anyio.Lock()
        self.started: dict[str, int] = {}  # service -> replicas this deployment started
        self.reused: set[str] = set()  # services that were already served
        self.verified: dict[str, bool | None] = {}  # reused service -> probe verdict

    async def ensure(self, services: Iterable[str]) -> None:
        """Make every service in ``services`` served, starting only what is missing."""
        wanted = list(dict.fromkeys(services))
        async with self._lock:
            async with AsyncClient(self.broker) as client:
                known = (await client.status(timeout=STATUS_TIMEOUT_S))["services"]
            missing: list[PoolEntry] = []
            for entry, service in zip(self._entries(wanted), wanted, strict=True):
                running = known.get(service, {}).get("workers", 0)
                if running and service not in self.started:
                    self.reused.add(service)
                    if service not in self.verified:
                        self.verified[service] = await self._check_reused(service, entry)
                short = entry.replicas - running
                if short > 0:
                    missing.append(PoolEntry(entry.kind, short, entry.settings))
                    self.started[service] = self.started.get(service, 0) + short
            if missing:
                await _check_settings(missing)
                log.info("starting %s", ", ".join(f"{e.kind} x{e.replicas}" for e in missing))
                await self._tg.start(self._supervise, Supervisor(missing, self.broker))
            await wait_for_services(self.broker, wanted)

    async def _check_reused(self, service: str, entry: PoolEntry) -> bool | None:
        verdict = await settings_probe(self.broker, service, entry)
        if verdict is False:
            raise ConfigError(
                f"service {service} on {self.broker} is already served by agents that answer "
                f"differently from one with the search's settings {entry.settings} (another "
                "skill, seed or token count?); stop those agents, or let the search start "
                "its own (deploy.broker: null)")
        if verdict is None and entry.kind in PROBED_KINDS:
            log.warning("reusing %s on %s without checking its settings (only sim agents "
                        "can be checked)", service, self.broker)
        return verdict

    def reuse_report(self) -> list[dict[str, Any]]:
        """The services the search reused rather than started, and whether their settings
        were checked (True), or could not be (None)."""
        return [{"service": s, "settings_verified": self.verified.get(s)}
                for s in sorted(self.reused)]

    def _entries(self, services: list[str]) -> list[PoolEntry]:
        return pool_entries(services, self.models, replicas=self.config.replicas,
                            orchestrators=self.config.orchestrators)

    async def _supervise(self, supervisor: Supervisor, *,
                         task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                         ) -> None:
        with anyio.CancelScope() as scope:
            self._scopes.append(scope)
            await supervisor.run(task_status=task_status)

    def stop(self) -> None:
        """Stop every process this deployment started (their supervisors stop them)."""
        for scope in self._scopes:
            scope.cancel()


def probe_bodies(kind: str, nonce: str) -> list[dict[str, Any]]:
    """Requests whose sim answers depend on the model's settings (skill, seed): answer keys
    of spread difficulty, candidates half right; a fresh ``nonce`` keeps response caches
    from answering instead of the agent."""
    right, wrong = "The answer is 42.", ["The answer is 41.", "The answer is 43."]
    bodies: list[dict[str, Any]] = []
    for i in range(PROBE_QUESTIONS):
        key = {"id": f"itas-probe/{nonce}/{i}", "answer": right, "wrong": wrong,
               "difficulty": (i + 0.5) / PROBE_QUESTIONS}
        body: dict[str, Any] = {
            "messages": [{"role": "user", "content": f"Settings probe {nonce}-{i}: 6 x 7?"}],
            "sim": key, "params": {"temperature": 0.7}}
        if kind == "generator":  # one request per sample, as the orchestrator sends them
            bodies.extend({**body, "sample_index": k} for k in range(PROBE_SAMPLES))
            continue
        if kind == "ranker":
            body["params"]["top_k"] = 2
        if kind not in GENERATING_KINDS:
            texts = [right, wrong[0], right, wrong[1]]
            body["candidates"] = [{"id": f"probe-{j}", "text": t} for j, t in enumerate(texts)]
            if kind == "unit_test_evaluator":
                body["tests"] = ["the answer is 42", "the answer is a number"]
        bodies.append(body)
    return bodies


def _decisions(reply: Mapping[str, Any]) -> Any:
    """What settings decide in a reply: candidates and tests, usage tokens; not timing."""
    usage = reply.get("usage") or {}
    return (reply.get("candidates"), reply.get("tests"),
            usage.get("prompt_tokens"), usage.get("completion_tokens"))


async def settings_probe(broker: str, service: str, entry: PoolEntry) -> bool | None:
    """Whether the agents serving ``service`` decide like one built from ``entry`` (see the
    module docstring); None when that cannot be checked (not a sim model, or a tool)."""
    if entry.kind not in PROBED_KINDS or entry.settings.get("provider") != "sim":
        return None
    local = build_agent(entry.kind, entry.settings)
    await local.start()
    try:
        async with AsyncClient(broker, timeout=PROBE_TIMEOUT_S) as client:
            for body in probe_bodies(entry.kind, secrets.token_hex(8)):
                try:
                    ours = await local.handle(P.unpack(P.pack(body)))
                except AgentError as e:  # the probe is out of step with the technique
                    log.warning("cannot check the settings of %s: %s", service, e)
                    return None
                try:
                    theirs = (await client.call(service, body)).body
                except RemoteError:
                    return False  # ours answered, theirs refused: not the same agent
                except ItasError:
                    return None
                if _decisions(theirs) != _decisions(P.unpack(P.pack(ours))):
                    return False
    finally:
        await local.aclose()
    return True


async def _check_settings(entries: Iterable[PoolEntry]) -> None:
    """Build each agent here first, so a bad setting (a typo in a model's settings) is a
    ConfigError naming the model and the setting, not agent processes that never register."""
    for entry in entries:
        try:
            agent = build_agent(entry.kind, entry.settings)
        except ConfigError as e:
            model = f"{entry.settings.get('provider')}:{entry.settings.get('model')}"
            raise ConfigError(f"search config, settings of model {model} ({entry.kind} "
                              f"agent): {e}") from e
        await agent.aclose()


def _at_model(model: ModelConfig, base_url: str) -> ModelConfig:
    """Point a ``local`` model at the embedded model server this search started."""
    if model.provider != "local" or "base_url" in model.settings:
        return model
    return model.model_copy(update={"settings": {**model.settings, "base_url": base_url}})


@contextlib.asynccontextmanager
async def deployed(config: DeployConfig, models: Sequence[ModelConfig], workdir: Path
                   ) -> AsyncIterator[Deployment]:
    """A deployment on the configured broker, or on a private stack started for the search."""
    async with contextlib.AsyncExitStack() as stack:
        if config.broker is None:
            pool = workdir / POOL_FILE
            pool.write_text(yaml.safe_dump({"agents": [
                {"kind": ORCHESTRATOR_SERVICE, "replicas": config.orchestrators}]}))
            broker = (await stack.enter_async_context(run_stack(pool, bind=PRIVATE_BIND))).broker
        else:
            broker = config.broker
        if any(m.provider == "local" and "base_url" not in m.settings for m in models):
            from itas.agents.providers.local import local_model_server

            server = await stack.enter_async_context(local_model_server())
            models = [_at_model(m, server.base_url) for m in models]
        tg = await stack.enter_async_context(anyio.create_task_group())
        deployment = Deployment(broker, models, config, tg)
        stack.callback(deployment.stop)
        await deployment.ensure([ORCHESTRATOR_SERVICE])
        yield deployment
