"""Broker state and routing: plain classes, no sockets, so they are unit-tested directly.

The shape follows the ZeroMQ guide's Majordomo broker: services (name -> waiting
requests and workers), workers (identity -> service, credit, expiry, in-flight
tickets) and one ``handle`` entry that routes by command. ``send`` is the only
way out; the socket layer (``itas.broker.server``) supplies it. ``send`` returns
False when the peer is gone (ROUTER_MANDATORY), which for a worker means its
requests go elsewhere at once instead of after the heartbeat expiry.

What the broker promises (see ``itas.protocol`` for the wire side):

- A reply goes only to the request it answers: tickets carry the broker's epoch
  and the request's key, and the worker must echo the whole ticket. Stale replies are dropped and
  counted, never answered (only a reply from a forgotten worker with a ticket
  of this epoch draws a DISCONNECT, once, so it announces again).
- One copy per request key: a resend updates where the reply goes; a worker that
  announces again keeps its in-flight work instead of being handed it twice.
- Every request ends by its deadline: never dispatched once expired; waiting or
  in flight, it is failed with ``service_unavailable`` (no worker serves it) or
  ``deadline`` when the time is up, and an in-flight one is cancelled on its
  worker. A client's CANCEL ends it the same way, without a reply.
- Bounded queues: at most ``max_waiting_per_service`` and, per client,
  ``max_waiting_per_client`` waiting requests; beyond them the request is
  refused at once with ``overloaded``. Waiting requests are served round-robin
  between clients (one lane per client), so one client's flood delays others
  by at most one request per lane.
- Dispatch cost does not grow with the worker count: workers with free credit
  sit in a heap keyed by load (in-flight / credit), least loaded first.
"""

from __future__ import annotations

import collections
import heapq
import itertools
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
MAX_WAITING_PER_SERVICE = 10_000
MAX_WAITING_PER_CLIENT = 1_000
#: How long a request waits for a service that has no worker at all before it fails with
#: SERVICE_UNAVAILABLE (a service whose workers are all busy waits up to the deadline).
UNAVAILABLE_GRACE_S = 5.0

Send = Callable[[list[bytes]], bool]


@dataclass(slots=True, eq=False)
class Request:
    client: bytes  # where the reply goes: the socket that sent the request last
    lane: bytes  # the client lane it waits in (its first sender), for fairness and limits
    key: bytes  # the client's name for it, echoed by the worker and back to the client
    service: Service
    body: bytes
    deadline: float
    timeout_s: float
    arrived: float
    attempts: int = 0
    worker: Worker | None = None  # set while in flight
    ticket: bytes = b""
    done: bool = False  # answered, failed or cancelled; skipped wherever it still sits


@dataclass(slots=True, eq=False)
class Worker:
    identity: bytes
    service: Service
    credit: int
    name: str
    interval: float  # the worker's own heartbeat interval: both sides beat at its pace
    ttl: float
    expiry: float
    next_beat: float
    inflight: dict[bytes, Request] = field(default_factory=dict)
    offer: int = -1  # sequence number of its valid entry in service.free; -1: none


