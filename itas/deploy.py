"""The agents an architecture needs, and its simulated dry run (no I/O).

``pool_for(arch)`` is the pool that serves exactly the services a spec calls: one entry per
distinct service, with the provider, model and endpoint the spec names (``base_url`` and the
*name* of the key variable; keys themselves stay in the environment of the machine that runs
the agent). ``itas up --arch FILE`` and ``itas agents --arch FILE`` start it; a pool file is
still the way to set replica counts, credits and placement.

``simulated(arch)`` is the same architecture with every model replaced by a simulated one of
the same name (``itas.agents.providers.sim``), for a dry run of any spec, Archon's included:
same layers, same call pattern, deterministic answers that say they are simulated. Its name
says so too (``<name> [simulated]``), so no report can pass it off as the real thing. The sim
model's skill comes from its name (``sim_skill``), so a dry run is repeatable.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from itas.agents.pool import PoolEntry, service_names
from itas.spec import Architecture, parse_architecture
from itas.techniques import SPEC_TECHNIQUES
from itas.techniques.base import LLMParams

SIMULATED_SUFFIX = " [simulated]"
SIM_SKILLS = (0.45, 0.8)  # the range a dry run's models are drawn from, by name
SIM_LATENCY = {"mean_s": 0.02, "jitter_s": 0.01}


def sim_skill(model: str) -> float:
    """A stable skill in ``SIM_SKILLS`` for a model name (the same in every process)."""
    digest = hashlib.blake2b(model.encode("utf-8"), digest_size=4).digest()
    low, high = SIM_SKILLS
    return round(low + (high - low) * int.from_bytes(digest, "big") / 2**32, 3)


def sim_settings(model: str, settings: Mapping[str, Any], *, keep: Sequence[str]
                 ) -> dict[str, Any]:
    """The settings of a simulated stand-in for ``model``: skill from its name, the dry
    run's latency, and of the real ``settings`` only the keys in ``keep`` (endpoints and key
    names never carry over)."""
    kept = {k: v for k, v in settings.items() if k in keep}
    return {"skill": sim_skill(model), "latency": SIM_LATENCY, **kept}


def pool_for(arch: Architecture, *, replicas: int = 1) -> list[PoolEntry]:
    """One pool entry per distinct service of ``arch``, placed as its components say."""
    entries: dict[str, PoolEntry] = {}
    for _, _, component in arch.components():
        if component.service_name in entries:
            continue
        settings: dict[str, Any] = {}
        if component.model is not None:
            settings = {"provider": component.provider, "model": component.model}
        if isinstance(component, LLMParams):
            if component.provider == "sim":
                settings.update(skill=sim_skill(component.model), latency=SIM_LATENCY)
            for key in ("base_url", "api_key_env"):
                value = getattr(component, key)
                if value is not None:
                    settings[key] = value
        entries[component.service_name] = PoolEntry(component.technique, replicas, settings)
    return list(entries.values())


def simulated_pool(entries: Sequence[PoolEntry]) -> list[PoolEntry]:
    """A pool with every LLM agent on a simulated model of the same name (``--sim`` on a
    pool): it serves what ``simulated(arch)`` calls for any spec the pool served."""
    out = []
    for entry in entries:
        settings = dict(entry.settings)
        provider, model = settings.get("provider"), settings.get("model")
        if isinstance(model, str) and provider not in (None, "sim") and \
                entry.kind in SPEC_TECHNIQUES and SPEC_TECHNIQUES[entry.kind].uses_llm:
            settings = {"provider": "sim", "model": model,
                        **sim_settings(model, settings, keep=("credit",))}
        out.append(dataclasses.replace(entry, settings=settings))
    return out


def serving(pool: Sequence[PoolEntry], arch: Architecture | None) -> list[PoolEntry]:
    """``pool`` plus an entry for every service of ``arch`` the pool does not already serve
    (the pool keeps its replica counts and placement)."""
    if arch is None:
        return list(pool)
    have = set(service_names(pool, "pool"))
    return [*pool, *(e for e, service in zip(pool_for(arch), arch.services, strict=True)
                     if service not in have)]


def simulated(arch: Architecture) -> Architecture:
    """``arch`` with every LLM component on a simulated model of the same name."""
    if arch.name.endswith(SIMULATED_SUFFIX):
        return arch
    data = arch.to_dict()
    for layer in data["layers"]:
        for component in layer:
            if "provider" in component and component["provider"] != "sim" and \
                    "model" in component:
                component["provider"] = "sim"
                component.pop("base_url", None)
                component.pop("api_key_env", None)
    data["name"] = arch.name + SIMULATED_SUFFIX
    data["description"] = (f"simulated dry run of {arch.name}: every model replaced by a "
                           "simulated one of the same name")
    return parse_architecture(data, f"{arch.name} (simulated)")


def simulated_service(service: str) -> str:
    """``technique@provider:model[#endpoint]`` on a simulated model of the same name, for a
    service named on the command line (``itas eval --judge ... --sim``)."""
    technique, _, rest = service.partition("@")
    _, _, model = rest.partition(":")
    model = model.split("#", 1)[0]
    return f"{technique}@sim:{model}" if model else service
