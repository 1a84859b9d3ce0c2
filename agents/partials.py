"""Partial replies from inside an agent's handler (wire protocol PARTIAL, see itas.protocol).

The runtime opens a ``PartialSink`` for a request that asked for one (``"stream": true`` in
its body) and makes it ``current()`` while the handler runs; code deep inside (a provider
streaming tokens, the orchestrator relaying its final layer) reaches it without any
parameter threaded through. Outside such a request ``current()`` is None, so code that
streams costs nothing when nobody listens.

Text deltas are joined and sent at most once per ``PARTIAL_INTERVAL_S`` (a provider's
per-token callbacks must not become a message each); ``flush`` sends what is left and the
runtime calls it before the reply, so every delta arrives before the answer (one socket
keeps order). A send that fails (the broker is being reconnected) loses that partial only:
partials are progress, the reply is the answer.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from itas import protocol as P

Send = Callable[[bytes], Awaitable[None]]
_CURRENT: contextvars.ContextVar[PartialSink | None] = contextvars.ContextVar(
    "itas_partial_sink", default=None)
#: Characters per text PARTIAL: well inside MAX_PARTIAL_BYTES once UTF-8 encoded and packed.
MAX_DELTA_CHARS = P.MAX_PARTIAL_BYTES // 8


def current() -> PartialSink | None:
    """The sink of the request being served, if it asked for partial replies."""
    return _CURRENT.get()


class PartialSink:
    """Partial replies of one request."""

    def __init__(self, send: Send, interval_s: float = P.PARTIAL_INTERVAL_S) -> None:
        self._send = send
        self._interval = interval_s
        self._buffer = ""
        self._last = -float("inf")
        self.sent = 0

    async def text(self, delta: str) -> None:
        """The next piece of the answer's text."""
        self._buffer += delta
        if anyio.current_time() - self._last >= self._interval:
            await self.flush()

    async def event(self, body: dict[str, Any]) -> None:
        """A progress event (``{"progress": {...}}``), after any text waiting to go."""
        await self.flush()
        await self._emit(body)

    async def flush(self) -> None:
        while self._buffer:
            piece, self._buffer = self._buffer[:MAX_DELTA_CHARS], self._buffer[MAX_DELTA_CHARS:]
            await self._emit({"delta": piece})

    async def _emit(self, body: dict[str, Any]) -> None:
        data = P.pack(body)
        if len(data) > P.MAX_PARTIAL_BYTES:
            return  # the broker would drop it anyway
        self._last = anyio.current_time()
        self.sent += 1
        await self._send(data)

    def activate(self) -> contextvars.Token[PartialSink | None]:
        return _CURRENT.set(self)

    @staticmethod
    def deactivate(token: contextvars.Token[PartialSink | None]) -> None:
        _CURRENT.reset(token)
