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

import contextlib
import itertools
import math
import os
import types
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import anyio
import anyio.abc
import anyio.from_thread
import zmq
import zmq.asyncio

from itas import protocol as P
from itas.errors import (
    AuthenticationError,
    BrokerUnreachable,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    ServiceUnavailable,
)
from itas.query import ORCHESTRATOR_SERVICE, Answer, ArchitectureLike, PromptLike, query_body
from itas.security import UNAUTHORIZED, CurveKeys, HandshakeWatch, watch_handshake

DEFAULT_BROKER = "tcp://127.0.0.1:5555"
DEFAULT_TIMEOUT_S = 60.0
STATUS_TIMEOUT_S = 5.0  # a broker answers its status in milliseconds; this is "no broker"
HEARTBEAT_INTERVAL_S = 1.0
HEARTBEAT_LIVENESS = 3
_DRAIN_BATCH = 256
#: Messages queued each way on the client's socket; sends beyond it wait.
SOCKET_HWM = 10_000


@contextlib.contextmanager
def translated_zmq_errors(what: str) -> Iterator[None]:
    """The one place zmq errors become itas errors: ``BrokerUnreachable`` naming ``what``
    (a malformed or unknown endpoint, a closed context), chained to the zmq error."""
    try:
        yield
    except zmq.ZMQError as exc:
        raise BrokerUnreachable(f"{what}: {exc.strerror}") from exc


#: Called with each decoded partial reply (``itas.protocol``: PARTIAL) of a request; it runs
#: in the client's receive loop, so it must be quick (hand the value on, never wait long).
OnPartial = Callable[[Any], Awaitable[None]]


