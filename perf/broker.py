"""Broker throughput and latency, measured against the floors any Python broker pays.

    python perf/broker.py [--json] [--quick]

Four set-ups share one load generator and (where they can) one echo worker, so
only the thing in the middle differs:

    direct     client -> ROUTER echo server                          (no hop: the ceiling)
    forwarder  client -> bare ROUTER forwarder -> raw echo worker    (the floor of any hop)
    fastio     the same forwarder with the broker's frame-level I/O  (a stricter floor)
    broker     client -> itas broker -> raw echo worker              (``broker_rps``)
    itas       client -> itas broker -> ``itas agent --kind echo``   (end to end, asyncio worker)

The client is a raw zmq DEALER in its own process that keeps ``--window``
requests in flight, speaking the itas wire protocol. Each request body is its
own send time (a msgpack integer, which every echo returns unchanged), so
latency needs no bookkeeping that could differ between set-ups. The raw worker
speaks the itas worker protocol (READY, REQUEST -> REPLY, heartbeats); the
forwarder passes the client's key frame to it as the ticket and never decodes
anything. Every process runs on loopback TCP on a free port; runs interleave
across set-ups so drift in machine load hits them all alike.

A second measurement keeps one service with 1, 100 and 1,000 connected workers
(``--role workers``: one process holding that many DEALER sockets, credit 1
each, except the single worker, which has the whole window) and reports the
broker's CPU per round trip for each: dispatch must not cost more as workers
are added (``worker_scaling``). Its ``routing_only`` part times the broker's routing
in this process with no sockets, which isolates the choice of worker from the cost
of many connections in the kernel and ZeroMQ.

Figures: round trips per second, best of ``--repeats`` runs; ``p50_us``/``p99_us``
from that broker run, so they include queueing behind the window;
``*_unloaded`` latencies from a run with one request in flight; and the CPU the
process in the middle spends per round trip (median of the runs), which other
load on the machine barely moves, unlike round trips per second.

Every child dies with this process: SIGTERM at exit (also on Ctrl-C), SIGKILL
after a grace period, and PR_SET_PDEATHSIG in case this process is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from itas import protocol as P
from itas.lifecycle import preexec_die_with_parent

WINDOW = 64
DURATION_S = 2.0
QUICK_DURATION_S = 0.6
REPEATS = 3
QUICK_REPEATS = 1
WARMUP_S = 0.3
QUICK_WARMUP_S = 0.1
WORKER_HEARTBEAT_S = 1.0
FLEET_HEARTBEAT_S = 10.0
FLEET_SIZES = (1, 100, 1000)
SERVICE_FLEET = "perf.fleet-echo"
CORE_ROUNDS, CORE_ROUNDS_QUICK = 50_000, 5_000
REPLY_TIMEOUT_MS = 10_000
STARTUP_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
CHECK_S = 0.2  # how often a wait looks for a server that died
SERVICE_RAW = "perf.raw-echo"
SERVICE_ITAS = "perf.itas-echo"
REQUEST_TIMEOUT_MS = 60_000
LOOPBACK = "tcp://127.0.0.1:0"
ONE_ATTEMPT = msgpack.packb(1)
# Measured run -> (set-up, requests in flight; None: --window). "unloaded" gives the
# latency one request sees through the broker when nothing queues in front of it.
RUNS: dict[str, tuple[str, int | None]] = {
    "direct": ("direct", None),
    "forwarder": ("forwarder", None),
    "forwarder_fastio": ("forwarder_fastio", None),
    "broker": ("broker", None),
    "itas": ("itas", None),
    "broker_unloaded": ("broker", 1),
}


# -- the processes under test (run as ``--role NAME``) ---------------------------------

def _router(context: zmq.Context) -> zmq.Socket:
    """A ROUTER with the broker's queue limits, bound to a free loopback port.

    Not ROUTER_MANDATORY: replies still in flight when a client leaves are dropped.
    """
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.bind(LOOPBACK)
    print(sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    return sock


def role_direct() -> None:
    """The ceiling: echo straight back to the client, no hop in between."""
    sock = _router(zmq.Context())
    recv, send = sock.recv_multipart, sock.send_multipart
    while True:
        client, _, key, _, body = recv()
        send([client, P.REPLY, key, ONE_ATTEMPT, body])


def role_forwarder() -> None:
    """The floor: one client, one worker, one ROUTER; frames are passed, never decoded."""
    sock = _router(zmq.Context())
    recv, send = sock.recv_multipart, sock.send_multipart
    worker = client = b""
    while True:
        frames = recv()
        header = frames[1]
        if header == P.REQUEST:  # [client, REQUEST, key, meta, body] -> key is the ticket
            client = frames[0]
            send([worker, header, frames[2], frames[4]])
        elif header == P.REPLY:  # [worker, REPLY, ticket, body]
            send([client, header, frames[2], ONE_ATTEMPT, frames[3]])
        elif header == P.READY:
            worker = frames[0]
            print("worker ready", flush=True)


def role_forwarder_fastio() -> None:
    """The forwarder above with the broker's own frame-level I/O (no *_multipart helpers):
    what the broker would cost with its features and none of pyzmq's convenience layer."""
    sock = _router(zmq.Context())
    recv, send = sock.recv, sock.send
    noblock, more = int(zmq.NOBLOCK), int(zmq.SNDMORE)
    worker = client = b""
    while True:
        frame = recv(copy=False)
        frames = [frame.bytes]
        while frame.more:
            frame = recv(copy=False)
            frames.append(frame.bytes)
        header = frames[1]
        if header == P.REQUEST:
            client, frames = frames[0], [worker, header, frames[2], frames[4]]
        elif header == P.REPLY:
            frames = [client, header, frames[2], ONE_ATTEMPT, frames[3]]
        else:
            if header == P.READY:
                worker = frames[0]
                print("worker ready", flush=True)
            continue
        for part in frames[:-1]:
            send(part, more | noblock)
        send(frames[-1], noblock)


