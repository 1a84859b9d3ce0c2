"""The broker's routing state, driven directly: no sockets, a hand-moved clock."""

from __future__ import annotations

import pytest

from itas import protocol as P
from itas.broker.core import Broker


class Wire:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []
        self.gone: set[bytes] = set()
        self.now = 100.0

    def send(self, frames: list[bytes]) -> bool:
        if frames[0] in self.gone:
            return False
        if frames[1] in (P.REPLY, P.ERROR) and len(frames) == 4:  # to a client: kept decoded
            key, attempts = P.parse_reply_meta(frames[2])
            frames = [frames[0], frames[1], key, P.pack(attempts), frames[3]]
        self.sent.append(frames)
        return True

    def to(self, identity: bytes, header: bytes | None = None) -> list[list[bytes]]:
        return [f for f in self.sent if f[0] == identity and (header is None or f[1] == header)]


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture
def broker(wire: Wire) -> Broker:
    return Broker(wire.send, heartbeat_interval=1.0, liveness=3, clock=lambda: wire.now)


def ready(broker: Broker, identity: bytes, service: str = "svc", credit: int = 1,
          heartbeat_ms: int = 1000) -> None:
    broker.handle([identity, P.READY, P.ready_body(service, credit, identity.decode(),
                                                   heartbeat_ms)])


def key_of(rid: int) -> bytes:
    return rid.to_bytes(P.KEY_BYTES, "big")


def request(broker: Broker, client: bytes, rid: int, service: str = "svc",
            timeout_ms: int = 5000) -> None:
    broker.handle([client, P.REQUEST, P.request_meta(key_of(rid), service, timeout_ms),
                   P.pack(rid)])


def reply(broker: Broker, worker: bytes, ticket: bytes, body: bytes = b"\xc0") -> None:
    broker.handle([worker, P.REPLY, ticket, body])


def test_request_reaches_worker_and_reply_reaches_client(broker: Broker, wire: Wire) -> None:
    ready(broker, b"w1")
    request(broker, b"c1", 7)
    [(_, hdr, ticket, body)] = wire.to(b"w1", P.REQUEST)
    assert P.unpack(body) == 7 and ticket.endswith(key_of(7))
    assert 0 < P.ticket_timeout_ms(ticket) <= 5000 and ticket[:P.EPOCH_BYTES] == broker.epoch
    reply(broker, b"w1", ticket, P.pack("done"))
    [(_, hdr, key, attempts, body)] = wire.to(b"c1")
    assert (hdr, key, P.unpack(attempts), P.unpack(body)) == (P.REPLY, key_of(7), 1, "done")


def test_least_loaded_worker_within_credit(broker: Broker, wire: Wire) -> None:
    ready(broker, b"w1", credit=2)
    ready(broker, b"w2", credit=2)
    for rid in range(5):
        request(broker, b"c", rid)
    assert len(wire.to(b"w1", P.REQUEST)) == 2
    assert len(wire.to(b"w2", P.REQUEST)) == 2
    assert broker.status()["services"]["svc"]["waiting"] == 1
    ticket = wire.to(b"w2", P.REQUEST)[0][2]
    reply(broker, b"w2", ticket)
    assert len(wire.to(b"w2", P.REQUEST)) == 3  # the freed credit takes the waiting request


def test_silent_worker_requests_go_to_another(broker: Broker, wire: Wire) -> None:
    ready(broker, b"w1")
    request(broker, b"c", 1)
    ready(broker, b"w2")
    wire.now += 2.0
    broker.handle([b"w2", P.HEARTBEAT])
    wire.now += 1.5  # w1 silent for 3.5 s > 3 s; w2 heard 1.5 s ago
    broker.tick()
    [(_, _, ticket, *_)] = wire.to(b"w2", P.REQUEST)
    assert broker.counters["retried"] == 1 and broker.counters["workers_lost"] == 1
    reply(broker, b"w2", ticket, P.pack("ok"))
    assert P.unpack(wire.to(b"c")[-1][4]) == "ok"


