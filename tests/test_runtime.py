"""Broker, agents and clients as real processes on loopback TCP."""

from __future__ import annotations

import collections
import os
import signal
import time

import anyio
import pytest
import zmq

from itas import protocol as P
from itas.client import AsyncClient, Client
from itas.errors import RemoteError, RequestTimeout, ServiceUnavailable
from tests.helpers import FAST_HEARTBEAT, Processes, wait_for_workers

pytestmark = pytest.mark.anyio


def fast_client(endpoint: str, **options: object) -> AsyncClient:
    return AsyncClient(endpoint, heartbeat_interval=FAST_HEARTBEAT, **options)


async def test_round_trip_and_replicas_share_the_load(procs: Processes) -> None:
    broker = procs.broker()
    for _ in range(3):
        procs.agent(broker.endpoint, "sleep", {"seconds": 0.2, "credit": 1})
    procs.agent(broker.endpoint, "echo")
    wait_for_workers(broker.endpoint, "sleep", 3)
    wait_for_workers(broker.endpoint, "echo", 1)
    served_by: collections.Counter[int] = collections.Counter()
    async with fast_client(broker.endpoint) as client:
        assert await client.request("echo", {"a": [1, 2.5, "x", b"\x00"]}) == {
            "a": [1, 2.5, "x", b"\x00"]}
        with pytest.raises(RemoteError) as failure:
            await client.request("echo", {"fail": "on purpose"})
        assert failure.value.code == "requested_failure" and "on purpose" in str(failure.value)

        async def one(tag: int) -> None:
            reply = await client.request("sleep", {"tag": tag})
            assert reply["tag"] == tag
            served_by[reply["pid"]] += 1

        async with anyio.create_task_group() as tg:
            for tag in range(9):
                tg.start_soon(one, tag)
        status = await client.status()
    assert sorted(served_by.values()) == [3, 3, 3]  # credit 1 each: exactly shared
    assert status["counters"]["dispatched"] >= 11


def test_sync_client(procs: Processes) -> None:
    broker = procs.broker()
    procs.agent(broker.endpoint, "echo")
    wait_for_workers(broker.endpoint, "echo", 1)
    with Client(broker.endpoint) as client:
        assert [client.request("echo", i) for i in range(20)] == list(range(20))


async def test_kill_9_agent_with_requests_in_flight_loses_nothing(procs: Processes) -> None:
    broker = procs.broker()
    victims = [procs.agent(broker.endpoint, "sleep", {"seconds": 0.8, "credit": 4})
               for _ in range(2)]
    wait_for_workers(broker.endpoint, "sleep", 2)
    results = []
    async with fast_client(broker.endpoint, timeout=30) as client:
        async def one(tag: int) -> None:
            reply = await client.call("sleep", {"tag": tag})
            results.append((reply.body["tag"], reply.attempts, reply.body["pid"]))

        async with anyio.create_task_group() as tg:
            for tag in range(8):
                tg.start_soon(one, tag)
            await anyio.sleep(0.3)  # all 8 are in flight, 4 per agent
            victims[0].kill()
        status = await client.status()
    assert sorted(tag for tag, _, _ in results) == list(range(8))
    assert status["counters"]["retried"] >= 4
    retried = [(attempts, pid) for _, attempts, pid in results if attempts > 1]
    assert len(retried) >= 4 and all(pid == victims[1].pid for _, pid in retried)


async def test_broker_killed_and_restarted_under_load_loses_nothing(procs: Processes) -> None:
    broker = procs.broker()
    for _ in range(2):
        procs.agent(broker.endpoint, "sleep", {"seconds": 0.02, "credit": 8})
    wait_for_workers(broker.endpoint, "sleep", 2)
    done: list[int] = []
    async with fast_client(broker.endpoint, timeout=60) as client:
        async def stream(worker: int) -> None:
            for i in range(40):
                reply = await client.request("sleep", {"tag": worker * 1000 + i})
                done.append(reply["tag"])

        async with anyio.create_task_group() as tg:
            for worker in range(8):
                tg.start_soon(stream, worker)
            while len(done) < 60:
                await anyio.sleep(0.01)
            broker.kill()
            await anyio.sleep(0.5)
            broker.restart()
        assert client.resends > 0
        status = await client.status()
    assert sorted(done) == sorted(w * 1000 + i for w in range(8) for i in range(40))
    assert status["services"]["sleep"]["workers"] == 2  # the agents announced again


async def test_unknown_service_gets_a_clear_error_within_the_deadline(procs: Processes) -> None:
    broker = procs.broker()
    async with fast_client(broker.endpoint) as client:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as failure:
            await client.request("nobody@sim:x", {}, timeout=2.0)
        elapsed = time.monotonic() - started
    assert "'nobody@sim:x'" in str(failure.value)
    assert elapsed < 2.0