def _ready(service: str, credit: int, name: str, heartbeat_s: float) -> list[bytes]:
    return [P.READY, P.ready_body(service, credit, name, heartbeat_ms=int(heartbeat_s * 1000))]


def _answer(sock: zmq.Socket, frames: list[bytes], service: str, credit: int,
            heartbeat_s: float) -> None:
    """The raw worker's whole protocol: echo a REQUEST, announce again when forgotten."""
    if frames[0] == P.REQUEST:  # [REQUEST, ticket, body]
        sock.send_multipart([P.REPLY, frames[1], frames[2]])
    elif frames[0] == P.DISCONNECT:  # the broker forgot us: announce again
        sock.send_multipart(_ready(service, credit, f"perf-raw/{os.getpid()}", heartbeat_s))


def role_worker(endpoint: str, service: str, credit: int) -> None:
    """A raw echo worker speaking the itas worker protocol, with no asyncio under it."""
    sock = zmq.Context().socket(zmq.DEALER)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(endpoint)
    sock.send_multipart(_ready(service, credit, f"perf-raw/{os.getpid()}", WORKER_HEARTBEAT_S))
    recv = sock.recv_multipart
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    next_beat = time.monotonic() + WORKER_HEARTBEAT_S
    while True:
        if poller.poll(max(0.0, next_beat - time.monotonic()) * 1000):
            while True:
                try:
                    frames = recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                _answer(sock, frames, service, credit, WORKER_HEARTBEAT_S)
        if time.monotonic() >= next_beat:
            sock.send_multipart([P.HEARTBEAT])
            next_beat = time.monotonic() + WORKER_HEARTBEAT_S


def role_workers(endpoint: str, service: str, count: int, credit: int) -> None:
    """``count`` raw echo workers of one service in one process: one DEALER socket each.

    They heartbeat slowly (``FLEET_HEARTBEAT_S``) so that a thousand of them cost the
    broker little besides what is measured: choosing among them.
    """
    context = zmq.Context()
    poller = zmq.Poller()
    socks: list[zmq.Socket] = []
    for n in range(count):
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sock.send_multipart(_ready(service, credit, f"perf-fleet/{os.getpid()}/{n}",
                                   FLEET_HEARTBEAT_S))
        poller.register(sock, zmq.POLLIN)
        socks.append(sock)
    print(f"{count} workers ready", flush=True)
    next_beat = time.monotonic() + FLEET_HEARTBEAT_S
    while True:
        for sock, _ in poller.poll(max(0.0, next_beat - time.monotonic()) * 1000):
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                _answer(sock, frames, service, credit, FLEET_HEARTBEAT_S)
        if time.monotonic() >= next_beat:
            for sock in socks:
                sock.send_multipart([P.HEARTBEAT])
            next_beat = time.monotonic() + FLEET_HEARTBEAT_S