def test_gives_up_after_max_attempts(broker: Broker, wire: Wire) -> None:
    request(broker, b"c", 1, timeout_ms=60_000)
    for n in range(3):
        ready(broker, b"w%d" % n)
        wire.now += 4.0
        broker.tick()
    [(_, hdr, _, _, body)] = wire.to(b"c")
    assert hdr == P.ERROR
    code, message = P.parse_error(body)
    assert code == P.ErrorCode.WORKER_LOST and "'svc'" in message


def test_unknown_service_expires_with_named_error(broker: Broker, wire: Wire) -> None:
    request(broker, b"c", 1, service="nobody", timeout_ms=500)
    broker.tick()
    assert wire.to(b"c") == []
    wire.now += 0.6
    broker.tick()
    code, message = P.parse_error(wire.to(b"c")[0][4])
    assert code == P.ErrorCode.SERVICE_UNAVAILABLE and "'nobody'" in message
    assert "nobody" not in broker.services  # no leftovers from unknown names


def test_a_service_without_workers_fails_after_the_grace_not_the_deadline(
        broker: Broker, wire: Wire) -> None:
    wire.now += 3.0  # past the first heartbeat expiry: workers had their chance to return
    request(broker, b"c", 1, service="generator@sim:x", timeout_ms=600_000)
    wire.now += broker.unavailable_grace - 0.1
    broker.tick()
    assert wire.to(b"c") == []  # inside the grace: a worker may still come
    wire.now += 0.2
    broker.tick()
    code, message = P.parse_error(wire.to(b"c")[0][4])
    assert code == P.ErrorCode.SERVICE_UNAVAILABLE
    assert "'generator@sim:x'" in message and "itas agents --arch" in message


def test_a_young_broker_gives_returning_workers_a_heartbeat_expiry_more(
        broker: Broker, wire: Wire) -> None:
    request(broker, b"c", 1, timeout_ms=600_000)  # at start, as a client resends after a restart
    wire.now += broker.unavailable_grace + 0.1
    broker.tick()
    assert wire.to(b"c") == []  # 3 s of heartbeat expiry (1 s x 3) come first
    wire.now += 3.0
    broker.tick()
    assert P.parse_error(wire.to(b"c")[0][4])[0] == P.ErrorCode.SERVICE_UNAVAILABLE


def test_a_worker_inside_the_grace_serves_the_request(broker: Broker, wire: Wire) -> None:
    request(broker, b"c", 1, timeout_ms=600_000)
    wire.now += broker.unavailable_grace - 0.1
    ready(broker, b"w1")
    wire.now += 10 * broker.unavailable_grace
    broker.handle([b"w1", P.HEARTBEAT])
    broker.tick()
    assert wire.to(b"c") == [] and len(wire.to(b"w1", P.REQUEST)) == 1


def test_busy_workers_keep_a_request_waiting_past_the_grace(broker: Broker,
                                                           wire: Wire) -> None:
    ready(broker, b"w1")
    request(broker, b"c", 1, timeout_ms=600_000)
    request(broker, b"c", 2, timeout_ms=600_000)  # waits: the only worker is busy
    wire.now += 3 * broker.unavailable_grace
    broker.handle([b"w1", P.HEARTBEAT])
    broker.tick()
    assert wire.to(b"c") == []


def test_busy_service_expires_as_expired(broker: Broker, wire: Wire) -> None:
    ready(broker, b"w1")
    request(broker, b"c", 1)
    request(broker, b"c", 2, timeout_ms=100)
    wire.now += 0.2
    broker.handle([b"w1", P.HEARTBEAT])
    broker.tick()
    code, _ = P.parse_error(wire.to(b"c")[0][4])
    assert code == P.ErrorCode.DEADLINE


@pytest.mark.parametrize("frames", [
    [b"x"],
    [b"x", b"garbage"],
    [b"x", b"ITAS\x09\x02", b"", b""],  # unsupported version
    [b"x", P.REQUEST, b"\xc1", b""],  # bad msgpack
    [b"x", P.REQUEST, P.pack([1, "svc"]), b""],  # wrong meta shape
    [b"x", P.REQUEST, P.request_meta(b"", "svc", 10), b""],  # empty key
    [b"x", P.REQUEST, P.request_meta(b"k", "svc", 10)],  # missing body frame
    [b"x", P.READY, P.pack({"service": "s", "credit": 0})],
    [b"x", P.READY, P.pack({"service": "", "credit": 1})],
])
def test_malformed_messages_are_dropped_and_counted(broker: Broker, wire: Wire,
                                                    frames: list[bytes]) -> None:
    broker.handle(frames)
    assert broker.counters["dropped_malformed"] == 1
    assert not broker.workers and not broker.services


