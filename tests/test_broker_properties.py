"""Properties of the broker's routing over random event sequences (hypothesis).

A history of requests, resends, replies (right, stale and hostile), cancels,
worker arrivals, departures and silences, and clock moves is run through
``Broker``; a checker reads everything it sent. The promises: every answer goes
to a sender of its request and carries that request's own result; at most one
answer per request, and exactly one by its deadline unless it was cancelled;
nothing is dispatched once expired; queues never exceed their limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from itas import protocol as P
from itas.broker.core import Broker

WORKERS = [b"w0", b"w1", b"w2", b"w3"]
CLIENTS = [b"c0", b"c1", b"c2"]
SERVICES = ["a", "b"]
PER_SERVICE, PER_CLIENT = 6, 4

events = st.lists(st.one_of(
    st.tuples(st.just("ready"), st.sampled_from(WORKERS), st.sampled_from(SERVICES),
              st.integers(1, 3)),
    st.tuples(st.just("request"), st.sampled_from(CLIENTS), st.sampled_from(SERVICES),
              st.integers(100, 3000)),
    st.tuples(st.just("resend"), st.integers(0, 50), st.sampled_from(CLIENTS + [b"c9"])),
    st.tuples(st.just("reply"), st.sampled_from(WORKERS), st.integers(0, 5),
              st.sampled_from(["right", "right", "right", "wrong_key", "old_epoch"])),
    st.tuples(st.just("disconnect"), st.sampled_from(WORKERS)),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("heartbeat"), st.sampled_from(WORKERS)),
    st.tuples(st.just("advance"), st.floats(0.01, 2.0)),
), max_size=80)


@dataclass
class History:
    now: float = 100.0
    sent: list[tuple[float, list[bytes]]] = field(default_factory=list)
    senders: dict[bytes, set[bytes]] = field(default_factory=dict)
    deadline: dict[bytes, float] = field(default_factory=dict)
    cancelled: set[bytes] = field(default_factory=set)
    answers: dict[bytes, list[list[bytes]]] = field(default_factory=dict)
    running: dict[bytes, list[bytes]] = field(default_factory=dict)  # worker -> tickets

    def send(self, frames: list[bytes]) -> bool:
        self.sent.append((self.now, frames))
        peer, header = frames[0], frames[1]
        if header == P.REQUEST:
            self.running.setdefault(peer, []).append(frames[2])
        elif header in (P.REPLY, P.ERROR):
            self.answers.setdefault(frames[2], []).append(frames)
        return True


def check_sent(history: History) -> None:
    for when, frames in history.sent:
        peer, header = frames[0], frames[1]
        if header in (P.REPLY, P.ERROR):
            key = frames[2]
            assert peer in history.senders[key], "an answer went to a client that did not ask"
            if header == P.REPLY:
                assert frames[4] == key, "a reply carried another request's result"
        elif header == P.REQUEST and peer in WORKERS:
            key = frames[2][P.TICKET_HEAD:]
            assert when < history.deadline[key], "an expired request was dispatched"
            assert P.ticket_timeout_ms(frames[2]) > 0
    for key, answers in history.answers.items():
        assert len(answers) == 1, f"request {key!r} was answered {len(answers)} times"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_random_histories_keep_the_promises(history_events: list[tuple]) -> None:
    h = History()
    broker = Broker(h.send, heartbeat_interval=1.0, liveness=3, clock=lambda: h.now,
                    max_waiting_per_service=PER_SERVICE, max_waiting_per_client=PER_CLIENT)
    keys: list[bytes] = []
    for event in history_events:
        kind = event[0]
        if kind == "ready":
            _, worker, service, credit = event
            broker.handle([worker, P.READY, P.ready_body(service, credit, worker.decode(), 1000)])
        elif kind == "request":
            _, client, service, timeout_ms = event
            key = len(keys).to_bytes(P.KEY_BYTES, "big")
            keys.append(key)
            h.senders[key] = {client}
            h.deadline[key] = h.now + timeout_ms / 1000
            broker.handle([client, P.REQUEST, key, P.request_meta(service, timeout_ms), b"?"])
        elif kind == "resend" and keys:
            _, index, client = event
            key = keys[index % len(keys)]
            if key not in h.answers and key not in h.cancelled:  # clients resend only these
                h.senders[key].add(client)
                service = "a"  # the broker ignores the meta of a request it already has
                broker.handle([client, P.REQUEST, key, P.request_meta(service, 1000), b"?"])
        elif kind == "reply" and h.running.get(event[1]):
            _, worker, index, how = event
            jobs = h.running[worker]
            ticket = jobs.pop(index % len(jobs))
            key = ticket[P.TICKET_HEAD:]
            if how == "wrong_key":
                ticket = ticket[:P.TICKET_HEAD] + b"not-" + key
            elif how == "old_epoch":
                ticket = bytes(8) + ticket[8:]
            broker.handle([worker, P.REPLY, ticket, key])  # the result is the key itself
        elif kind == "disconnect":
            broker.handle([event[1], P.DISCONNECT])
            h.running.pop(event[1], None)
        elif kind == "cancel" and keys:
            key = keys[event[1] % len(keys)]
            if key not in h.answers:
                h.cancelled.add(key)
                for client in sorted(h.senders[key]):
                    broker.handle([client, P.CANCEL, key])
        elif kind == "heartbeat":
            broker.handle([event[1], P.HEARTBEAT])
        elif kind == "advance":
            h.now += event[1]
            broker.tick()
        for name, service in broker.status()["services"].items():
            assert service["waiting"] <= PER_SERVICE, name
        assert all(n <= PER_CLIENT for n in broker._waiting_by_client.values())
        check_sent(h)
    h.now += 10.0  # past every deadline
    broker.tick()
    check_sent(h)
    for key in keys:
        if key not in h.cancelled:
            assert len(h.answers.get(key, [])) == 1, f"request {key!r} was never answered"
    assert not broker.active