def role_client(endpoint: str, service: str, window: int, duration: float, warmup: float
                ) -> None:
    """Keep ``window`` requests in flight; print one JSON line with rate and latencies."""
    sock = zmq.Context().socket(zmq.DEALER)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.RCVTIMEO, REPLY_TIMEOUT_MS)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    meta = P.request_meta(service, REQUEST_TIMEOUT_MS)  # replies are told apart by body
    sent = 0  # numbers the keys: the broker keeps one copy per key
    recv, send, packb, unpackb = sock.recv_multipart, sock.send_multipart, msgpack.packb, \
        msgpack.unpackb
    clock = time.perf_counter_ns
    request = P.REQUEST
    latencies: list[int] = []
    errors = outstanding = total = 0
    measuring = False
    start = clock()
    phase_end = start + int(warmup * 1e9)
    while True:
        while outstanding < window:
            sent += 1
            send([request, sent.to_bytes(P.KEY_BYTES, "big"), meta, packb(clock())])
            outstanding += 1
        try:
            frames = recv()
        except zmq.Again:
            raise SystemExit(f"client: no reply from {endpoint} within "
                             f"{REPLY_TIMEOUT_MS / 1000:g} s") from None
        while True:
            now = clock()
            outstanding -= 1
            total += 1
            if frames[0] != P.REPLY:
                errors += 1  # the client sends no heartbeats, so only ERROR replies land here
            elif measuring:
                latencies.append(now - unpackb(frames[3]))
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        if now >= phase_end:
            if measuring:
                break
            measuring, start, phase_end = True, now, now + int(duration * 1e9)
    elapsed = (now - start) / 1e9
    latencies.sort()
    print(json.dumps({
        "rps": len(latencies) / elapsed,
        "replies": len(latencies),
        "replies_with_warmup": total,
        "errors": errors,
        "p50_us": _percentile(latencies, 0.50) / 1000,
        "p99_us": _percentile(latencies, 0.99) / 1000,
    }), flush=True)


def _percentile(ordered: list[int], q: float) -> float:
    if not ordered:
        return float("nan")
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


# -- orchestration --------------------------------------------------------------------

class Children:
    """Every process started for a measurement, each in its own session, ended on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.servers: list[subprocess.Popen[bytes]] = []  # must outlive the measurement

    def start(self, *args: str, server: bool = True) -> subprocess.Popen[bytes]:
        # Unbuffered, so a line read never pulls the next one into a hidden buffer.
        # preexec_fn is safe here: this process starts no threads.
        proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, bufsize=0,
                                start_new_session=True,
                                preexec_fn=preexec_die_with_parent)  # noqa: PLW1509
        self.procs.append(proc)
        if server:
            self.servers.append(proc)
        return proc

    def role(self, name: str, *args: str, server: bool = True) -> subprocess.Popen[bytes]:
        return self.start(os.path.abspath(__file__), "--role", name, *args, server=server)

    def read_line(self, proc: subprocess.Popen[bytes], what: str,
                  timeout: float = STARTUP_TIMEOUT_S) -> str:
        """One stdout line from a child; a clear error if it, or any server, died first."""
        assert proc.stdout is not None
        fd, line, deadline = proc.stdout.fileno(), bytearray(), time.monotonic() + timeout
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{what}: no output line within {timeout:g} s")
            ready, _, _ = select.select([fd], [], [], min(CHECK_S, remaining))
            if not ready:
                self._check_servers()
                continue
            byte = os.read(fd, 1)
            if not byte:
                raise RuntimeError(f"{what}: exited with code {proc.wait()} before answering")
            line += byte
        return line.decode().strip()

    def _check_servers(self) -> None:
        for proc in self.servers:
            if proc.poll() is not None:
                command = " ".join(map(str, proc.args[1:]))  # type: ignore[index]
                raise RuntimeError(f"{command}: exited early with code {proc.returncode}")

    def stop_all(self) -> None:
        for proc in reversed(self.procs):  # workers first, brokers last
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@dataclass(frozen=True)
class Target:
    """Where a set-up's client connects, and the process in the middle whose CPU is counted."""

    endpoint: str
    service: str
    middle: subprocess.Popen[bytes]