def test_oversize_is_refused_with_too_large(wire: Wire) -> None:
    broker = Broker(wire.send, max_message_bytes=1000, clock=lambda: wire.now)
    broker.handle([b"c", P.REQUEST, P.request_meta(b"k1", "s", 100), b"x" * 1000])
    assert broker.counters["dropped_oversize"] == 1 and not broker.services
    [(_, hdr, key, _, body)] = wire.to(b"c")
    assert (hdr, key, P.parse_error(body)[0]) == (P.ERROR, b"k1", P.ErrorCode.TOO_LARGE)


def test_stale_reply_of_this_epoch_makes_a_forgotten_worker_announce(broker: Broker,
                                                                     wire: Wire) -> None:
    reply(broker, b"ghost", P.ticket(broker.epoch, 1, 100, b"k"))
    assert broker.counters["dropped_stale"] == 1
    assert wire.to(b"ghost") == [[b"ghost", P.DISCONNECT]]


def test_reply_to_an_old_epoch_is_dropped_without_an_answer(broker: Broker, wire: Wire) -> None:
    ready(broker, b"w1")
    request(broker, b"c", 1)
    [(_, _, ticket, _)] = wire.to(b"w1", P.REQUEST)
    old_ticket = b"\xee" * P.EPOCH_BYTES + ticket[P.EPOCH_BYTES:]  # same counter, old broker
    for worker in (b"w1", b"ghost"):
        reply(broker, worker, old_ticket, P.pack("old"))
    assert broker.counters["dropped_stale"] == 2
    assert wire.to(b"c") == [] and wire.to(b"ghost") == []  # no DISCONNECT storm
    reply(broker, b"w1", ticket, P.pack("new"))
    assert P.unpack(wire.to(b"c")[0][4]) == "new"


def test_reply_with_another_requests_key_is_never_delivered(broker: Broker, wire: Wire) -> None:
    ready(broker, b"w1", credit=2)
    request(broker, b"a", 1)
    request(broker, b"b", 2)
    (_, _, ticket_a, _), (_, _, ticket_b, _) = wire.to(b"w1", P.REQUEST)
    mixed = ticket_a[:P.TICKET_HEAD] + ticket_b[P.TICKET_HEAD:]  # a's number, b's key
    reply(broker, b"w1", mixed, P.pack("for b"))
    assert broker.counters["dropped_stale"] == 1
    assert wire.to(b"a") == [] and wire.to(b"b") == []


def test_unreachable_worker_is_dropped_at_once(broker: Broker, wire: Wire) -> None:
    ready(broker, b"w1")
    ready(broker, b"w2")
    wire.gone.add(b"w1")
    request(broker, b"c", 1)
    assert len(wire.to(b"w2", P.REQUEST)) == 1
    assert b"w1" not in broker.workers


def test_clean_disconnect_requeues_without_counting_an_attempt(broker: Broker,
                                                               wire: Wire) -> None:
    request(broker, b"c", 1, timeout_ms=60_000)
    for n in range(5):  # five clean goodbyes never exhaust the attempts
        ready(broker, b"w%d" % n)
        broker.handle([b"w%d" % n, P.DISCONNECT])
    ready(broker, b"last")
    [(_, _, ticket, *_)] = wire.to(b"last", P.REQUEST)
    reply(broker, b"last", ticket)
    assert wire.to(b"c")[0][1] == P.REPLY


def test_status_service_answers_from_the_broker(broker: Broker, wire: Wire) -> None:
    ready(broker, b"w1", service="echo", credit=4)
    request(broker, b"c", 3, service=P.STATUS_SERVICE)
    status = P.unpack(wire.to(b"c")[0][4])
    assert status["services"]["echo"] == {"waiting": 0, "workers": 1, "inflight": 0, "credit": 4}
    assert status["workers"][0]["name"] == "w1"


