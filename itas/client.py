"""Client library: ``AsyncClient`` (anyio) and ``Client``, its blocking twin.

Many requests share one DEALER connection; each waits on its own event, found
by the request's key, which the broker and the worker echo: a reply is only
ever accepted by the request it was made for.

The client learns the broker's epoch before it sends: when it opens, and again
after any silence longer than a heartbeat interval (an empty HEARTBEAT, which
the broker answers with its epoch). While requests are pending it heartbeats;
a new epoch (the broker restarted) means every request sent under the old one
is sent again, and a long silence (the broker is gone, or the connection is
half-open) means a new socket and the same. A resend carries the same key, so
a broker that did get the first copy keeps one.

Each request carries its deadline: the smaller of its timeout and the caller's
anyio deadline (``current_effective_deadline``), so sub-calls made while
serving a request end when it does. A caller that gives up (timeout or
cancellation) sends CANCEL, and the broker stops the work on its worker.
"""

from __future__ import annotations

import itertools
import math
import os
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import anyio
import anyio.abc
import anyio.from_thread
import zmq
import zmq.asyncio

from itas import protocol as P
from itas.errors import (
    BrokerUnreachable,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    ServiceUnavailable,
)
from itas.query import ORCHESTRATOR_SERVICE, Answer, ArchitectureLike, PromptLike, query_body
from itas.security import CurveKeys

DEFAULT_BROKER = "tcp://127.0.0.1:5555"
DEFAULT_TIMEOUT_S = 60.0
HEARTBEAT_INTERVAL_S = 1.0
HEARTBEAT_LIVENESS = 3
_DRAIN_BATCH = 256
#: Messages queued each way on the client's socket; sends beyond it wait.
SOCKET_HWM = 10_000