def start_setups(children: Children, window: int) -> dict[str, Target]:
    """Start every server and worker; all stay up, idle, while the others are measured."""
    direct_proc = children.role("direct")
    direct = children.read_line(direct_proc, "direct echo server")
    forwarder_proc = children.role("forwarder")
    forwarder = children.read_line(forwarder_proc, "forwarder")
    children.role("worker", "--endpoint", forwarder, "--service", SERVICE_RAW,
                  "--window", str(window))
    children.read_line(forwarder_proc, "forwarder (waiting for its worker)")
    fastio_proc = children.role("forwarder_fastio")
    fastio = children.read_line(fastio_proc, "forwarder_fastio")
    children.role("worker", "--endpoint", fastio, "--service", SERVICE_RAW,
                  "--window", str(window))
    children.read_line(fastio_proc, "forwarder_fastio (waiting for its worker)")
    broker, broker_proc = _start_broker(children)
    children.role("worker", "--endpoint", broker, "--service", SERVICE_RAW,
                  "--window", str(window))
    children.start("-m", "itas", "agent", "--kind", "echo", "--broker", broker,
                   "--settings", json.dumps({"service": SERVICE_ITAS, "credit": window}))
    return {
        "direct": Target(direct, SERVICE_RAW, direct_proc),
        "forwarder": Target(forwarder, SERVICE_RAW, forwarder_proc),
        "forwarder_fastio": Target(fastio, SERVICE_RAW, fastio_proc),
        "broker": Target(broker, SERVICE_RAW, broker_proc),
        "itas": Target(broker, SERVICE_ITAS, broker_proc),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (zmq's I/O thread included)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_client(children: Children, target: Target, window: int, duration: float,
               warmup: float) -> dict[str, Any]:
    """One measured run; adds the middle process's CPU per round trip to the result."""
    cpu_before = cpu_seconds(target.middle.pid)
    proc = children.role("client", "--endpoint", target.endpoint, "--service", target.service,
                         "--window", str(window), "--duration", str(duration),
                         "--warmup", str(warmup), server=False)
    # The first run of a set-up also waits for its worker to announce itself.
    line = children.read_line(proc, f"client of {target.endpoint} ({target.service})",
                      STARTUP_TIMEOUT_S + duration + warmup)
    proc.wait()
    result: dict[str, Any] = json.loads(line)
    if result["errors"]:
        raise RuntimeError(f"client of {target.endpoint} ({target.service}) got "
                           f"{result['errors']} error replies")
    cpu = cpu_seconds(target.middle.pid) - cpu_before
    result["middle_cpu_us_per_rt"] = cpu / max(1, result["replies_with_warmup"]) * 1e6
    return result


def measure(window: int, duration: float, warmup: float, repeats: int) -> dict[str, Any]:
    children = Children()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in RUNS}
    try:
        targets = start_setups(children, window)
        for _ in range(repeats):
            for name, (setup, in_flight) in RUNS.items():
                runs[name].append(run_client(children, targets[setup], in_flight or window,
                                             duration, warmup))
    finally:
        children.stop_all()
    best = {name: max(results, key=lambda r: r["rps"]) for name, results in runs.items()}
    # CPU per round trip barely depends on other load on the machine: take the median.
    cpu = {name: statistics.median(r["middle_cpu_us_per_rt"] for r in results)
           for name, results in runs.items()}
    broker, direct, forwarder = best["broker"], best["direct"], best["forwarder"]
    return {
        "broker_rps": round(broker["rps"]),
        "direct_rps": round(direct["rps"]),
        "forwarder_rps": round(forwarder["rps"]),
        "forwarder_fastio_rps": round(best["forwarder_fastio"]["rps"]),
        "broker_rps_itas_worker": round(best["itas"]["rps"]),
        "ratio": round(broker["rps"] / direct["rps"], 3),
        "vs_forwarder": round(broker["rps"] / forwarder["rps"], 3),
        "vs_forwarder_fastio": round(broker["rps"] / best["forwarder_fastio"]["rps"], 3),
        "p50_us": round(broker["p50_us"], 1),
        "p99_us": round(broker["p99_us"], 1),
        "p50_us_unloaded": round(best["broker_unloaded"]["p50_us"], 1),
        "p99_us_unloaded": round(best["broker_unloaded"]["p99_us"], 1),
        "broker_cpu_us_per_rt": round(cpu["broker"], 2),
        "forwarder_cpu_us_per_rt": round(cpu["forwarder"], 2),
        "forwarder_fastio_cpu_us_per_rt": round(cpu["forwarder_fastio"], 2),
        "cpu_vs_forwarder": round(cpu["forwarder"] / cpu["broker"], 3),
        "runs": {name: [{k: round(v, 1) for k, v in r.items()} for r in results]
                 for name, results in runs.items()},
        "config": {"window": window, "duration_s": duration, "repeats": repeats,
                   "pick": "rps: best of repeats, latencies from that run; cpu: median",
                   "cpus": os.cpu_count(), "transport": "tcp loopback"},
    }