def test_heartbeats_carry_the_epoch(broker: Broker, wire: Wire) -> None:
    ready(broker, b"w1")
    broker.handle([b"client", P.HEARTBEAT])
    assert wire.to(b"client") == [[b"client", P.HEARTBEAT, broker.epoch]]
    wire.now += 1.1
    broker.tick()
    assert wire.to(b"w1", P.HEARTBEAT)[-1] == [b"w1", P.HEARTBEAT, broker.epoch]


def test_each_worker_sets_its_own_heartbeat_pace(broker: Broker, wire: Wire) -> None:
    ready(broker, b"fast", heartbeat_ms=100)
    ready(broker, b"slow", heartbeat_ms=5000)
    wire.now += 2.0  # fast missed 3 x 0.1 s; slow is within 3 x 5 s
    broker.tick()
    assert set(broker.workers) == {b"slow"}
    wire.now += 3.1  # slow is due a heartbeat after 5 s
    broker.tick()
    assert len(wire.to(b"slow", P.HEARTBEAT)) == 2  # the READY ack and this one


def test_a_resend_is_one_request_and_its_reply_goes_to_the_last_sender(broker: Broker,
                                                                      wire: Wire) -> None:
    ready(broker, b"w1")
    request(broker, b"old-socket", 1)
    request(broker, b"new-socket", 1)  # the client replaced its socket and resent
    [(_, _, ticket, *_)] = wire.to(b"w1", P.REQUEST)
    reply(broker, b"w1", ticket, P.pack("once"))
    assert wire.to(b"old-socket") == []
    assert P.unpack(wire.to(b"new-socket")[0][4]) == "once"
    assert broker.counters["dispatched"] == 1 and broker.counters["resends_merged"] == 1


def test_reannounce_keeps_in_flight_work_on_the_worker(broker: Broker, wire: Wire) -> None:
    ready(broker, b"w1", credit=2)
    request(broker, b"c", 1)
    ready(broker, b"w1", credit=2)  # saw a DISCONNECT or a new epoch: announces again
    assert len(wire.to(b"w1", P.REQUEST)) == 1 and broker.counters["retried"] == 0
    request(broker, b"c", 2)
    (_, _, t1, *_), (_, _, t2, *_) = wire.to(b"w1", P.REQUEST)
    reply(broker, b"w1", t1, P.pack(1))
    reply(broker, b"w1", t2, P.pack(2))
    assert [P.unpack(f[4]) for f in wire.to(b"c")] == [1, 2]


def test_in_flight_request_ends_at_its_deadline_and_is_cancelled(broker: Broker,
                                                                wire: Wire) -> None:
    ready(broker, b"w1", heartbeat_ms=10_000)
    request(broker, b"c", 1, timeout_ms=2000)
    [(_, _, ticket, *_)] = wire.to(b"w1", P.REQUEST)
    wire.now += 2.1
    broker.tick()
    [(_, hdr, key, _, body)] = wire.to(b"c")
    code, message = P.parse_error(body)
    assert (hdr, key, code) == (P.ERROR, key_of(1), P.ErrorCode.DEADLINE)
    assert "'w1'" in message and "did not answer" in message
    assert wire.to(b"w1", P.CANCEL) == [[b"w1", P.CANCEL, ticket]]
    reply(broker, b"w1", ticket, P.pack("late"))  # the late reply goes nowhere
    assert len(wire.to(b"c")) == 1 and broker.counters["dropped_stale"] == 1
    request(broker, b"c", 2)  # and the worker's credit is free again
    assert len(wire.to(b"w1", P.REQUEST)) == 2


def test_an_expired_request_is_never_dispatched(broker: Broker, wire: Wire) -> None:
    request(broker, b"c", 1, timeout_ms=100)
    wire.now += 0.2  # no tick ran yet when the worker appears
    ready(broker, b"w1")
    assert wire.to(b"w1", P.REQUEST) == []
    code, _ = P.parse_error(wire.to(b"c")[0][4])
    assert code == P.ErrorCode.DEADLINE