@dataclass(slots=True, eq=False)
class Service:
    name: str
    lanes: dict[bytes, collections.deque[Request]] = field(default_factory=dict)  # by client
    turns: collections.deque[bytes] = field(default_factory=collections.deque)  # lane order
    waiting: int = 0  # live requests in lanes (lanes may also hold done ones)
    workers: dict[bytes, Worker] = field(default_factory=dict)
    free: list[tuple[float, int, Worker]] = field(default_factory=list)  # heap by load
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
        max_waiting_per_service: int = MAX_WAITING_PER_SERVICE,
        max_waiting_per_client: int = MAX_WAITING_PER_CLIENT,
        unavailable_grace: float = UNAVAILABLE_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._clock = clock
        self._pack = P.packer()
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        self.max_attempts = max_attempts
        self.max_message_bytes = max_message_bytes
        self.max_waiting_per_service = max_waiting_per_service
        self.max_waiting_per_client = max_waiting_per_client
        self.unavailable_grace = unavailable_grace
        # A restarted broker hears from its workers only as they notice the restart (their
        # next heartbeat); until one expiry has passed, no service counts as unserved.
        self._workers_back_by = clock() + heartbeat_interval * liveness
        self.epoch = os.urandom(P.EPOCH_BYTES)
        self.services: dict[str, Service] = {}
        self.workers: dict[bytes, Worker] = {}
        self.active: dict[bytes, Request] = {}  # by key: waiting or in flight
        self._waiting_by_client: dict[bytes, int] = {}
        self._deadlines: list[tuple[float, int, Request]] = []  # heap; done ones skipped
        # When to see whether a request has waited out the grace for a service with no
        # worker (heap; pushed only while its service has none, so it stays small).
        self._grace_checks: list[tuple[float, int, Request]] = []
        self._seq = itertools.count()
        self._tickets = itertools.count(1)
        self.counters: collections.Counter[str] = collections.Counter()
        #: Called with (service, ok, seconds since arrival) for each reply forwarded from a
        #: worker; the metrics' latency histogram (``itas.broker.metrics``), when enabled.
        self.on_reply: Callable[[str, bool, float], None] | None = None
        # Keyed by the whole header, so one dict lookup checks version and command.
        self._handlers = {
            P.REQUEST: self._on_request,
            P.REPLY: self._on_reply,
            P.ERROR: self._on_reply,
            P.CANCEL: self._on_cancel,
            P.PARTIAL: self._on_partial,
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
            self.oversize(frames[:3])
            return
        handler = self._handlers.get(frames[1])
        if handler is None:
            self.counters["dropped_malformed"] += 1
            return
        try:
            handler(frames)
        except ProtocolError:
            self.counters["dropped_malformed"] += 1

    def oversize(self, head: list[bytes]) -> None:
        """A message over the size limit, of which only ``[identity, header, key]`` was kept.

        The socket layer calls this before reassembling the rest; a request is
        answered with ``too_large`` so its client does not wait for nothing.
        """
        self.counters["dropped_oversize"] += 1
        if len(head) == 3 and head[1] == P.REQUEST:
            try:
                key = P.parse_request_meta(head[2])[0]
            except ProtocolError:
                return
            self._send([head[0], P.ERROR, self._pack([key, 0]), P.error_body(
                P.ErrorCode.TOO_LARGE,
                f"request larger than the broker's limit of {self.max_message_bytes} bytes")])

    def _on_request(self, frames: list[bytes]) -> None:
        if len(frames) != 4:
            raise ProtocolError("REQUEST: expected 3 frames")
        identity, _, meta, body = frames
        key, service_name, timeout_ms = P.parse_request_meta(meta)
        self.counters["requests"] += 1
        if service_name == P.STATUS_SERVICE:
            self._send([identity, P.REPLY, self._pack([key, 0]), self._pack(self.status())])
            return
        known = self.active.get(key)
        if known is not None:  # a resend: one copy, the reply goes where it came from last
            self.counters["resends_merged"] += 1
            known.client = identity
            return
        service = self._service(service_name)
        if service.waiting >= self.max_waiting_per_service:
            self._refuse(identity, key, f"service {service_name!r} has "
                         f"{service.waiting} requests waiting (the limit)")
            return
        if self._waiting_by_client.get(identity, 0) >= self.max_waiting_per_client:
            self._refuse(identity, key, f"this client has {self.max_waiting_per_client} "
                         "requests waiting (the limit)")
            return
        timeout_s = timeout_ms / 1000.0
        now = self._clock()
        deadline = now + timeout_s
        request = Request(identity, identity, key, service, body, deadline, timeout_s, now)
        self.active[key] = request
        heapq.heappush(self._deadlines, (deadline, next(self._seq), request))
        if len(self._deadlines) > 4 * len(self.active) + 1024:  # drop entries of done ones
            self._deadlines = [e for e in self._deadlines if not e[2].done]
            heapq.heapify(self._deadlines)
        if not service.waiting:  # the usual case: straight to a free worker, if any
            worker = self._free_worker(service)
            if worker is not None:
                self._give(request, worker)
                return
        self._enqueue(request, front=False)
        if not service.workers:
            self._check_grace_later(request)
        self._dispatch(service)

    def _refuse(self, identity: bytes, key: bytes, why: str) -> None:
        self.counters["overloaded"] += 1
        self._send([identity, P.ERROR, self._pack([key, 0]),
                    P.error_body(P.ErrorCode.OVERLOADED, f"{why}; try again later")])

    def _on_reply(self, frames: list[bytes]) -> None:
        if len(frames) != 4:
            raise ProtocolError("REPLY/ERROR: expected 3 frames")
        identity, hdr, ticket, body = frames
        worker = self.workers.get(identity)
        # The whole ticket must match, so the key in it is the request's own.
        request = worker.inflight.get(ticket) if worker is not None else None
        if request is None:  # an old epoch's ticket, one given up on, or a mangled one
            self.counters["dropped_stale"] += 1
            if worker is None and ticket[:P.EPOCH_BYTES] == self.epoch:
                self._send([identity, P.DISCONNECT])  # forgotten, yet alive: announce again
            return
        assert worker is not None
        worker.expiry = self._clock() + worker.ttl
        if hdr == P.ERROR:
            P.parse_error(body)  # a malformed error body is the worker's bug: drop it here
        del worker.inflight[ticket]
        self._finish(request)
        self.counters["replied"] += 1
        if self.on_reply is not None:
            self.on_reply(request.service.name, hdr == P.REPLY, self._clock() - request.arrived)
        if not self._send([request.client, hdr, self._pack([request.key, request.attempts]),
                           body]):
            self.counters["undeliverable"] += 1
        self._offer(worker)
        if worker.service.waiting:
            self._dispatch(worker.service)

    def _on_partial(self, frames: list[bytes]) -> None:
        """Forward a worker's partial reply to the client of a request it is running."""
        if len(frames) != 5:
            raise ProtocolError("PARTIAL: expected 4 frames")
        identity, _, ticket, key, body = frames
        worker = self.workers.get(identity)
        request = worker.inflight.get(ticket) if worker is not None else None
        if worker is None or request is None or key != request.key:
            self.counters["dropped_stale"] += 1
            return
        worker.expiry = self._clock() + worker.ttl
        if len(body) > P.MAX_PARTIAL_BYTES:
            self.counters["dropped_oversize"] += 1
            return
        self.counters["partials"] += 1
        self._send([request.client, P.PARTIAL, key, body])

    def _on_cancel(self, frames: list[bytes]) -> None:
        if len(frames) != 3:
            raise ProtocolError("CANCEL: expected 2 frames")
        request = self.active.get(frames[2])
        if request is None or request.client != frames[0]:
            return  # answered already, or not this sender's to cancel
        self.counters["cancelled"] += 1
        self._stop(request)

    def _on_ready(self, frames: list[bytes]) -> None:
        if len(frames) != 3:
            raise ProtocolError("READY: expected 2 frames")
        identity = frames[0]
        service_name, credit, name, heartbeat_ms = P.parse_ready(frames[2])
        interval = heartbeat_ms / 1000.0 if heartbeat_ms else self.heartbeat_interval
        now = self._clock()
        ttl = interval * self.liveness
        old = self.workers.get(identity)
        if old is not None and old.service.name == service_name:
            # The same socket announcing again (it saw a new epoch or a DISCONNECT): it
            # still runs its in-flight work, so that work stays with it.
            self.counters["workers_reannounced"] += 1
            old.credit, old.name, old.interval, old.ttl = credit, name, interval, ttl
            old.expiry = now + ttl
            self._send([identity, P.HEARTBEAT, self.epoch])
            self._offer(old)
            self._dispatch(old.service)
            return
        if old is not None:
            self._remove_worker(old, lost=False)
        service = self._service(service_name)
        worker = Worker(identity, service, credit, name, interval, ttl, now + ttl, now + interval)
        self.workers[identity] = worker
        service.workers[identity] = worker
        self.counters["workers_joined"] += 1
        self._send([identity, P.HEARTBEAT, self.epoch])
        self._offer(worker)
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

    # -- queues and dispatch -------------------------------------------------

    def _service(self, name: str) -> Service:
        service = self.services.get(name)
        if service is None:
            service = self.services[name] = Service(name, unserved_since=self._clock())
        return service

    def _enqueue(self, request: Request, *, front: bool) -> None:
        service = request.service
        lane = service.lanes.get(request.lane)
        if lane is None:
            lane = service.lanes[request.lane] = collections.deque()
            (service.turns.appendleft if front else service.turns.append)(request.lane)
        (lane.appendleft if front else lane.append)(request)
        service.waiting += 1
        self._waiting_by_client[request.lane] = self._waiting_by_client.get(request.lane, 0) + 1

    def _unqueue(self, request: Request) -> None:
        """Account for a request leaving its lane (popped, or left there marked done)."""
        request.service.waiting -= 1
        count = self._waiting_by_client[request.lane] - 1
        if count:
            self._waiting_by_client[request.lane] = count
        else:
            del self._waiting_by_client[request.lane]

    def _next_waiting(self, service: Service) -> Request | None:
        """The next live request, one per client lane in turn."""
        lanes, turns = service.lanes, service.turns
        while turns:
            client = turns[0]
            lane = lanes[client]
            request = lane.popleft()
            if lane:
                turns.rotate(-1)
            else:
                turns.popleft()
                del lanes[client]
            if not request.done:
                return request
        return None

    def _offer(self, worker: Worker) -> None:
        """(Re)place the worker in its service's heap of workers with free credit."""
        if worker.identity not in worker.service.workers or len(worker.inflight) >= worker.credit:
            worker.offer = -1
            return
        free = worker.service.free
        worker.offer = next(self._seq)
        heapq.heappush(free, (len(worker.inflight) / worker.credit, worker.offer, worker))
        if len(free) > 2 * len(worker.service.workers) + 64:  # drop superseded entries
            free[:] = [e for e in free if e[2].offer == e[1]]
            heapq.heapify(free)

    def _free_worker(self, service: Service) -> Worker | None:
        """The least-loaded worker with credit left (superseded heap entries are dropped)."""
        free = service.free
        while free:
            _, offer, worker = free[0]
            if worker.offer == offer:
                return worker
            heapq.heappop(free)
        return None

    def _dispatch(self, service: Service) -> None:
        """Hand waiting requests to the least-loaded workers that have credit left."""
        while service.waiting:
            worker = self._free_worker(service)
            if worker is None:
                return
            request = self._next_waiting(service)
            if request is None:
                return
            self._unqueue(request)
            self._give(request, worker)

    def _give(self, request: Request, worker: Worker) -> None:
        """Send the request to ``worker``, the top of its service's free heap."""
        remaining = request.deadline - self._clock()
        if remaining <= 0:  # never dispatch an expired request
            self._expire(request, queued=False)
            return
        heapq.heappop(worker.service.free)
        ticket = P.ticket(self.epoch, next(self._tickets), max(1, int(remaining * 1000)),
                          request.key)
        request.attempts += 1
        request.worker, request.ticket = worker, ticket
        worker.inflight[ticket] = request
        self.counters["dispatched"] += 1
        if self._send([worker.identity, P.REQUEST, ticket, request.body]):
            self._offer(worker)
        else:
            self._remove_worker(worker, lost=True)

    def _remove_worker(self, worker: Worker, *, lost: bool) -> None:
        """Forget a worker; its in-flight requests go back to the front of their lanes."""
        self.workers.pop(worker.identity, None)
        service = worker.service
        last = service.workers.pop(worker.identity, None) is not None and not service.workers
        worker.offer = -1
        self.counters["workers_lost" if lost else "workers_left"] += 1
        for request in reversed(list(worker.inflight.values())):
            request.worker = None
            if not lost:
                request.attempts -= 1  # a clean goodbye is not a failed attempt
            if request.attempts >= self.max_attempts:
                self._finish(request)
                self._fail(request, P.ErrorCode.WORKER_LOST,
                           f"service {service.name!r}: {request.attempts} workers were lost "
                           "while running this request; giving up")
            else:
                self.counters["retried"] += 1
                self._enqueue(request, front=True)
        worker.inflight.clear()
        if last:  # unserved from now: every waiting request gets a full grace from here
            service.unserved_since = self._clock()
            for lane in service.lanes.values():
                for request in lane:
                    if not request.done:
                        self._check_grace_later(request)
        self._dispatch(service)

    def _finish(self, request: Request) -> None:
        request.done = True
        request.worker = None
        del self.active[request.key]

    def _stop(self, request: Request) -> None:
        """End a live request without replying: cancel it on its worker, or unqueue it."""
        worker = request.worker
        if worker is not None:
            del worker.inflight[request.ticket]
            self._send([worker.identity, P.CANCEL, request.ticket])
            self._finish(request)
            self._offer(worker)
            self._dispatch(worker.service)
        else:
            self._unqueue(request)
            self._finish(request)
            self._tidy_lane(request)

    def _tidy_lane(self, request: Request) -> None:
        """Pop done requests off the front of the request's lane (usually it is there)."""
        service = request.service
        lane = service.lanes.get(request.lane)
        while lane and lane[0].done:
            lane.popleft()
        if lane is not None and not lane:
            del service.lanes[request.lane]
            service.turns.remove(request.lane)  # O(clients waiting), rare: the lane's last
        if not service.waiting:
            service.lanes.clear()
            service.turns.clear()

    def _expire(self, request: Request, *, queued: bool) -> None:
        """Fail a request whose deadline passed: in flight, in its lane, or just taken out."""
        self.counters["expired"] += 1
        service, worker = request.service, request.worker
        if worker is not None:
            code, message = P.ErrorCode.DEADLINE, (
                f"service {service.name!r}: worker {worker.name!r} did not answer within "
                f"the request's {request.timeout_s:g} s")
        elif service.workers:
            code, message = P.ErrorCode.DEADLINE, (
                f"service {service.name!r} had no free worker within {request.timeout_s:g} s")
        else:
            code, message = P.ErrorCode.SERVICE_UNAVAILABLE, self._unavailable_message(
                service, min(self.unavailable_grace, request.timeout_s))
        if worker is not None or queued:
            self._stop(request)
        else:
            self._finish(request)
        self._fail(request, code, message)

    def _fail(self, request: Request, code: str, message: str) -> None:
        self._send([request.client, P.ERROR, self._pack([request.key, request.attempts]),
                    P.error_body(code, message)])

    # -- time ----------------------------------------------------------------

    def tick(self) -> None:
        """Expire silent workers and overdue requests; send heartbeats when due."""
        now = self._clock()
        for worker in [w for w in self.workers.values() if w.expiry < now]:
            self._remove_worker(worker, lost=True)
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            request = heapq.heappop(deadlines)[2]
            if not request.done:
                self._expire(request, queued=request.worker is None)
        checks = self._grace_checks
        while checks and checks[0][0] <= now:
            request = heapq.heappop(checks)[2]
            if request.done or request.worker is not None or request.service.workers:
                continue  # answered, running, or served again: its deadline applies
            since = self._unserved_from(request)
            if now - since >= self.unavailable_grace:
                self.counters["unavailable"] += 1
                self._stop(request)
                self._fail(request, P.ErrorCode.SERVICE_UNAVAILABLE, self._unavailable_message(
                    request.service, min(self.unavailable_grace, request.timeout_s)))
            else:
                heapq.heappush(checks, (since + self.unavailable_grace, next(self._seq), request))
        for name, service in list(self.services.items()):
            if not service.waiting and not service.workers:
                del self.services[name]  # names from bad clients must not pile up
        for worker in self.workers.values():
            if now >= worker.next_beat:
                worker.next_beat = now + worker.interval
                self._send([worker.identity, P.HEARTBEAT, self.epoch])

    def _unserved_from(self, request: Request) -> float:
        """The grace counts from the latest of: the request's arrival, its service's last
        worker loss (a retried request gets a full grace after its worker left) and the
        time a restarted broker's workers have had to announce again."""
        return max(request.arrived, request.service.unserved_since, self._workers_back_by)

    def _check_grace_later(self, request: Request) -> None:
        heapq.heappush(self._grace_checks, (self._unserved_from(request) + self.unavailable_grace,
                                            next(self._seq), request))

    @staticmethod
    def _unavailable_message(service: Service, waited: float) -> str:
        return (f"no worker serves {service.name!r} (none registered in {waited:g} s); "
                f"{start_hint(service.name)}")

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
                    "waiting": s.waiting,
                    "workers": len(s.workers),
                    "inflight": sum(len(w.inflight) for w in s.workers.values()),
                    "credit": sum(w.credit for w in s.workers.values()),
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