def _start_broker(children: Children) -> tuple[str, subprocess.Popen[bytes]]:
    proc = children.start("-m", "itas", "broker", "--bind", LOOPBACK)
    line = children.read_line(proc, "itas broker")
    match = re.search(r"listening on (\S+)", line)
    if match is None:
        raise RuntimeError(f"itas broker: unexpected first line {line!r}")
    return match.group(1), proc


def measure_worker_scaling(window: int, duration: float, warmup: float, repeats: int
                           ) -> dict[str, Any]:
    """Broker CPU per round trip with 1, 100 and 1,000 workers of one service connected.

    Each fleet size gets its own broker, so nothing left over from one size is
    counted in another; the client and window are those of the main measurement.
    """
    figures: dict[str, Any] = {}
    for size in FLEET_SIZES:
        children = Children()
        try:
            endpoint, broker = _start_broker(children)
            credit = window if size == 1 else 1
            fleet = children.role("workers", "--endpoint", endpoint, "--service", SERVICE_FLEET,
                                  "--window", str(credit), "--count", str(size))
            children.read_line(fleet, f"{size} workers")
            results = [run_client(children, Target(endpoint, SERVICE_FLEET, broker),
                                  min(window, size * credit), duration, warmup)
                       for _ in range(repeats)]
        finally:
            children.stop_all()
        figures[f"workers_{size}"] = {
            "broker_cpu_us_per_rt": round(statistics.median(
                r["middle_cpu_us_per_rt"] for r in results), 2),
            "rps": round(max(r["rps"] for r in results)),
        }
    base = figures[f"workers_{FLEET_SIZES[0]}"]["broker_cpu_us_per_rt"]
    figures["cpu_ratio_1000_vs_1"] = round(
        figures[f"workers_{FLEET_SIZES[-1]}"]["broker_cpu_us_per_rt"] / base, 3)
    return figures


def _collector(out: list[list[bytes]]) -> Callable[[list[bytes]], bool]:
    def send(frames: list[bytes]) -> bool:
        out.append(frames)
        return True
    return send


def measure_core_dispatch(window: int, rounds: int) -> dict[str, Any]:
    """The routing alone, in this process and with no sockets: CPU per request and reply
    through ``Broker`` with 1, 100 and 1,000 workers of one service (credit 1 each, except
    the single worker, which has the whole window). This isolates the choice of worker
    from the kernel and ZeroMQ costs of many connections, which the process figures
    include."""
    from itas.broker.core import Broker

    figures: dict[str, Any] = {}
    for size in FLEET_SIZES:
        out: list[list[bytes]] = []
        broker = Broker(_collector(out))
        credit = window if size == 1 else 1
        for n in range(size):
            broker.handle([b"w%d" % n, P.READY, P.ready_body(SERVICE_FLEET, credit, "w", 10_000)])
        meta = P.request_meta(SERVICE_FLEET, REQUEST_TIMEOUT_MS)
        sent = 0
        for _ in range(window):
            sent += 1
            broker.handle([b"c", P.REQUEST, sent.to_bytes(P.KEY_BYTES, "big"), meta, b"\x01"])
        jobs = [f for f in out if f[1] == P.REQUEST]
        started = time.process_time()
        for _ in range(rounds):
            worker, _, ticket, _ = jobs.pop()
            out.clear()
            broker.handle([worker, P.REPLY, ticket, b"\x01"])
            sent += 1
            broker.handle([b"c", P.REQUEST, sent.to_bytes(P.KEY_BYTES, "big"), meta, b"\x01"])
            jobs.extend(f for f in out if f[1] == P.REQUEST)
        figures[f"workers_{size}_us"] = round((time.process_time() - started) / rounds * 1e6, 2)
    figures["ratio_1000_vs_1"] = round(figures["workers_1000_us"] / figures["workers_1_us"], 3)
    return figures


