"""Issue 12 through real processes: restarts, deadlines, cancellation, bounds, fairness.

Each test is a promise from the issue that once failed, met as a user meets it:
the client library against a broker and agents running as OS processes.
"""

from __future__ import annotations

import collections
import functools

import anyio
import anyio.to_thread
import pytest
import zmq

from itas import protocol as P
from itas.client import AsyncClient
from itas.errors import RemoteError, RequestTimeout
from tests.helpers import FAST_HEARTBEAT, Processes, wait_for_workers

pytestmark = pytest.mark.anyio


def fast_client(endpoint: str, **options: object) -> AsyncClient:
    return AsyncClient(endpoint, heartbeat_interval=FAST_HEARTBEAT, **options)


async def test_after_a_broker_restart_each_query_gets_its_own_answer(procs: Processes) -> None:
    """Issue points 1 and 2: late replies to the old broker never match new tickets, and a
    restart does not multiply dispatches (no DISCONNECT / re-announce storm)."""
    broker = procs.broker()
    procs.agent(broker.endpoint, "sleep", {"seconds": 3.0, "credit": 40})
    wait_for_workers(broker.endpoint, "sleep", 1)
    answers: dict[str, object] = {}
    # The old client notices the restart later than the new one asks: the new broker
    # hands the new requests the ticket numbers the old broker gave the old ones.
    async with AsyncClient(broker.endpoint, timeout=30, heartbeat_interval=1.0) as old, \
            fast_client(broker.endpoint, timeout=30) as new:
        async def ask(client: AsyncClient, tag: str) -> None:
            answers[tag] = (await client.request("sleep", {"tag": tag}))["tag"]

        async with anyio.create_task_group() as tg:
            for i in range(15):
                tg.start_soon(ask, old, f"OLD-{i}")
            await anyio.sleep(0.5)  # all 15 are running on the agent
            broker.kill()
            await anyio.to_thread.run_sync(broker.restart)
            for i in range(15):  # the old tickets' numbers again, under the new broker
                tg.start_soon(ask, new, f"NEW-{i}")
        status = await new.status()
    assert answers == {tag: tag for tag in answers} and len(answers) == 30
    counters = status["counters"]
    # One dispatch per request the new broker was given: the 15 resent, the 15 new.
    assert counters["dispatched"] == 30, counters
    assert counters.get("retried", 0) == 0 and counters.get("workers_lost", 0) == 0


async def test_a_fresh_client_request_survives_a_fast_restart(procs: Processes) -> None:
    """Issue point 3: the request is resent to the new broker instead of waiting out its
    timeout (which, for `itas ask`, was 600 s)."""
    broker = procs.broker()
    procs.agent(broker.endpoint, "echo")
    wait_for_workers(broker.endpoint, "echo", 1)
    procs.agent(broker.endpoint, "sleep", {"seconds": 1.0})
    wait_for_workers(broker.endpoint, "sleep", 1)
    async with fast_client(broker.endpoint) as idle, fast_client(broker.endpoint) as fresh:
        assert await idle.request("echo", 1) == 1
        replies: list[object] = []

        async def ask() -> None:
            replies.append(await fresh.request("sleep", {"tag": "fresh"}, timeout=60))

        with anyio.fail_after(10):  # a lost request would wait all of its 60 s
            async with anyio.create_task_group() as tg:
                tg.start_soon(ask)
                await anyio.sleep(0.05)  # the broker has it, the client has heard nothing
                broker.kill()
                await anyio.to_thread.run_sync(broker.restart)
        assert [r["tag"] for r in replies] == ["fresh"]  # type: ignore[index]
        with anyio.fail_after(10):  # and the client that was idle across the restart
            assert await idle.request("echo", "idle", timeout=60) == "idle"


async def test_a_request_the_worker_never_answers_ends_at_its_deadline(procs: Processes
                                                                        ) -> None:
    """A heartbeating worker that never answers: the client gets the broker's
    ``deadline`` error naming the worker, and the worker stops the work (its one slot
    serves the next request at once, instead of after the 600 s sleep)."""
    broker = procs.broker()
    procs.agent(broker.endpoint, "sleep", {"seconds": 600, "credit": 1})
    wait_for_workers(broker.endpoint, "sleep", 1)
    async with fast_client(broker.endpoint) as client:
        with pytest.raises(RequestTimeout) as failure:
            await client.request("sleep", {}, timeout=1.5)
        assert "did not answer" in str(failure.value) and "'sleep'" in str(failure.value)
        reply = await client.request("sleep", {"seconds": 0.01, "tag": "next"}, timeout=5)
    assert reply["tag"] == "next"


async def test_a_client_that_gives_up_cancels_the_work(procs: Processes) -> None:
    """The caller's cancel scope ends the call; CANCEL reaches the agent, whose single
    slot is free for the next request long before the first one's 600 s."""
    broker = procs.broker()
    procs.agent(broker.endpoint, "sleep", {"seconds": 600, "credit": 1})
    wait_for_workers(broker.endpoint, "sleep", 1)
    async with fast_client(broker.endpoint) as client:
        async with anyio.create_task_group() as tg:  # no deadline: only the cancel ends it
            tg.start_soon(functools.partial(client.request, "sleep", {}, timeout=600))
            await anyio.sleep(1.0)
            tg.cancel_scope.cancel()
        await anyio.sleep(0.3)
        status = await client.status()
        assert status["counters"]["cancelled"] == 1
        reply = await client.request("sleep", {"seconds": 0.01, "tag": "next"}, timeout=5)
    assert reply["tag"] == "next"