def test_cancel_stops_waiting_and_running_requests(broker: Broker, wire: Wire) -> None:
    ready(broker, b"w1")
    request(broker, b"c", 1)
    request(broker, b"c", 2)
    [(_, _, ticket, *_)] = wire.to(b"w1", P.REQUEST)
    broker.handle([b"intruder", P.CANCEL, key_of(1)])  # not the sender: ignored
    assert wire.to(b"w1", P.CANCEL) == []
    broker.handle([b"c", P.CANCEL, key_of(2)])  # waiting: just gone
    broker.handle([b"c", P.CANCEL, key_of(1)])  # running: the worker is told
    assert wire.to(b"w1", P.CANCEL) == [[b"w1", P.CANCEL, ticket]]
    assert len(wire.to(b"w1", P.REQUEST)) == 1  # request 2 was never dispatched
    assert wire.to(b"c") == [] and not broker.active
    assert broker.status()["services"]["svc"]["waiting"] == 0


def test_queue_limits_refuse_with_overloaded(wire: Wire) -> None:
    broker = Broker(wire.send, clock=lambda: wire.now, max_waiting_per_service=5,
                    max_waiting_per_client=3)
    for rid in range(4):
        request(broker, b"greedy", rid)
    for rid in range(10, 13):
        request(broker, b"other%d" % rid, rid)
    codes = {P.parse_error(f[4])[0] for f in wire.sent}
    assert codes == {P.ErrorCode.OVERLOADED}
    assert [f[2] for f in wire.sent] == [key_of(3), key_of(12)]
    assert "limit" in P.parse_error(wire.sent[0][4])[1]


def test_clients_take_turns(broker: Broker, wire: Wire) -> None:
    for rid in range(100):
        request(broker, b"flood", rid)
    request(broker, b"polite", 1000)
    ready(broker, b"w1")
    for _ in range(3):
        ticket = wire.to(b"w1", P.REQUEST)[-1][2]
        reply(broker, b"w1", ticket)
    assert [P.unpack(f[3]) for f in wire.to(b"w1", P.REQUEST)][:3] == [0, 1000, 1]


def test_least_loaded_among_many_workers(broker: Broker, wire: Wire) -> None:
    for n in range(50):
        ready(broker, b"w%02d" % n, credit=4)
    for rid in range(100):
        request(broker, b"c", rid)
    loads = [len(wire.to(b"w%02d" % n, P.REQUEST)) for n in range(50)]
    assert loads == [2] * 50


def test_partials_reach_only_the_client_of_a_running_request_and_never_finish_it(
        broker: Broker, wire: Wire) -> None:
    ready(broker, b"w1", credit=2)
    request(broker, b"a", 1)
    request(broker, b"b", 2)
    (_, _, ticket_a, _), (_, _, ticket_b, _) = wire.to(b"w1", P.REQUEST)
    key_a, key_b = ticket_a[P.TICKET_HEAD:], ticket_b[P.TICKET_HEAD:]  # the key ends the ticket
    for text in ("one", "two"):
        broker.handle([b"w1", P.PARTIAL, ticket_a, key_a, P.pack({"delta": text})])
    assert [P.unpack(f[3]) for f in wire.to(b"a", P.PARTIAL)] == [{"delta": "one"},
                                                                  {"delta": "two"}]
    assert all(f[2] == key_a for f in wire.to(b"a", P.PARTIAL))
    broker.handle([b"w1", P.PARTIAL, ticket_a, key_b, P.pack({"delta": "for b?"})])  # wrong key
    broker.handle([b"w9", P.PARTIAL, ticket_b, key_b, P.pack({"delta": "stranger"})])
    too_big = P.pack({"delta": "x" * P.MAX_PARTIAL_BYTES})
    broker.handle([b"w1", P.PARTIAL, ticket_b, key_b, too_big])
    assert wire.to(b"b") == [] and broker.counters["dropped_oversize"] == 1
    assert broker.counters["partials"] == 2
    reply(broker, b"w1", ticket_a, P.pack("done"))  # the request was still in flight
    assert [f[1] for f in wire.to(b"a")] == [P.PARTIAL, P.PARTIAL, P.REPLY]
    broker.handle([b"w1", P.PARTIAL, ticket_a, key_a, P.pack({"delta": "late"})])  # answered
    assert len(wire.to(b"a")) == 3 and broker.counters["dropped_stale"] == 3  # key, w9, late
