"""Grow and shrink a pool's services with their queues, within the pool file's bounds.

A pool entry with ``autoscale: {min, max, target_waiting, scale_down_after_s}`` is
sized by its broker service's load, read from the broker's status (the same numbers
as ``itas status`` and the metrics): a replica is full when it runs its credit of
requests and ``target_waiting`` more wait for it, so

    desired = ceil((waiting + in flight) / (credit per replica + target_waiting))

clamped to ``min..max``. Growing happens at once (a queue is a user waiting);
shrinking only after the load has stayed low for ``scale_down_after_s``, so a
bursty service does not flap. A removed replica drains: it stops taking work,
finishes what it runs and says goodbye, and the broker re-queues anything it was
sent but never started, so shrinking loses nothing.

The controller is the same for every placement: it talks to a ``Scaler``, which
the local process pool (``itas.agents.pool.Supervisor``) and the Ray placement
(``itas.agents.ray_placement.RayPool``) both are. What can go wrong: a broker
that does not answer leaves the sizes as they are (logged, retried next round).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from itas.agents.kinds import build_agent
from itas.agents.pool import Autoscale, PoolEntry
from itas.errors import ConfigError, ItasError

log = logging.getLogger("itas.autoscale")

INTERVAL_S = 1.0


class Scaler(Protocol):
    """What the controller drives: replica counts per pool entry."""

    def replicas(self, index: int) -> int: ...

    async def scale(self, index: int, replicas: int) -> None: ...


def desired_replicas(policy: Autoscale, service: Mapping[str, Any] | None, credit: int
                     ) -> int:
    """Replicas the service's current load asks for (``service``: its status entry)."""
    if not service:
        return policy.min
    workers = service.get("workers", 0)
    per_replica = service["credit"] / workers if workers else credit
    demand = service.get("waiting", 0) + service.get("inflight", 0)
    wanted = math.ceil(demand / (per_replica + policy.target_waiting)) if demand else 0
    return max(policy.min, min(policy.max, wanted))


@dataclass
class _Scaled:
    index: int
    service: str
    credit: int
    policy: Autoscale
    low_since: float | None = None


class Autoscaler:
    """Sizes every autoscaled entry of a pool from broker status, each ``interval``."""

    def __init__(self, entries: Sequence[PoolEntry], scaler: Scaler,
                 status: Callable[[], Awaitable[dict[str, Any]]], *,
                 interval: float = INTERVAL_S) -> None:
        self.scaler, self.status, self.interval = scaler, status, interval
        self.scaled: list[_Scaled] = []
        owners: dict[str, int] = {}
        for i, entry in enumerate(entries):
            if entry.autoscale is None:
                continue
            agent = build_agent(entry.kind, entry.settings)
            if agent.service in owners:
                raise ConfigError(f"pool: agents[{owners[agent.service] + 1}] and "
                                  f"agents[{i + 1}] both autoscale service "
                                  f"{agent.service!r}; give one of them the autoscale field")
            owners[agent.service] = i
            self.scaled.append(_Scaled(i, agent.service, agent.credit, entry.autoscale))
        self.decisions: list[tuple[float, str, int, int]] = []  # (time, service, from, to)

    def decide(self, now: float, info: Mapping[str, Any]) -> dict[int, int]:
        """New replica counts by entry index (only those that change); no I/O."""
        changes = {}
        services = info.get("services", {})
        for s in self.scaled:
            current = self.scaler.replicas(s.index)
            wanted = desired_replicas(s.policy, services.get(s.service), s.credit)
            if wanted > current:
                s.low_since = None
                changes[s.index] = wanted
            elif wanted < current:
                if s.low_since is None:
                    s.low_since = now
                if now - s.low_since >= s.policy.scale_down_after_s:
                    s.low_since = None
                    changes[s.index] = wanted
            else:
                s.low_since = None
        return changes

    async def step(self) -> None:
        """One round: read the broker's status, apply what ``decide`` says."""
        try:
            info = await self.status()
        except ItasError as exc:
            log.warning("autoscale: no broker status (%s); sizes unchanged", exc)
            return
        now = anyio.current_time()
        for index, replicas in self.decide(now, info).items():
            service = next(s.service for s in self.scaled if s.index == index)
            current = self.scaler.replicas(index)
            log.info("autoscale: %s %d -> %d replicas", service, current, replicas)
            self.decisions.append((now, service, current, replicas))
            await self.scaler.scale(index, replicas)

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            await self.step()
            await anyio.sleep(self.interval)
