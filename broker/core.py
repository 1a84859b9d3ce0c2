"""Broker state and routing: plain classes, no sockets, so they are unit-tested directly.

The shape follows the ZeroMQ guide's Majordomo broker: services (name -> waiting
requests and workers), workers (identity -> service, credit, expiry, in-flight
tickets) and one ``handle`` entry that routes by command. ``send`` is the only
way out; the socket layer (``itas.broker.server``) supplies it. ``send`` returns
False when the peer is gone (ROUTER_MANDATORY), which for a worker means its
requests go elsewhere at once instead of after the heartbeat expiry.

What the broker promises: a request is answered exactly once from the client's
point of view (a reply, or an error naming why), unless the client itself goes
away. Replies whose ticket the broker no longer knows are dropped and counted;
the client resends after a broker restart.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from itas import protocol as P
from itas.errors import ProtocolError

HEARTBEAT_INTERVAL_S = 1.0
HEARTBEAT_LIVENESS = 3
MAX_ATTEMPTS = 3
#: How long a request waits for a service that has no worker at all before it fails with
#: SERVICE_UNAVAILABLE (a service whose workers are all busy waits up to the deadline).
UNAVAILABLE_GRACE_S = 5.0

Send = Callable[[list[bytes]], bool]


@dataclass(slots=True, eq=False)
class QueuedRequest:
    client: bytes
    request_id: int  # the client's id, echoed in the reply
    service: str
    body: bytes
    deadline: float
    timeout_s: float
    arrived: float
    attempts: int = 0


@dataclass(slots=True, eq=False)
class RegisteredWorker:
    identity: bytes
    service: Service
    credit: int
    name: str
    interval: float  # the worker's own heartbeat interval: both sides beat at its pace
    ttl: float
    expiry: float
    next_beat: float
    inflight: dict[bytes, QueuedRequest] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class Service:
    name: str
    waiting: collections.deque[QueuedRequest] = field(default_factory=collections.deque)
    workers: list[RegisteredWorker] = field(default_factory=list)
    unserved_since: float = 0.0  # when it last had no worker (creation, or the last left)


class Broker:
    """Routes requests to workers by service; see the module docstring for the promises."""

    def __init__(
        self,
        send: Send,
        *,
        heartbeat_interval: float = HEARTBEAT_INTERVAL_S,
        liveness: int = HEARTBEAT_LIVENESS,
        max_attempts: int = MAX_ATTEMPTS,
        max_message_bytes: int = P.MAX_MESSAGE_BYTES,
        unavailable_grace: float = UNAVAILABLE_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._clock = clock
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        self.max_attempts = max_attempts
        self.max_message_bytes = max_message_bytes
        self.unavailable_grace = unavailable_grace
        # A restarted broker hears from its workers only as they notice the restart (their
        # next heartbeat); until one expiry has passed, no service counts as unserved.
        self._workers_back_by = clock() + heartbeat_interval * liveness
        self.epoch = os.urandom(8)
        self.services: dict[str, Service] = {}
        self.workers: dict[bytes, RegisteredWorker] = {}
        self._tickets = 0
        self.counters: collections.Counter[str] = collections.Counter()
        # Keyed by the whole header, so one dict lookup checks version and command.
        self._handlers = {
            P.REQUEST: self._on_request,
            P.REPLY: self._on_reply,
            P.ERROR: self._on_reply,
            P.READY: self._on_ready,
            P.HEARTBEAT: self._on_heartbeat,
            P.DISCONNECT: self._on_disconnect,
        }

    # -- input ---------------------------------------------------------------

    def handle(self, frames: list[bytes]) -> None:
        """Route one message; frames[0] is the sender's identity. Never raises on bad input."""
        if len(frames) < 2:
            self.counters["dropped_malformed"] += 1
            return
        if sum(map(len, frames)) > self.max_message_bytes:
            self.counters["dropped_oversize"] += 1
            return
        handler = self._handlers.get(frames[1])
        if handler is None:
            self.counters["dropped_malformed"] += 1
            return
        try:
            handler(frames)
        except ProtocolError:
            self.counters["dropped_malformed"] += 1

    def _on_request(self, frames: list[bytes]) -> None:
        if len(frames) != 4:
            raise ProtocolError("REQUEST: expected 3 frames")
        identity, _, meta, body = frames
        request_id, service_name, timeout_ms = P.parse_request_meta(meta)
        self.counters["requests"] += 1
        if service_name == P.STATUS_SERVICE:
            self._send([identity, P.REPLY, P.reply_meta(request_id, 0), P.pack(self.status())])
            return
        timeout_s = timeout_ms / 1000.0
        now = self._clock()
        request = QueuedRequest(identity, request_id, service_name, body, now + timeout_s,
                                timeout_s, now)
        service = self._service(service_name)
        service.waiting.append(request)
        self._dispatch(service)

    def _on_reply(self, frames: list[bytes]) -> None:
        if len(frames) != 4:
            raise ProtocolError("REPLY/ERROR: expected 3 frames")
        identity, hdr, ticket, body = frames
        worker = self.workers.get(identity)
        if worker is None:
            self.counters["dropped_stale"] += 1
            self._send([identity, P.DISCONNECT])
            return
        if hdr == P.ERROR:
            P.parse_error(body)  # a malformed error body is the worker's bug: drop it here
        worker.expiry = self._clock() + worker.ttl
        request = worker.inflight.pop(ticket, None)
        if request is None:
            self.counters["dropped_stale"] += 1
        else:
            self.counters["replied"] += 1
            meta = P.reply_meta(request.request_id, request.attempts)
            if not self._send([request.client, hdr, meta, body]):
                self.counters["undeliverable"] += 1
        if worker.service.waiting:
            self._dispatch(worker.service)

    def _on_ready(self, frames: list[bytes]) -> None:
        if len(frames) != 3:
            raise ProtocolError("READY: expected 2 frames")
        identity = frames[0]
        service_name, credit, name, heartbeat_ms = P.parse_ready(frames[2])
        old = self.workers.get(identity)
        if old is not None:  # announced again (reconnect): its old work goes elsewhere
            self._remove_worker(old, lost=False)
        service = self._service(service_name)
        interval = heartbeat_ms / 1000.0 if heartbeat_ms else self.heartbeat_interval
        now = self._clock()
        ttl = interval * self.liveness
        worker = RegisteredWorker(identity, service, credit, name, interval, ttl, now + ttl, now + interval)
        self.workers[identity] = worker
        service.workers.append(worker)
        self.counters["workers_joined"] += 1
        self._send([identity, P.HEARTBEAT, self.epoch])
        self._dispatch(service)

    def _on_heartbeat(self, frames: list[bytes]) -> None:
        identity = frames[0]
        worker = self.workers.get(identity)
        if worker is not None:
            worker.expiry = self._clock() + worker.ttl
        else:  # a client, or a worker the broker forgot: the epoch tells it what to do
            self._send([identity, P.HEARTBEAT, self.epoch])

    def _on_disconnect(self, frames: list[bytes]) -> None:
        worker = self.workers.get(frames[0])
        if worker is not None:
            self._remove_worker(worker, lost=False)

    # -- dispatch ------------------------------------------------------------

    def _service(self, name: str) -> Service:
        service = self.services.get(name)
        if service is None:
            service = self.services[name] = Service(name, unserved_since=self._clock())
        return service

    def _dispatch(self, service: Service) -> None:
        """Hand waiting requests to the least-loaded workers that have credit left."""
        waiting, workers = service.waiting, service.workers
        while waiting and workers:
            best, best_load = None, 1.0
            for worker in workers:
                load = len(worker.inflight) / worker.credit
                if load < best_load:
                    best, best_load = worker, load
            if best is None:
                return
            request = waiting.popleft()
            self._tickets += 1
            ticket = self._tickets.to_bytes(8, "big")
            request.attempts += 1
            best.inflight[ticket] = request
            self.counters["dispatched"] += 1
            if not self._send([best.identity, P.REQUEST, ticket, request.body]):
                self._remove_worker(best, lost=True)

    def _remove_worker(self, worker: RegisteredWorker, *, lost: bool) -> None:
        """Forget a worker; its in-flight requests go back to the front of the queue."""
        self.workers.pop(worker.identity, None)
        service = worker.service
        if worker in service.workers:
            service.workers.remove(worker)
            if not service.workers:
                service.unserved_since = self._clock()
        self.counters["workers_lost" if lost else "workers_left"] += 1
        for request in reversed(list(worker.inflight.values())):
            if not lost:
                request.attempts -= 1  # a clean goodbye is not a failed attempt
            if request.attempts >= self.max_attempts:
                self._fail(request, P.ErrorCode.WORKER_LOST,
                           f"service {request.service!r}: {request.attempts} workers were lost "
                           "while running this request; giving up")
            else:
                self.counters["retried"] += 1
                service.waiting.appendleft(request)
        worker.inflight.clear()
        self._dispatch(service)

    def _fail(self, request: QueuedRequest, code: str, message: str) -> None:
        meta = P.reply_meta(request.request_id, request.attempts)
        self._send([request.client, P.ERROR, meta, P.error_body(code, message)])

    # -- time ----------------------------------------------------------------

    def tick(self) -> None:
        """Expire silent workers and overdue requests; send heartbeats when due."""
        now = self._clock()
        for worker in [w for w in self.workers.values() if w.expiry < now]:
            self._remove_worker(worker, lost=True)
        for name, service in list(self.services.items()):
            if any(r.deadline <= now or self._unserved_too_long(service, r, now)
                   for r in service.waiting):
                self._expire(service, now)
            if not service.waiting and not service.workers:
                del self.services[name]  # names from bad clients must not pile up
        for worker in list(self.workers.values()):
            if now >= worker.next_beat:
                worker.next_beat = now + worker.interval
                self._send([worker.identity, P.HEARTBEAT, self.epoch])

    def _expire(self, service: Service, now: float) -> None:
        keep: collections.deque[QueuedRequest] = collections.deque()
        for request in service.waiting:
            if service.workers:
                if request.deadline > now:
                    keep.append(request)
                    continue
                self.counters["expired"] += 1
                self._fail(request, P.ErrorCode.EXPIRED,
                           f"service {service.name!r} had no free worker within "
                           f"{request.timeout_s:g} s")
            elif request.deadline > now and not self._unserved_too_long(service, request, now):
                keep.append(request)
            else:
                self.counters["unavailable"] += 1
                waited = min(self.unavailable_grace, request.timeout_s)
                self._fail(request, P.ErrorCode.SERVICE_UNAVAILABLE,
                           f"no worker serves {service.name!r} (none registered in "
                           f"{waited:g} s); {start_hint(service.name)}")
        service.waiting = keep

    def _unserved_too_long(self, service: Service, request: QueuedRequest, now: float) -> bool:
        """No worker for the grace, counted from the latest of: the request's arrival, the
        service's last worker loss (a retried request gets a full grace after its worker
        left) and the time a restarted broker's workers have had to re-announce."""
        since = max(request.arrived, service.unserved_since, self._workers_back_by)
        return not service.workers and now - since >= self.unavailable_grace

    def disconnect_all(self) -> None:
        """Tell every worker the broker is going away, so they reconnect at once."""
        for identity in list(self.workers):
            self._send([identity, P.DISCONNECT])

    # -- introspection -------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch.hex(),
            "services": {
                name: {
                    "waiting": len(s.waiting),
                    "workers": len(s.workers),
                    "inflight": sum(len(w.inflight) for w in s.workers),
                    "credit": sum(w.credit for w in s.workers),
                }
                for name, s in sorted(self.services.items())
            },
            "workers": [
                {"name": w.name, "service": w.service.name, "credit": w.credit,
                 "inflight": len(w.inflight)}
                for w in self.workers.values()
            ],
            "counters": dict(self.counters),
        }


def start_hint(service: str) -> str:
    """The command that starts an agent for ``service``, for 'no worker' errors."""
    if service == "orchestrator":
        return "start one with `itas orchestrator` (or `itas up`)"
    kind = service.split("@", 1)[0]
    return (f"start its agents with `itas agents --arch FILE` (every agent an architecture "
            f"needs) or `itas agent --kind {kind} ...`")