@dataclass(eq=False)
class _Pending:
    service: str
    body: bytes
    deadline: float
    epoch: bytes | None = None  # the broker epoch it was last sent under; None: not sent
    done: anyio.Event = field(default_factory=anyio.Event)
    reply: tuple[bytes, int, bytes] | None = None  # (header, attempts, body)
    on_partial: OnPartial | None = None


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
        self._monitor: zmq.asyncio.Socket | None = None  # the socket's handshakes
        self._refused: str | None = None  # set once the broker refused our key
        self._orchestrator_seen = False  # ask() checks once per client, not per query
        self.resends = 0

    async def __aenter__(self) -> Self:
        self._context = zmq.asyncio.Context()
        try:
            self._socket = self._connect()
        except BrokerUnreachable:
            self._context.term()
            raise
        self._last_heard = anyio.current_time()
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        self._tasks.start_soon(self._io_loop)
        self._tasks.start_soon(self._watch_handshake)
        await self._ask_epoch()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._tasks is not None and self._context is not None
        self._tasks.cancel_scope.cancel()
        await self._tasks.__aexit__(None, None, None)
        self._tasks = None
        if self._socket is not None:
            self._socket.close(linger=0)
        if self._monitor is not None:
            self._monitor.close(linger=0)
        self._context.term()

    def _connect(self) -> zmq.asyncio.Socket:
        assert self._context is not None
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, SOCKET_HWM)
        sock.setsockopt(zmq.RCVHWM, SOCKET_HWM)
        if self.curve is not None:
            self.curve.apply_client(sock)
        monitor = watch_handshake(sock)
        with translated_zmq_errors(f"cannot connect to broker {self.broker!r}"):
            try:
                sock.connect(self.broker)
            except zmq.ZMQError:
                monitor.close(linger=0)  # an open socket would hang the context's term()
                sock.close(linger=0)
                raise
        self._monitor = monitor
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

    async def call(self, service: str, body: Any, *, timeout: float | None = None,
                   on_partial: OnPartial | None = None) -> Reply:
        """Like ``request``, but also says how many attempts it took and how long.

        ``on_partial`` receives the partial replies of a request whose body asks for them
        (a map with ``"stream": true``; see ``itas.protocol``), before this returns."""
        if self._tasks is None or self._socket is None:
            raise BrokerUnreachable("client is not open: use 'async with AsyncClient(...)'")
        if self._refused is not None:
            raise AuthenticationError(self._refused)
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
        pending = _Pending(service, data, started + timeout, on_partial=on_partial)
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
        if code == UNAUTHORIZED:
            raise AuthenticationError(message)
        raise RemoteError(code, message, service)

    async def ask(self, prompt: PromptLike, *, architecture: ArchitectureLike,
                  trace: bool = False, budget: dict[str, int] | None = None,
                  sim: dict[str, Any] | None = None, tests: list[str] | None = None,
                  timeout: float | None = None, fresh: bool = False,
                  check: bool = True,
                  on_progress: Callable[[dict[str, Any]], Awaitable[None]] | None = None
                  ) -> Answer:
        """Answer a prompt (or a conversation) with an architecture, through the orchestrator.

        ``architecture`` is a spec file path, a mapping or an ``Architecture``;
        it is validated before anything is sent. ``sim`` is an answer key for
        simulated models only (see ``itas.agents.providers.sim``); ``fresh`` asks every model
        again instead of replaying the response cache. With ``check`` (the default), this
        client's first query fails at once (``require_services``) if no broker answers or no
        orchestrator is registered, instead of after ``timeout``; later queries are not
        checked, so an orchestrator restarting under load delays them rather than failing
        them. An agent service the architecture names and nobody serves is named by the
        broker after its grace (``--unavailable-grace``). ``on_progress`` is awaited with
        the orchestrator's event after each layer (``layer``, ``layers``, ``candidates``,
        ``latency_s``), sent as partial replies while the query runs.
        """
        body = query_body(prompt, architecture, trace=trace, budget=budget, sim=sim, tests=tests,
                          fresh=fresh)
        if check and not self._orchestrator_seen:
            await self.require_services([ORCHESTRATOR_SERVICE])
            self._orchestrator_seen = True
        if on_progress is None:
            return Answer.from_reply(await self.request(ORCHESTRATOR_SERVICE, body,
                                                        timeout=timeout))
        report = on_progress

        async def progress_only(partial: Any) -> None:  # text deltas are not wanted here
            if isinstance(partial, dict) and isinstance(partial.get("progress"), dict):
                await report(partial["progress"])

        reply = await self.call(ORCHESTRATOR_SERVICE, {**body, "stream": True, "progress": True},
                                timeout=timeout, on_partial=progress_only)
        return Answer.from_reply(reply.body)

    async def require_services(self, services: Sequence[str], *,
                               timeout: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
        """Fail fast, before a long request: ``BrokerUnreachable`` when no broker answers its
        status within ``timeout``, ``ServiceUnavailable`` naming every service in
        ``services`` that no worker serves. Returns the status. (An ``AuthenticationError``
        from a broker that refuses this key passes through.)"""
        try:
            status = await self.status(timeout=timeout)
        except RequestTimeout as exc:
            raise BrokerUnreachable(f"no broker answered at {self.broker} within "
                                    f"{timeout:g} s") from exc
        live = status.get("services", {})
        missing = [s for s in dict.fromkeys(services) if live.get(s, {}).get("workers", 0) == 0]
        if missing:
            raise ServiceUnavailable(missing[0], f"no worker serves {', '.join(missing)} at "
                                                 f"{self.broker}")
        return status

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
        # A restart noticed meanwhile may have sent it already; a refused key answered it.
        if pending.epoch is None and not pending.done.is_set():
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
        meta = P.request_meta(key, pending.service, remaining_ms)
        try:
            await self._socket.send_multipart([P.REQUEST, meta, pending.body])
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

    async def _watch_handshake(self) -> None:
        """Fail every pending request, and all later ones, once the broker refuses our
        CURVE key (or we and it disagree on CURVE): otherwise the refusal looks like silence
        and each waits its timeout. The socket (and its monitor) may be replaced meanwhile;
        this task closes the old monitors."""
        monitor = self._monitor
        watch = HandshakeWatch(self.broker, self.curve)
        try:
            while monitor is not None:
                if await monitor.poll(200):
                    line = watch.refusal(await monitor.recv_multipart())
                    if line is not None:
                        self._refused = line
                        for pending in self._pending.values():
                            if pending.reply is None:
                                pending.reply = (P.ERROR, 0, P.error_body(UNAUTHORIZED, line))
                                pending.done.set()
                        self._epoch_known.set()  # release requests waiting for the epoch
                if monitor is not self._monitor:
                    monitor.close(linger=0)
                    monitor = self._monitor
        finally:
            if monitor is not None and monitor is not self._monitor:
                monitor.close(linger=0)

    async def _on_message(self, frames: list[bytes]) -> None:
        header = frames[0]
        if header in (P.REPLY, P.ERROR) and len(frames) == 3:
            try:
                key, attempts = P.parse_reply_meta(frames[1])
            except ProtocolError:
                return
            pending = self._pending.get(key)  # only its own request takes a reply
            if pending is None or pending.reply is not None:
                return
            pending.reply = (header, attempts, frames[2])
            pending.done.set()
        elif header == P.PARTIAL and len(frames) == 3:
            pending = self._pending.get(frames[1])
            if pending is None or pending.reply is not None or pending.on_partial is None:
                return
            try:
                partial = P.unpack(frames[2], "PARTIAL body")
            except ProtocolError:
                return
            await pending.on_partial(partial)
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
        with translated_zmq_errors(f"broker {self.broker!r}"):
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

    def require_services(self, services: Sequence[str], *, timeout: float = STATUS_TIMEOUT_S
                         ) -> dict[str, Any]:
        """Blocking ``AsyncClient.require_services``."""
        result: dict[str, Any] = self._call(self._async.require_services, services,
                                            timeout=timeout)
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
