"""What the roles check costs the broker per request, measured against the broker's own routing.

    python perf/authorization.py [--json] [--quick]

In one process, no sockets: the broker's state (``itas.broker.core.Broker``) routes a REQUEST
to a worker and its REPLY back, over and over; the same loop is timed with the roles check
(``itas.security.refusal``, as ``BrokerServer`` runs it before routing) in front of every
message. The roles file has 50 keys of a few patterns each, and the services are spread so
the decision cache holds many entries. Figures: microseconds per round trip each way, best of
``--repeats`` runs interleaved, and ``ratio_with_roles`` (1.0 = free). The socket work a real
broker does per message (recv, send, CURVE decryption) is not in either figure, so the ratio
overstates the share the check takes in a running broker.
"""

from __future__ import annotations

import argparse
import json
import time

import zmq.utils.z85

from itas import protocol as P
from itas.broker.core import Broker
from itas.security import Role, Roles, refusal

ROUNDS = 200_000
QUICK_ROUNDS = 20_000
REPEATS = 5
QUICK_REPEATS = 2
SERVICES = 64


def _key(i: int) -> str:
    return zmq.utils.z85.encode(i.to_bytes(32, "big")).decode()


def _roles() -> Roles:
    roles = {_key(i): Role(serve=(f"svc-{i}-*",), call=(f"svc-{i % 7}-*", "orchestrator"))
             for i in range(50)}
    roles[_key(1000)] = Role(serve=("svc-*",), call=("svc-*",))
    return Roles(roles)


def _one_run(rounds: int, roles: Roles | None) -> float:
    sent: list[list[bytes]] = []
    broker = Broker(lambda frames: sent.append(frames) or True)
    client, client_key = b"\x00client", _key(1000)
    for s in range(SERVICES):
        broker.handle([b"\x00w%d" % s, P.READY, P.ready_body(f"svc-{s}-x", 10, "w", 1000)])
    requests = [[client, P.REQUEST, P.request_meta(i, f"svc-{i % SERVICES}-x", 60_000),
                 P.pack(i)] for i in range(SERVICES)]
    handle = broker.handle
    started = time.perf_counter()
    for i in range(rounds):
        request = requests[i % SERVICES]
        if roles is None or refusal(roles, request, client_key) is None:
            handle(request)
        sent.clear()
        worker, ticket = b"\x00w%d" % (i % SERVICES), None
        ticket = next(iter(broker.workers[worker].inflight))
        reply = [worker, P.REPLY, ticket, P.pack(i)]
        if roles is None or refusal(roles, reply, client_key) is None:
            handle(reply)
        sent.clear()
    return (time.perf_counter() - started) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    args = parser.parse_args()
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    repeats = QUICK_REPEATS if args.quick else REPEATS
    roles = _roles()
    plain, checked = [], []
    for _ in range(repeats):  # interleaved, so drift in machine load hits both alike
        plain.append(_one_run(rounds, None))
        checked.append(_one_run(rounds, roles))
    figures = {"round_trip_us": round(min(plain), 3),
               "round_trip_with_roles_us": round(min(checked), 3),
               "ratio_with_roles": round(min(checked) / min(plain), 3),
               "rounds": rounds, "repeats": repeats}
    print(json.dumps(figures, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