async def test_timeout_when_the_agent_is_too_slow(procs: Processes) -> None:
    broker = procs.broker()
    procs.agent(broker.endpoint, "sleep", {"seconds": 5})
    wait_for_workers(broker.endpoint, "sleep", 1)
    async with fast_client(broker.endpoint) as client:
        with pytest.raises(RequestTimeout):
            await client.request("sleep", {}, timeout=0.5)


async def test_fuzzing_the_broker_while_it_serves(procs: Processes) -> None:
    broker = procs.broker()
    procs.agent(broker.endpoint, "echo")
    wait_for_workers(broker.endpoint, "echo", 1)
    rng = __import__("random").Random(1234)

    def junk() -> list[bytes]:
        kind = rng.randrange(6)
        if kind == 0:
            return [os.urandom(rng.randrange(1, 64)) for _ in range(rng.randrange(1, 5))]
        if kind == 1:
            return [P.REQUEST] * rng.randrange(1, 7)  # wrong frame counts
        if kind == 2:
            return [P.REQUEST, os.urandom(12) + b"\xc1", b"x"]  # bad msgpack meta
        if kind == 3:
            return [P.READY, b"\xc1\xc1"]
        if kind == 4:
            return [b"ITAS\x07\x02", P.request_meta(os.urandom(16), "echo", 100), b""]  # version
        half = b"x" * (P.MAX_MESSAGE_BYTES // 2 + 1)  # each frame fits; the whole does not
        return [P.REQUEST, P.request_meta(os.urandom(16), "echo", 100), half, half]

    context = zmq.Context()
    fuzzer = context.socket(zmq.DEALER)
    fuzzer.setsockopt(zmq.LINGER, 0)
    fuzzer.connect(broker.endpoint)
    sent = 0
    answers = []
    try:
        async with fast_client(broker.endpoint) as client:
            for round_ in range(20):
                for _ in range(150):
                    fuzzer.send_multipart(junk())
                    sent += 1
                answers.append(await client.request("echo", round_))
            await anyio.sleep(0.3)
            status = await client.status()
    finally:
        fuzzer.close()
        context.term()
    assert answers == list(range(20))
    counters = status["counters"]
    dropped = counters.get("dropped_malformed", 0) + counters.get("dropped_oversize", 0)
    assert sent == 3000
    assert dropped >= 2000, counters  # the rest are random bytes shaped like no message at all
    assert counters.get("dropped_oversize", 0) > 0
    assert broker.proc.poll() is None


async def test_agent_sigterm_finishes_in_flight_work(procs: Processes) -> None:
    broker = procs.broker()
    agent = procs.agent(broker.endpoint, "sleep", {"seconds": 1.0, "credit": 2})
    wait_for_workers(broker.endpoint, "sleep", 1)
    async with fast_client(broker.endpoint) as client, anyio.create_task_group() as tg:
        results = []

        async def one(tag: int) -> None:
            results.append(await client.request("sleep", {"tag": tag}, timeout=10))

        tg.start_soon(one, 1)
        tg.start_soon(one, 2)
        await anyio.sleep(0.3)
        agent.send_signal(signal.SIGTERM)
    assert sorted(r["tag"] for r in results) == [1, 2]
    assert {r["pid"] for r in results} == {agent.pid}
    assert agent.wait(timeout=5) == 0


def test_sigterm_of_broker_and_pool_leaves_no_process(procs: Processes, tmp_path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text("agents:\n  - kind: echo\n    replicas: 2\n  - kind: sleep\n    replicas: 1\n")
    broker = procs.broker()
    supervisor = procs.spawn("agents", "--pool", str(pool), "--broker", broker.endpoint)
    info = wait_for_workers(broker.endpoint, "echo", 2)
    wait_for_workers(broker.endpoint, "sleep", 1)
    children = _children_of(supervisor.pid)
    assert len(children) == 3, info
    os.kill(children[0], signal.SIGKILL)  # a crashed replica is restarted
    wait_for_workers(broker.endpoint, "echo", 2) if _is_echo(children[0]) else None
    time.sleep(1.0)
    assert len(_children_of(supervisor.pid)) == 3
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=15) == 0
    broker.kill(signal.SIGTERM)
    assert broker.proc.returncode == 0
    survivors = [pid for pid in children if _alive(pid)]
    assert survivors == []


def _children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def _is_echo(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"echo" in f.read()
    except FileNotFoundError:
        return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_pool_killed_outright_takes_its_agents_with_it(procs: Processes, tmp_path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text("agents:\n  - kind: echo\n    replicas: 2\n")
    broker = procs.broker()
    supervisor = procs.spawn("agents", "--pool", str(pool), "--broker", broker.endpoint)
    wait_for_workers(broker.endpoint, "echo", 2)
    children = _children_of(supervisor.pid)
    supervisor.kill()  # SIGKILL: no orderly shutdown runs
    supervisor.wait(timeout=10)
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in children if _alive(pid)] == []
