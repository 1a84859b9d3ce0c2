"""The contract between the agent runtime and what an agent does.

An agent is stateless between requests: a request body carries everything it
needs, so the broker may send any request to any replica and resend it after a
crash. The runtime (``itas.agents.runtime``) owns sockets, heartbeats,
reconnects and shutdown; an ``Agent`` only maps a request body to a reply body.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from itas.security import CurveKeys


class Agent(abc.ABC):
    """One service served by one process.

    ``handle`` may raise ``itas.errors.AgentError`` to send an error reply with
    its code; any other exception becomes an ``internal`` error reply naming the
    exception, and the agent goes on serving.
    """

    #: Broker service name, e.g. "echo" or "generator@sim:strong".
    service: str
    #: How many requests this process takes at once.
    credit: int = 1

    def attach(self, broker: str, curve: CurveKeys | None) -> None:
        """Told before ``start`` where the agent's own requests go: the orchestrator
        calls other agents through the broker it serves."""

    async def start(self) -> None:
        """Open provider clients and the like, once, before the first request."""

    @abc.abstractmethod
    async def handle(self, body: Any) -> Any:
        """Answer one request body (already msgpack-decoded)."""

    async def aclose(self) -> None:
        """Release what ``start`` opened."""