async def test_sub_calls_inherit_the_callers_deadline(procs: Processes) -> None:
    """A call made inside a deadline (as an agent's sub-calls are) ends with it."""
    broker = procs.broker()
    procs.agent(broker.endpoint, "sleep", {"seconds": 600, "credit": 1})
    wait_for_workers(broker.endpoint, "sleep", 1)
    async with fast_client(broker.endpoint, timeout=600) as client:
        with anyio.move_on_after(1.0):
            try:
                await client.request("sleep", {})
            except RequestTimeout as exc:  # the broker's, just before the scope's own end
                assert "did not answer" in str(exc)
        reply = await client.request("sleep", {"seconds": 0.01, "tag": "next"}, timeout=5)
    assert reply["tag"] == "next"


async def test_one_flooding_client_does_not_starve_another(procs: Processes) -> None:
    """Issue point 6: a client's flood is capped by its queue limit (``overloaded``) and
    served in turn with other clients, whose requests all succeed meanwhile."""
    broker = procs.broker()
    procs.agent(broker.endpoint, "sleep", {"seconds": 0.005, "credit": 4})
    wait_for_workers(broker.endpoint, "sleep", 1)
    outcomes: collections.Counter[str] = collections.Counter()
    polite: list[str] = []
    async with fast_client(broker.endpoint, timeout=30) as flood, \
            fast_client(broker.endpoint, timeout=10) as other:
        async def flood_one(i: int) -> None:
            try:
                await flood.request("sleep", {"tag": i})
                outcomes["ok"] += 1
            except RemoteError as exc:
                outcomes[exc.code] += 1

        async with anyio.create_task_group() as tg:
            for i in range(2500):
                tg.start_soon(flood_one, i)
            await anyio.sleep(0.5)
            for i in range(10):
                polite.append((await other.request("sleep", {"tag": f"p{i}"}))["tag"])
            tg.cancel_scope.cancel()
    assert polite == [f"p{i}" for i in range(10)]
    assert outcomes[P.ErrorCode.OVERLOADED] > 0


async def test_oversize_multi_frame_request_gets_too_large(procs: Processes) -> None:
    """Issue point 6: the size is checked frame by frame before reassembly, and the
    sender is told, instead of being left to time out."""
    broker = procs.broker()
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(broker.endpoint)
    half = b"x" * (P.MAX_MESSAGE_BYTES // 2 + 1)
    try:
        sock.send_multipart([P.REQUEST, b"big-one", P.request_meta("echo", 5000), half, half])
        header, key, _, body = sock.recv_multipart()
    finally:
        sock.close()
        context.term()
    code, message = P.parse_error(body)
    assert (header, key, code) == (P.ERROR, b"big-one", P.ErrorCode.TOO_LARGE)
    assert str(P.MAX_MESSAGE_BYTES) in message
    async with fast_client(broker.endpoint) as client:  # the client knows the limit too
        with pytest.raises(RemoteError) as failure:
            await client.request("echo", b"x" * P.MAX_MESSAGE_BYTES)
    assert failure.value.code == P.ErrorCode.TOO_LARGE


async def test_requests_for_a_missing_service_end_at_their_deadline(procs: Processes) -> None:
    """Issue point 6: they are not kept for a worker that appears long after their
    senders left; one that appears later gets none of them."""
    broker = procs.broker()
    async with fast_client(broker.endpoint) as client:
        with pytest.raises(Exception) as failure:
            await client.request("late", {}, timeout=1.0)
        assert "no worker serves 'late'" in str(failure.value)
        procs.agent(broker.endpoint, "echo", {"service": "late"})
        wait_for_workers(broker.endpoint, "late", 1)
        status = await client.status()
    assert status["counters"].get("dispatched", 0) == 0


async def test_an_expired_query_ends_the_orchestrators_sub_calls(procs: Processes) -> None:
    """The orchestrator's calls to agents take the query's deadline: when the query ends,
    so do they, instead of holding the agent for the orchestrator's own call timeout."""
    broker = procs.broker()
    procs.agent(broker.endpoint, "generator",
                {"provider": "sim", "model": "slow", "latency": 600, "credit": 4})
    procs.agent(broker.endpoint, "orchestrator", {"call_timeout_s": 600})
    wait_for_workers(broker.endpoint, "generator@sim:slow", 1)
    wait_for_workers(broker.endpoint, "orchestrator", 1)
    arch = {"name": "slow", "final": "first", "layers": [
        [{"technique": "generator", "provider": "sim", "model": "slow"}]]}
    async with fast_client(broker.endpoint) as client:
        # The sub-call ends first (its deadline is the query's, less a margin), so the
        # orchestrator can still say why; or the query's own deadline ends it.
        with pytest.raises((RequestTimeout, RemoteError)) as failure:
            await client.ask("q", architecture=arch, timeout=2.0)
        assert "did not answer" in str(failure.value)
        with anyio.fail_after(5):
            while True:
                services = (await client.status())["services"]
                if services["generator@sim:slow"]["inflight"] == 0 \
                        and services["orchestrator"]["inflight"] == 0:
                    break
                await anyio.sleep(0.1)
