"""The broker's socket layer: one ROUTER, one poll loop, the state in ``Broker``.

The loop is synchronous on purpose: one socket, no awaits, so every message
costs only its recv, its routing and its send. Messages are drained in batches
after each poll; time-driven work (heartbeats, expiry) runs at most every
``TICK_S``.

Memory is bounded at the socket: no frame larger than the message limit is
accepted (``MAXMSGSIZE``), each peer's queue holds at most ``PEER_HWM``
messages each way, and a multi-frame message is measured frame by frame as it
is read, without copying it into Python, so an oversize one is answered with
``too_large`` and freed before it is ever assembled. (ZeroMQ itself delivers a
message whole, so one peer can still hold up to ``PEER_HWM`` messages in the
broker's buffers; the limits make that finite.)
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.auth.thread

from itas import protocol as P
from itas.broker.core import (
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_LIVENESS,
    MAX_ATTEMPTS,
    UNAVAILABLE_GRACE_S,
    Broker,
)
from itas.broker.metrics import BrokerMetrics
from itas.errors import ConfigError
from itas.security import CurveKeys, LoggingAuthenticator, Roles, check_bind, refusal, sender_key

log = logging.getLogger("itas.broker")

TICK_S = 0.05
DRAIN_BATCH = 256
#: Messages queued per peer each way. A worker holds at most its credit of requests,
#: a client at most its window; a peer that lets this many pile up is not reading.
PEER_HWM = 50_000
REFUSAL_LOG_EVERY_S = 60.0
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)


class BrokerServer:
    """Binds the ROUTER and runs the loop until ``stop()`` (thread-safe) or a signal."""

    def __init__(
        self,
        bind: str,
        *,
        curve: CurveKeys | None = None,
        curve_allow: str | Path | None = None,
        insecure: bool = False,
        roles: Roles | None = None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL_S,
        liveness: int = HEARTBEAT_LIVENESS,
        max_attempts: int = MAX_ATTEMPTS,
        max_message_bytes: int = P.MAX_MESSAGE_BYTES,
        unavailable_grace: float = UNAVAILABLE_GRACE_S,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        check_bind(bind, curve=curve is not None, insecure=insecure)
        if roles is not None and curve is None:
            raise ConfigError("a roles file needs CURVE (--curve-secret and --curve-allow): "
                              "without keys the broker cannot tell who is who")
        self._context = zmq.Context()
        self._auth: zmq.auth.thread.ThreadAuthenticator | None = None
        self._roles = roles
        self._refusals_logged: dict[str, float] = {}
        self.socket = self._context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.socket.setsockopt(zmq.LINGER, 500)
        self.socket.setsockopt(zmq.SNDHWM, PEER_HWM)
        self.socket.setsockopt(zmq.RCVHWM, PEER_HWM)
        # No single frame above the limit gets in (the peer is disconnected instead).
        self.socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self._max_message_bytes = max_message_bytes
        if curve is not None:
            self._auth = LoggingAuthenticator(self._context, log)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(curve_allow or "."))
            curve.apply_server(self.socket)
        self.socket.bind(bind)
        self.endpoint: str = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.broker = Broker(
            self._send,
            heartbeat_interval=heartbeat_interval,
            liveness=liveness,
            max_attempts=max_attempts,
            max_message_bytes=max_message_bytes,
            unavailable_grace=unavailable_grace,
        )
        self.metrics = metrics
        if metrics is not None:
            self.broker.on_reply = metrics.observe
        self._stopping = threading.Event()

    def _send(self, frames: list[bytes]) -> bool:
        # Frame by frame with plain int flags: send_multipart's per-frame enum arithmetic
        # cost more than the routing itself. ZeroMQ checks the HWM and the peer on the
        # first frame only, so a send cannot stop halfway through a message.
        send = self.socket.send
        try:
            for frame in frames[:-1]:
                send(frame, _MORE_NOBLOCK)
            send(frames[-1], _NOBLOCK)
            return True
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the peer is gone
            if exc.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                log.warning("send to %r failed: %s", frames[0][:16], exc)
            return False

    def _discard_rest(self, frame: zmq.Frame, head: list[bytes]) -> None:
        while frame.more:
            frame = self.socket.recv(_NOBLOCK, copy=False)
        self.broker.oversize(head)

    def _refuse(self, roles: Roles, frames: list[bytes], key: str | None) -> bool:
        """Authorization, before routing: True when the sender's role forbids the message,
        which is then answered with an ``unauthorized`` error and logged, never routed."""
        refused = refusal(roles, frames, key)
        if refused is None:
            return False
        self.broker.counters["refused_unauthorized"] += 1
        now = time.monotonic()
        if now - self._refusals_logged.get(refused.log_line, -REFUSAL_LOG_EVERY_S) >= \
                REFUSAL_LOG_EVERY_S:  # a refused peer may retry in a loop: a line a minute
            if len(self._refusals_logged) > 10_000:
                self._refusals_logged.clear()
            self._refusals_logged[refused.log_line] = now
            log.warning("%s", refused.log_line)
        self._send(refused.reply)
        return True

    def stop(self) -> None:
        self._stopping.set()

    def serve_forever(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        recv = self.socket.recv
        handle = self.broker.handle
        limit = self._max_message_bytes
        roles = self._roles
        next_tick = time.monotonic() + TICK_S
        try:
            while not self._stopping.is_set():
                timeout_ms = max(0.0, next_tick - time.monotonic()) * 1000
                if poller.poll(int(timeout_ms)):
                    for _ in range(DRAIN_BATCH):
                        try:  # recv_multipart reads the "more" option through enums per frame
                            frame = recv(_NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        key = sender_key(frame) if roles is not None else None
                        frames = [frame.bytes]
                        size = 0
                        while frame.more:
                            frame = recv(_NOBLOCK, copy=False)
                            size += len(frame)
                            if size > limit:  # free it unread: only its head is kept
                                self._discard_rest(frame, frames[:3])
                                break
                            frames.append(frame.bytes)
                        else:
                            if roles is not None and self._refuse(roles, frames, key):
                                continue
                            handle(frames)
                now = time.monotonic()
                if now >= next_tick:
                    self.broker.tick()
                    if self.metrics is not None:
                        self.metrics.snapshots.serve(self.broker.status)
                    next_tick = now + TICK_S
            self.broker.disconnect_all()
        finally:
            self.close()

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        self.socket.close()
        if self._auth is not None:
            self._auth.stop()
        self._context.term()


def run_broker(server: BrokerServer, announce: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; announce the bound endpoint (tests bind port 0)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.stop())
    message = f"itas broker listening on {server.endpoint}"
    say = announce or (lambda m: print(m, file=sys.stdout, flush=True))
    say(message)
    if server.metrics is not None:
        say(f"itas broker metrics on {server.metrics.url}")
    server.serve_forever()
