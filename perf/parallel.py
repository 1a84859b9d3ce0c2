"""How much the orchestrator's parallelism buys, and how throughput scales with replicas.

Architecture: G generator samples -> critic (one call per candidate) -> ranker ->
fuser, on simulated agents whose every call takes L seconds (no jitter). Printed
figures, all measured in this run through a real broker and agent processes:

- latency_s:       one query, every independent call in flight at once (itas)
- critical_path_s: the longest chain of calls the query must wait for: 4 layers x L
- sequential_s:    the same calls one after another, as Archon runs them
- speedup:         sequential_s / latency_s
- scaling:         queries/s with 1, 2, 4, 8 replicas of each technique agent, each replica
                   taking one request at a time (credit 1), so replicas are the unit of capacity
- scaling_efficiency: qps(8) / (8 * qps(1))

Targets: latency_s <= 1.15 x critical_path_s; scaling_efficiency >= 0.8.
Usage: python perf/parallel.py [--json] [--quick] [--samples G] [--latency L]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from itas.agents.pool import PoolEntry, Supervisor
from itas.client import AsyncClient, OnPartial, Reply
from itas.orchestrator.runner import Orchestrator
from itas.spec import Architecture, parse_architecture
from itas.stack import broker_process, service_names, wait_for_services

MODEL = "perf"
KEY = {"id": "perf/1", "answer": "The answer is 42.", "wrong": ["The answer is 41."],
       "difficulty": 0.3}
MESSAGES = [{"role": "user", "content": "What is six times seven?"}]
TECHNIQUES = ("generator", "critic", "ranker", "fuser")


def architecture(samples: int) -> Architecture:
    component = {"provider": "sim", "model": MODEL}
    return parse_architecture({"name": f"g{samples}crf", "layers": [
        [{"technique": "generator", "samples": samples, **component}],
        [{"technique": "critic", **component}],
        [{"technique": "ranker", "top_k": 1, **component}],
        [{"technique": "fuser", **component}],
    ]}, "perf/parallel.py")


def pool(replicas: int, latency: float, credit: int) -> list[PoolEntry]:
    settings = {"provider": "sim", "model": MODEL, "skill": 0.8, "credit": credit,
                "latency": {"mean_s": latency, "jitter_s": 0.0}}
    return [PoolEntry(t, replicas, settings) for t in TECHNIQUES] + [
        PoolEntry("orchestrator", 1, {"credit": 256})]


class OneAtATime:
    """A caller that makes the orchestrator's calls strictly one after another."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.lock = anyio.Lock()

    async def call(self, service: str, body: Any, *, timeout: float | None = None,
                   on_partial: OnPartial | None = None) -> Reply:
        async with self.lock:
            return await self.client.call(service, body, timeout=timeout, on_partial=on_partial)


async def with_pool(entries: Sequence[PoolEntry], work: Any) -> Any:
    async with anyio.create_task_group() as output:
        async with broker_process("tcp://127.0.0.1:0", output) as endpoint:
            supervisor = Supervisor(entries, endpoint)
            async with anyio.create_task_group() as tg:
                await tg.start(supervisor.run)
                await wait_for_services(endpoint, service_names(entries))
                async with AsyncClient(endpoint, timeout=120) as client:
                    result = await work(client)
                tg.cancel_scope.cancel()
        output.cancel_scope.cancel()
    return result


async def measure_latency(arch: Architecture, samples: int, latency: float, repeats: int
                          ) -> dict[str, float]:
    async def work(client: AsyncClient) -> dict[str, float]:
        await client.ask("warm up", architecture=arch, sim=KEY)
        parallel, sequential = [], []
        for _ in range(repeats):
            started = anyio.current_time()
            await client.ask("q", architecture=arch, sim=KEY)
            parallel.append(anyio.current_time() - started)
            started = anyio.current_time()
            await Orchestrator(OneAtATime(client)).run(arch, MESSAGES, sim=KEY)
            sequential.append(anyio.current_time() - started)
        return {"latency_s": statistics.median(parallel),
                "sequential_s": statistics.median(sequential)}

    # Enough credit that all G samples (and critiques) of one query run at once.
    return await with_pool(pool(1, latency, credit=samples), work)


async def measure_throughput(arch: Architecture, replicas: int, latency: float,
                             per_replica: int) -> float:
    """Steady-state queries/s with enough queries in flight to keep every replica busy.

    Completions are timed; those of the fill and drain phases (2 x replicas at each end)
    are left out, and the rate is taken between the first and last of the rest.
    """
    async def work(client: AsyncClient) -> float:
        await client.ask("warm up", architecture=arch, sim=KEY)
        edge = 2 * replicas
        remaining = per_replica * replicas + 2 * edge
        finished: list[float] = []

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await client.ask("q", architecture=arch, sim=KEY)
                finished.append(anyio.current_time())

        async with anyio.create_task_group() as tg:
            for _ in range(4 * replicas):
                tg.start_soon(worker)
        steady = sorted(finished)[edge:-edge]
        return (len(steady) - 1) / (steady[-1] - steady[0])

    return await with_pool(pool(replicas, latency, credit=1), work)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    arch = architecture(args.samples)
    figures = await measure_latency(arch, args.samples, args.latency, args.repeats)
    critical = 4 * args.latency
    scaling = {}
    for replicas in (1, 2, 4, 8):
        scaling[str(replicas)] = round(
            await measure_throughput(arch, replicas, args.latency, args.per_replica), 3)
        if not args.json:
            print(f"{replicas} replica(s): {scaling[str(replicas)]} queries/s", file=sys.stderr)
    return {
        "samples": args.samples,
        "call_latency_s": args.latency,
        "latency_s": round(figures["latency_s"], 4),
        "critical_path_s": round(critical, 4),
        "latency_over_critical_path": round(figures["latency_s"] / critical, 3),
        "sequential_s": round(figures["sequential_s"], 4),
        "speedup": round(figures["sequential_s"] / figures["latency_s"], 2),
        "scaling": scaling,
        "scaling_efficiency": round(scaling["8"] / (8 * scaling["1"]), 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--quick", action="store_true", help="shorter measurements")
    parser.add_argument("--samples", type=int, default=8, help="generator samples G")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per call L")
    args = parser.parse_args()
    args.repeats = 3 if args.quick else 7
    args.per_replica = 3 if args.quick else 8
    result = anyio.run(main, args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