@dataclass(eq=False)
class _Pending:
    service: str
    body: bytes
    deadline: float
    epoch: bytes | None = None  # the broker epoch it was last sent under; None: not sent
    done: anyio.Event = field(default_factory=anyio.Event)
    reply: tuple[bytes, int, bytes] | None = None  # (header, attempts, body)


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded reply and how it came about."""

    body: Any
    attempts: int  # workers the broker gave the request to; > 1 means one was lost
    latency_s: float


class AsyncClient:
    """Async request/reply to broker services.

    Use as ``async with AsyncClient(broker) as client: await client.request(...)``.
    """

    def __init__(
        self,
        broker: str = DEFAULT_BROKER,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        curve: CurveKeys | None = None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL_S,
        liveness: int = HEARTBEAT_LIVENESS,
    ) -> None:
        self.broker = broker
        self.timeout = timeout
        self.curve = curve
        self.heartbeat_interval = heartbeat_interval
        self.silence_limit = heartbeat_interval * liveness
        self._client_id = os.urandom(P.KEY_BYTES // 2)
        self._ids = itertools.count(1)
        self._pending: dict[bytes, _Pending] = {}
        self._context: zmq.asyncio.Context | None = None
        self._socket: zmq.asyncio.Socket | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._epoch: bytes | None = None
        self._epoch_known = anyio.Event()
        self._last_heard = 0.0
        self._asking_since: float | None = None  # first unanswered ask since last heard
        self.resends = 0

    async def __aenter__(self) -> Self:
        self._context = zmq.asyncio.Context()
        self._socket = self._connect()
        self._last_heard = anyio.current_time()
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._io_loop)
        await self._ask_epoch()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._tasks is not None and self._context is not None
        self._tasks.cancel_scope.cancel()
        await self._tasks.__aexit__(None, None, None)
        self._tasks = None
        if self._socket is not None:
            self._socket.close(linger=0)
        self._context.term()

    def _connect(self) -> zmq.asyncio.Socket:
        assert self._context is not None
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, SOCKET_HWM)
        sock.setsockopt(zmq.RCVHWM, SOCKET_HWM)
        if self.curve is not None:
            self.curve.apply_client(sock)
        sock.connect(self.broker)
        return sock

    # -- requests ----------------------------------------------------------------

    async def request(self, service: str, body: Any, *, timeout: float | None = None) -> Any:
        """Send ``body`` to ``service`` and return the decoded reply body.

        The deadline is the smaller of ``timeout`` (default: the client's) and
        the caller's anyio deadline. Raises ``ServiceUnavailable`` (no worker
        serves it), ``RequestTimeout`` (the deadline passed: the message says
        whether the broker never answered, no worker was free, or which worker
        did not answer), ``RemoteError`` (an error reply with its code, such as
        ``overloaded`` or ``too_large`` from the broker) or
        ``BrokerUnreachable`` (client not open).
        """
        return (await self.call(service, body, timeout=timeout)).body

    async def call(self, service: str, body: Any, *, timeout: float | None = None) -> Reply:
        """Like ``request``, but also says how many attempts it took and how long."""
        if self._tasks is None or self._socket is None:
            raise BrokerUnreachable("client is not open: use 'async with AsyncClient(...)'")
        started = anyio.current_time()
        timeout = self.timeout if timeout is None else timeout
        outer = anyio.current_effective_deadline()  # the caller's own deadline, if any
        if not math.isinf(outer):
            timeout = max(0.0, min(timeout, outer - started))
        data = P.pack(body)
        if len(data) > P.MAX_MESSAGE_BYTES:  # the broker would refuse it: say so without asking
            raise RemoteError(P.ErrorCode.TOO_LARGE, f"request of {len(data)} bytes is over the "
                              f"broker's limit of {P.MAX_MESSAGE_BYTES} bytes", service)
        key = self._client_id + next(self._ids).to_bytes(P.KEY_BYTES // 2, "big")
        pending = _Pending(service, data, started + timeout)
        self._pending[key] = pending
        try:
            with anyio.move_on_after(timeout):
                await self._send_when_epoch_known(key, pending)
                await pending.done.wait()
        finally:
            del self._pending[key]
            if pending.reply is None and pending.epoch is not None:
                await self._cancel(key)
        if pending.reply is None:
            if pending.epoch is None:
                raise RequestTimeout(f"{service!r}: the broker {self.broker} did not answer "
                                     f"within {timeout:g} s (is it running?)")
            raise RequestTimeout(f"no reply from {service!r} within {timeout:g} s")
        header, attempts, data = pending.reply
        if header == P.REPLY:
            return Reply(P.unpack(data, f"reply from {service!r}"), attempts,
                         anyio.current_time() - started)
        code, message = P.parse_error(data)
        if code == P.ErrorCode.SERVICE_UNAVAILABLE:
            raise ServiceUnavailable(service, message)
        if code == P.ErrorCode.DEADLINE:
            raise RequestTimeout(message)
        raise RemoteError(code, message, service)

    async def ask(self, prompt: PromptLike, *, architecture: ArchitectureLike,
                  trace: bool = False, budget: dict[str, int] | None = None,
                  sim: dict[str, Any] | None = None, tests: list[str] | None = None,
                  timeout: float | None = None) -> Answer:
        """Answer a prompt (or a conversation) with an architecture, through the orchestrator.

        ``architecture`` is a spec file path, a mapping or an ``Architecture``;
        it is validated before anything is sent. ``sim`` is an answer key for
        simulated models only (see ``itas.agents.providers.sim``).
        """
        body = query_body(prompt, architecture, trace=trace, budget=budget, sim=sim, tests=tests)
        return Answer.from_reply(await self.request(ORCHESTRATOR_SERVICE, body, timeout=timeout))

    async def status(self, *, timeout: float = 5.0) -> dict[str, Any]:
        """The broker's services, workers, queue depths and counters."""
        result: dict[str, Any] = await self.request(P.STATUS_SERVICE, None, timeout=timeout)
        return result

    async def _send_when_epoch_known(self, key: bytes, pending: _Pending) -> None:
        """Send once the broker's epoch is known, asking for it first after a silence.

        Knowing the epoch a request went out under is what lets a restart be
        noticed and the request resent; the ask costs one round trip, and only
        after the client has heard nothing for a heartbeat interval.
        """
        if anyio.current_time() - self._last_heard > self.heartbeat_interval:
            await self._ask_epoch()
        while not self._epoch_known.is_set():
            await self._epoch_known.wait()
        if pending.epoch is None:  # a restart noticed meanwhile may have sent it already
            await self._send(key, pending)

    async def _ask_epoch(self) -> None:
        if self._epoch_known.is_set():
            self._epoch_known = anyio.Event()
        if self._asking_since is None:
            self._asking_since = anyio.current_time()
        assert self._socket is not None
        await self._socket.send_multipart([P.HEARTBEAT])

    async def _send(self, key: bytes, pending: _Pending) -> None:
        assert self._socket is not None
        # The broker's deadline falls a little before ours, so an unserved request
        # gets the broker's clear error rather than a bare timeout.
        remaining = pending.deadline - anyio.current_time()
        remaining_ms = max(1, int((remaining - min(0.25, remaining / 10)) * 1000))
        pending.epoch = self._epoch
        meta = P.request_meta(pending.service, remaining_ms)
        try:
            await self._socket.send_multipart([P.REQUEST, key, meta, pending.body])
        except zmq.ZMQError:  # the socket is being replaced; the resend that follows covers it
            pass

    async def _cancel(self, key: bytes) -> None:
        """Tell the broker this request is given up, so its worker stops (best effort)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(0.5):
            if self._socket is not None:
                try:
                    await self._socket.send_multipart([P.CANCEL, key])
                except zmq.ZMQError:
                    pass

    async def _resend(self, unless_epoch: bytes | None) -> None:
        """Send again every request sent under another epoch than ``unless_epoch``."""
        for key, pending in list(self._pending.items()):
            if pending.reply is None and pending.epoch is not None \
                    and pending.epoch != unless_epoch:
                self.resends += 1
                await self._send(key, pending)

    # -- background ----------------------------------------------------------------

    async def _io_loop(self) -> None:
        """Receive replies, heartbeat while requests are pending, replace a silent socket.

        One task owns the socket's receive side, so replacing the socket never
        races a pending receive.
        """
        next_beat = anyio.current_time() + self.heartbeat_interval
        while True:
            sock = self._socket
            assert sock is not None
            wait_ms = max(0.0, next_beat - anyio.current_time()) * 1000
            if await sock.poll(int(wait_ms)):
                for _ in range(_DRAIN_BATCH):
                    try:
                        frames = await sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._last_heard = anyio.current_time()
                    self._asking_since = None
                    await self._on_message(frames)
            now = anyio.current_time()
            if now >= next_beat:
                next_beat = now + self.heartbeat_interval
                await self._heartbeat(now)

    async def _on_message(self, frames: list[bytes]) -> None:
        header = frames[0]
        if header in (P.REPLY, P.ERROR) and len(frames) == 4:
            pending = self._pending.get(frames[1])  # the key: only its own request takes it
            if pending is None or pending.reply is not None:
                return
            try:
                attempts = P.parse_int(frames[2], "REPLY attempts")
            except ProtocolError:
                return
            pending.reply = (header, attempts, frames[3])
            pending.done.set()
        elif header == P.HEARTBEAT and len(frames) == 2:
            epoch, self._epoch = self._epoch, frames[1]
            if epoch is not None and frames[1] != epoch:
                await self._resend(unless_epoch=frames[1])
            self._epoch_known.set()

    async def _heartbeat(self, now: float) -> None:
        if not self._pending:  # idle: nothing to lose; the next send asks first
            return
        if self._asking_since is not None and now - self._asking_since > self.silence_limit:
            # Silence: a fresh socket (the old one may be half-open), then resend.
            assert self._socket is not None
            self._socket.close(linger=0)
            self._socket = self._connect()
            self._asking_since = now
            await self._resend(unless_epoch=None)
        elif self._asking_since is None:
            self._asking_since = now
        assert self._socket is not None
        await self._socket.send_multipart([P.HEARTBEAT])


class Client:
    """Blocking twin of ``AsyncClient``: the same code, run on a private event loop thread."""

    def __init__(self, broker: str = DEFAULT_BROKER, **options: Any) -> None:
        self._portal_cm = anyio.from_thread.start_blocking_portal("asyncio")
        self._portal = self._portal_cm.__enter__()
        try:
            self._client_cm = self._portal.wrap_async_context_manager(
                AsyncClient(broker, **options)
            )
            self._async = self._client_cm.__enter__()
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise

    def _call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._portal.call(lambda: func(*args, **kwargs))

    def request(self, service: str, body: Any, *, timeout: float | None = None) -> Any:
        return self._call(self._async.request, service, body, timeout=timeout)

    def ask(self, prompt: PromptLike, *, architecture: ArchitectureLike, **options: Any
            ) -> Answer:
        """Blocking ``AsyncClient.ask``."""
        answer: Answer = self._call(self._async.ask, prompt, architecture=architecture, **options)
        return answer

    def status(self, *, timeout: float = 5.0) -> dict[str, Any]:
        result: dict[str, Any] = self._call(self._async.status, timeout=timeout)
        return result

    def close(self) -> None:
        self._client_cm.__exit__(None, None, None)
        self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()