def _print_table(result: dict[str, Any]) -> None:
    rows = [("direct (ceiling)", "direct_rps"), ("forwarder (floor of a hop)", "forwarder_rps"),
            ("forwarder, frame-level I/O", "forwarder_fastio_rps"),
            ("broker, raw worker", "broker_rps"), ("broker, itas Worker", "broker_rps_itas_worker")]
    for label, key in rows:
        print(f"{label:<28} {result[key]:>9,} round trips/s")
    print(f"broker / direct    = {result['ratio']:.3f}  (target >= 0.3)")
    print(f"broker / forwarder = {result['vs_forwarder']:.3f}  (target >= 0.9)")
    print(f"broker / forwarder with frame-level I/O = {result['vs_forwarder_fastio']:.3f}")
    print(f"CPU per round trip in the middle: broker {result['broker_cpu_us_per_rt']:.1f} us, "
          f"forwarder {result['forwarder_cpu_us_per_rt']:.1f} us "
          f"(forwarder / broker = {result['cpu_vs_forwarder']:.3f})")
    print(f"broker latency at window {result['config']['window']}: "
          f"p50 {result['p50_us']:.0f} us, p99 {result['p99_us']:.0f} us; one at a time: "
          f"p50 {result['p50_us_unloaded']:.0f} us, p99 {result['p99_us_unloaded']:.0f} us")
    scaling = result["worker_scaling"]
    for size in FLEET_SIZES:
        row = scaling[f"workers_{size}"]
        print(f"{size:>5} workers of one service: broker {row['broker_cpu_us_per_rt']:.1f} us CPU "
              f"per round trip, {row['rps']:,} round trips/s")
    print(f"CPU per round trip, 1000 workers / 1 worker = {scaling['cpu_ratio_1000_vs_1']:.3f}")
    core = scaling["routing_only"]
    print("routing alone (no sockets), CPU per request: " + ", ".join(
        f"{size} workers {core[f'workers_{size}_us']:.1f} us" for size in FLEET_SIZES)
        + f" (1000 / 1 = {core['ratio_1000_vs_1']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument("--window", type=int, default=WINDOW, help="requests in flight")
    parser.add_argument("--duration", type=float, help="seconds per measured run")
    parser.add_argument("--repeats", type=int, help="runs per set-up; the best one counts")
    parser.add_argument("--role", choices=["direct", "forwarder", "forwarder_fastio", "worker", "workers",
                                 "client"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--service", default=SERVICE_RAW, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=WARMUP_S, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = args.repeats or (QUICK_REPEATS if args.quick else REPEATS)
    if args.window < 1 or repeats < 1:
        parser.error("--window and --repeats must be at least 1")
    if args.role is not None:
        _run_role(args)
        return
    duration = args.duration or (QUICK_DURATION_S if args.quick else DURATION_S)
    warmup = QUICK_WARMUP_S if args.quick else WARMUP_S
    # SIGTERM unwinds like Ctrl-C (even where a shell started us with SIGINT ignored),
    # so the children are stopped either way.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        result = measure(args.window, duration, warmup, repeats)
        result["worker_scaling"] = measure_worker_scaling(args.window, duration, warmup, repeats)
        result["worker_scaling"]["routing_only"] = measure_core_dispatch(
            args.window, CORE_ROUNDS_QUICK if args.quick else CORE_ROUNDS)
    except KeyboardInterrupt:
        print("interrupted; every process this run started is stopped", file=sys.stderr)
        raise SystemExit(130) from None
    except RuntimeError as exc:  # a process under test failed: say which, no traceback
        print(f"perf/broker.py: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if args.json:
        print(json.dumps(result))
    else:
        _print_table(result)


def _run_role(args: argparse.Namespace) -> None:
    # The parent stops roles with SIGTERM; exit quietly on it and on Ctrl-C.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        if args.role == "direct":
            role_direct()
        elif args.role == "forwarder":
            role_forwarder()
        elif args.role == "forwarder_fastio":
            role_forwarder_fastio()
        elif args.role == "worker":
            role_worker(args.endpoint, args.service, args.window)
        elif args.role == "workers":
            role_workers(args.endpoint, args.service, args.count, args.window)
        else:
            role_client(args.endpoint, args.service, args.window, args.duration, args.warmup)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
