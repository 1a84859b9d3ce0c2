"""A poison query (a spec far over the call bound, sent raw so no client-side check stops it)
fails once, with a clear error, from the one orchestrator that took it: that orchestrator
keeps heartbeating while it validates, so the broker never drops it and never hands the same
query to the next orchestrator (which used to take every orchestrator down in turn).

Real processes, fast heartbeats (0.2 s x 3): validating the spec below takes longer than
that, so an orchestrator that validated on its event loop would be dropped here.
"""

from __future__ import annotations

import anyio
import pytest

from itas.client import AsyncClient
from itas.errors import RemoteError
from tests.helpers import FAST_HEARTBEAT, Processes, wait_for_workers

pytestmark = pytest.mark.anyio

ORCHESTRATORS = 2
POISON_QUERIES = 3

# 64 generators of 1024 samples each: far over the bound (20,000 calls), and slow to plan.
POISON = {"name": "poison", "final": "first", "layers": [
    [{"technique": "generator", "provider": "sim", "model": f"m{j}", "samples": 1024}
     for j in range(64)],
    [{"technique": "critic", "provider": "sim", "model": f"m{j}"} for j in range(64)]]}


async def test_a_poison_query_fails_once_and_no_orchestrator_is_lost(procs: Processes) -> None:
    broker = procs.broker()
    for _ in range(ORCHESTRATORS):
        procs.agent(broker.endpoint, "orchestrator")
    wait_for_workers(broker.endpoint, "orchestrator", ORCHESTRATORS)
    body = {"messages": [{"role": "user", "content": "q"}], "architecture": POISON}
    async with AsyncClient(broker.endpoint, heartbeat_interval=FAST_HEARTBEAT,
                           timeout=120) as client:
        before = (await client.status())["counters"]
        errors: list[RemoteError] = []

        async def send() -> None:
            with pytest.raises(RemoteError) as failure:
                await client.request("orchestrator", body)
            errors.append(failure.value)

        async with anyio.create_task_group() as tg:
            for _ in range(POISON_QUERIES):
                tg.start_soon(send)
        status = await client.status()
    for error in errors:
        assert error.code == "bad_request", error
        assert "reaches 196608 LLM calls" in error.message and "at most 20000" in error.message
    counters = status["counters"]
    assert counters.get("workers_lost", 0) == before.get("workers_lost", 0), counters
    assert counters["dispatched"] - before.get("dispatched", 0) == POISON_QUERIES  # each once
    assert status["services"]["orchestrator"]["workers"] == ORCHESTRATORS
