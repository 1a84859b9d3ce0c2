"""Calling agents inside this process, for studies that need no broker.

``perf/search_efficiency.py`` and offline studies score thousands of
architectures on simulated models; the broker would only add hops. The same
orchestrator code runs; each service name is built into an agent once, from a
pool, and ``handle`` is awaited directly. Errors are translated exactly as the
broker path translates them, so results match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

import anyio

from itas import protocol as P
from itas.agents.base import Agent
from itas.agents.kinds import build_agent
from itas.agents.partials import PartialSink
from itas.agents.pool import PoolEntry
from itas.client import OnPartial, Reply
from itas.errors import AgentError, RemoteError, ServiceUnavailable


class InProcessCaller:
    """Serves ``call(service, body)`` from agents built from pool entries, in this process."""

    def __init__(self, entries: Sequence[PoolEntry] = (), *, agents: Sequence[Agent] = ()
                 ) -> None:
        self._entries = list(entries)
        self._given = list(agents)
        self._agents: dict[str, Agent] = {}

    async def __aenter__(self) -> Self:
        built = [build_agent(entry.kind, entry.settings) for entry in self._entries]
        for agent in [*built, *self._given]:
            if agent.service not in self._agents:
                await agent.start()
                self._agents[agent.service] = agent
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for agent in self._agents.values():
            await agent.aclose()

    @property
    def services(self) -> Mapping[str, Agent]:
        return self._agents

    async def call(self, service: str, body: Any, *, timeout: float | None = None,
                   on_partial: OnPartial | None = None) -> Reply:
        """As the broker would: partial replies reach ``on_partial`` for a request that asks
        for them (``"stream": true``)."""
        agent = self._agents.get(service)
        if agent is None:
            raise ServiceUnavailable(service, f"no in-process agent serves {service!r}")
        started = anyio.current_time()
        # The same msgpack round trip as the wire, so nothing passes that the wire would refuse.
        request = P.unpack(P.pack(body))
        token = None
        if on_partial is not None and isinstance(request, dict) and request.get("stream") is True:

            async def send(data: bytes) -> None:
                await on_partial(P.unpack(data))

            token = PartialSink(send).activate()
        try:
            result = await agent.handle(request)
        except AgentError as exc:
            raise RemoteError(exc.code, exc.message, service) from exc
        except Exception as exc:  # as the agent runtime reports a handler's bug
            raise RemoteError(P.ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}",
                              service) from exc
        finally:
            if token is not None:
                PartialSink.deactivate(token)
        return Reply(P.unpack(P.pack(result)), 1, anyio.current_time() - started)
