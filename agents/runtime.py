"""The agent runtime: one DEALER to the broker, the agent's handler behind it.

A worker announces its service and credit, serves up to ``credit`` requests at
once, heartbeats, and notices a lost or restarted broker (silence, or a new
epoch in the broker's heartbeat); then it reconnects with backoff and announces
again. On SIGINT/SIGTERM it stops taking work, finishes what is in flight (up to
a grace period), replies, and says goodbye so the broker re-queues whatever it
had sent that was never started.

Each request runs in its own cancel scope with the request's deadline, so
everything under it (provider calls and their retries, an orchestrator's
sub-calls, which take the deadline as theirs) stops when the deadline passes,
when the broker sends CANCEL (the client gave up, or the broker expired it),
and when the broker no longer knows the work: a new epoch ends the old
broker's tickets, a DISCONNECT ends all of them. Nobody would take their
replies.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket as _socket
from typing import Any

import anyio
import zmq
import zmq.asyncio

from itas import protocol as P
from itas.agents.base import Agent
from itas.errors import AgentError, ProtocolError
from itas.security import CurveKeys

log = logging.getLogger("itas.agent")

HEARTBEAT_INTERVAL_S = 1.0
HEARTBEAT_LIVENESS = 3
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 5.0
SHUTDOWN_GRACE_S = 30.0


class Worker:
    """Serves one ``Agent`` through a broker until cancelled or signalled."""

    def __init__(
        self,
        agent: Agent,
        broker: str,
        *,
        curve: CurveKeys | None = None,
        name: str | None = None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL_S,
        liveness: int = HEARTBEAT_LIVENESS,
        shutdown_grace: float = SHUTDOWN_GRACE_S,
    ) -> None:
        self.agent = agent
        self.broker = broker
        self.curve = curve
        self.name = name or f"{agent.service}/{_socket.gethostname()}/{os.getpid()}"
        self.heartbeat_interval = heartbeat_interval
        self.silence_limit = heartbeat_interval * liveness
        self.shutdown_grace = shutdown_grace
        self._context = zmq.asyncio.Context()
        self._socket: zmq.asyncio.Socket | None = None
        self._epoch: bytes | None = None
        self._last_heard = 0.0
        self._inflight = 0
        self._running: dict[bytes, anyio.CancelScope] = {}  # by ticket
        self._draining = False
        self._limiter = anyio.CapacityLimiter(agent.credit)

    # -- lifecycle -------------------------------------------------------------

    async def run(self, *, handle_signals: bool = True) -> None:
        self.agent.attach(self.broker, self.curve)
        await self.agent.start()
        try:
            async with anyio.create_task_group() as handlers:
                async with anyio.create_task_group() as session:
                    if handle_signals:
                        session.start_soon(self._watch_signals, session.cancel_scope)
                    session.start_soon(self._connection_loop, handlers)
                # Signalled: stop taking work, let in-flight handlers finish.
                await self._drain()
                handlers.cancel_scope.cancel()
            await self._goodbye()
        finally:
            await self.agent.aclose()
            if self._socket is not None:
                self._socket.close(linger=0)
            self._context.term()

    async def _drain(self) -> None:
        """Wait for in-flight handlers, heartbeating so the broker keeps us meanwhile."""
        self._draining = True
        next_beat = 0.0
        with anyio.move_on_after(self.shutdown_grace):
            while self._inflight:
                if self._socket is not None and anyio.current_time() >= next_beat:
                    next_beat = anyio.current_time() + self.heartbeat_interval
                    await self._socket.send_multipart([P.HEARTBEAT])
                await anyio.sleep(0.02)

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for sig in signals:
                log.info("%s: %s received, finishing in-flight work", self.name, sig.name)
                scope.cancel()
                return

    async def _goodbye(self) -> None:
        if self._socket is not None:
            with anyio.move_on_after(1.0):
                await self._socket.send_multipart([P.DISCONNECT])
            self._socket.close(linger=500)
            self._socket = None

    # -- connection ------------------------------------------------------------

    def _connect(self) -> zmq.asyncio.Socket:
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            self.curve.apply_client(sock)
        sock.connect(self.broker)
        return sock

    async def _announce(self) -> None:
        assert self._socket is not None
        self._epoch = None
        await self._socket.send_multipart(
            [P.READY, P.ready_body(self.agent.service, self.agent.credit, self.name,
                                   round(self.heartbeat_interval * 1000))]
        )

    async def _connection_loop(self, handlers: anyio.abc.TaskGroup) -> None:
        """One session per connection; a silent broker means a new socket after backoff."""
        backoff = RECONNECT_MIN_S
        while True:
            self._socket = self._connect()
            self._last_heard = anyio.current_time()
            await self._announce()
            async with anyio.create_task_group() as session:
                session.start_soon(self._heartbeat_loop, session.cancel_scope)
                session.start_soon(self._receive_loop, handlers)
            heard_recently = self._epoch is not None
            self._socket.close(linger=0)
            self._socket = None
            backoff = RECONNECT_MIN_S if heard_recently else min(backoff * 2, RECONNECT_MAX_S)
            delay = backoff * (0.5 + random.random())
            log.warning("%s: broker %s silent, reconnecting in %.2f s", self.name, self.broker,
                        delay)
            await anyio.sleep(delay)

    async def _heartbeat_loop(self, session: anyio.CancelScope) -> None:
        assert self._socket is not None
        while True:
            await anyio.sleep(self.heartbeat_interval)
            if anyio.current_time() - self._last_heard > self.silence_limit:
                session.cancel()
                return
            await self._socket.send_multipart([P.HEARTBEAT])

    async def _receive_loop(self, handlers: anyio.abc.TaskGroup) -> None:
        sock = self._socket
        assert sock is not None
        while True:
            frames = await sock.recv_multipart()
            self._last_heard = anyio.current_time()
            try:
                command = P.command_of(frames[0])
            except ProtocolError as exc:
                log.warning("%s: dropped a message from the broker: %s", self.name, exc)
                continue
            if command is P.Command.REQUEST and len(frames) == 3:
                if not self._draining:
                    try:
                        timeout_ms = P.ticket_timeout_ms(frames[1])
                    except ProtocolError as exc:
                        log.warning("%s: dropped a request: %s", self.name, exc)
                        continue
                    self._inflight += 1
                    handlers.start_soon(self._serve_one, frames[1], timeout_ms / 1000.0,
                                        frames[2])
            elif command is P.Command.CANCEL and len(frames) == 2:
                scope = self._running.get(frames[1])
                if scope is not None:
                    scope.cancel()
            elif command is P.Command.HEARTBEAT and len(frames) == 2:
                epoch = frames[1]
                if self._epoch is None:
                    self._epoch = epoch
                elif epoch != self._epoch:  # the broker restarted and forgot us
                    await self._announce()
                    self._epoch = epoch
                self._stop_work(unless_epoch=epoch)
            elif command is P.Command.DISCONNECT:  # forgotten: none of our tickets counts
                self._stop_work(unless_epoch=None)
                await self._announce()

    def _stop_work(self, *, unless_epoch: bytes | None) -> None:
        """Cancel the requests of tickets not of ``unless_epoch`` (None: all of them)."""
        for ticket, scope in self._running.items():
            if unless_epoch is None or ticket[:P.EPOCH_BYTES] != unless_epoch:
                scope.cancel()

    # -- requests ----------------------------------------------------------------

    async def _serve_one(self, ticket: bytes, timeout_s: float, body: bytes) -> None:
        reply: tuple[bytes, bytes] | None = None
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + timeout_s) as scope:
                self._running[ticket] = scope
                async with self._limiter:
                    reply = await self._reply_for(body)
            if scope.cancelled_caught or reply is None:
                log.info("%s: stopped a request (deadline or cancel)", self.name)
                return
            sock = self._socket
            if sock is not None:
                try:
                    await sock.send_multipart([reply[0], ticket, reply[1]])
                except zmq.ZMQError as exc:  # reconnecting: the broker re-sends the request
                    log.warning("%s: reply lost to a reconnect: %s", self.name, exc)
        finally:
            self._running.pop(ticket, None)
            self._inflight -= 1

    async def _reply_for(self, body: bytes) -> tuple[bytes, bytes]:
        """Run the handler; every failure becomes an ERROR reply, never a dead worker."""
        try:
            request: Any = P.unpack(body, "request body")
        except ProtocolError as exc:
            return P.ERROR, P.error_body(P.ErrorCode.BAD_REQUEST, str(exc))
        try:
            result = await self.agent.handle(request)
            return P.REPLY, P.pack(result)
        except AgentError as exc:
            return P.ERROR, P.error_body(exc.code, exc.message)
        except Exception as exc:  # the handler's bug must not take the worker down
            log.exception("%s: handler failed", self.name)
            return P.ERROR, P.error_body(P.ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
