"""Agents on Ray: throughput with 1, 2 and 4 nodes, and the autoscaler's reaction time.

    python perf/cluster.py --json

A local Ray cluster (every process on 127.0.0.1) grows from 1 to 2 to 4 worker
nodes; at each size, ``itas agents --ray`` places one simulated generator per node
(credit 1: one request at a time; a fixed model latency), and a client keeps twice
as many queries in flight as there are agents for a fixed time, through a broker
outside Ray. Scaling efficiency is queries/s at N nodes over N times queries/s at
one node, measured in the same run.

Then, on the 4-node cluster, one autoscaled entry (min 1, max 4) gets a load step;
the figures are the seconds from the step until the first new replica serves a
query and until all four serve.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import yaml

from itas.agents.ray_placement import LOOPBACK_ENV
from itas.client import AsyncClient

REPO = Path(__file__).resolve().parents[1]

NODE = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "object_store_memory": 80 * 1024**2,
        "include_dashboard": False}
SERVICE = "generator@sim:perf"


def pool_file(path: Path, replicas: int, latency: float, autoscale: bool) -> Path:
    entry: dict[str, Any] = {
        "kind": "generator", "replicas": replicas,
        "settings": {"provider": "sim", "model": "perf", "credit": 1,
                     "latency": {"mean_s": latency, "jitter_s": 0.0}},
        "placement": {"num_cpus": 0, "resources": {"itas_slot": 1}, "spread": True},
    }
    if autoscale:
        entry["autoscale"] = {"min": 1, "max": 4, "target_waiting": 0,
                              "scale_down_after_s": 60}
    path.write_text(yaml.safe_dump({"agents": [entry]}))
    return path


RUN = os.urandom(4).hex()  # a query never repeats, so no response cache answers one
_count = itertools.count()


def body() -> dict[str, Any]:
    i = next(_count)
    return {"messages": [{"role": "user", "content": f"[{RUN}] What is {i} + 1?"}],
            "sample_index": i % 1_000_000}


class Run:
    """The broker process and one ``itas agents --ray`` driver at a time."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.broker = subprocess.Popen(
            [sys.executable, "-m", "itas", "broker", "--bind", "tcp://127.0.0.1:0"],
            stdout=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
        assert self.broker.stdout is not None
        match = re.search(r"listening on (\S+)", self.broker.stdout.readline())
        assert match, "the broker did not start"
        self.endpoint = match.group(1)
        self.driver: subprocess.Popen[bytes] | None = None

    def start_agents(self, pool: Path, *extra: str) -> None:
        self.driver = subprocess.Popen(
            [sys.executable, "-m", "itas", "agents", "--ray", self.address, "--pool", str(pool),
             "--broker", self.endpoint, *extra], cwd=REPO, start_new_session=True,
            stdout=subprocess.DEVNULL)

    async def wait_workers(self, client: AsyncClient, count: int, timeout: float = 90
                           ) -> None:
        with anyio.fail_after(timeout):
            while (await client.status())["services"].get(SERVICE, {}).get("workers", 0) != count:
                await anyio.sleep(0.1)

    def stop_agents(self) -> None:
        if self.driver is not None:
            os.killpg(self.driver.pid, signal.SIGTERM)
            self.driver.wait(timeout=60)
            self.driver = None

    def close(self) -> None:
        self.stop_agents()
        os.killpg(self.broker.pid, signal.SIGTERM)
        self.broker.wait(timeout=10)


async def throughput(client: AsyncClient, agents: int, seconds: float) -> float:
    done = 0
    stop_at = anyio.current_time() + seconds

    async def loop() -> None:
        nonlocal done
        while anyio.current_time() < stop_at:
            await client.request(SERVICE, body())
            done += 1

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for _ in range(2 * agents):
            tg.start_soon(loop)
    return done / (anyio.current_time() - start)


async def autoscale_step(run: Run, client: AsyncClient) -> dict[str, float]:
    """Load step on one replica of min 1, max 4: time until new replicas serve."""
    served_by: dict[str, float] = {}
    start = anyio.current_time()

    async def load() -> None:
        while len(served_by) < 4 and anyio.current_time() - start < 90:
            await client.request(SERVICE, body())

    async def watch() -> None:
        while len(served_by) < 4 and anyio.current_time() - start < 90:
            for w in (await client.status())["workers"]:
                if w["service"] == SERVICE and w["inflight"] and w["name"] not in served_by:
                    served_by[w["name"]] = anyio.current_time() - start
            await anyio.sleep(0.05)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        for _ in range(16):
            tg.start_soon(load)
    times = sorted(served_by.values())
    return {"first_new_replica_serving_s": round(times[1], 2) if len(times) > 1 else -1,
            "all_four_serving_s": round(times[3], 2) if len(times) > 3 else -1}


async def measure(latency: float, seconds: float) -> dict[str, Any]:
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    ray_constants.ENABLE_RAY_CLUSTER = False  # every Ray process on 127.0.0.1
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "num_cpus": 0})
    run = Run(cluster.address)
    result: dict[str, Any] = {"latency_s": latency, "seconds_per_size": seconds, "sizes": {}}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with AsyncClient(run.endpoint, timeout=60) as client:
                nodes = 0
                for size in (1, 2, 4):
                    while nodes < size:
                        cluster.add_node(**NODE, resources={"itas_slot": 1})
                        nodes += 1
                    cluster.wait_for_nodes()
                    run.start_agents(pool_file(Path(tmp) / f"pool{size}.yaml", size, latency,
                                               autoscale=False))
                    await run.wait_workers(client, size)
                    await throughput(client, size, 1.0)  # warm-up
                    qps = await throughput(client, size, seconds)
                    result["sizes"][str(size)] = {"queries_per_s": round(qps, 2)}
                    run.stop_agents()
                    await run.wait_workers(client, 0)
                one = result["sizes"]["1"]["queries_per_s"]
                for size, figures in result["sizes"].items():
                    figures["scaling_efficiency"] = round(
                        figures["queries_per_s"] / (int(size) * one), 3)
                result["ideal_queries_per_s_per_agent"] = round(1 / latency, 2)
                run.start_agents(pool_file(Path(tmp) / "auto.yaml", 1, latency, autoscale=True),
                                 "--autoscale-interval", "0.5")
                await run.wait_workers(client, 1)
                result["autoscale"] = await autoscale_step(run, client)
    finally:
        run.close()
        cluster.shutdown()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--latency", type=float, default=0.2, help="model latency, seconds")
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per size")
    args = parser.parse_args()
    os.environ[LOOPBACK_ENV] = "0"  # the Ray nodes and the itas driver inherit it
    result = anyio.run(measure, args.latency, args.seconds)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for size, figures in result["sizes"].items():
            print(f"{size} node(s): {figures['queries_per_s']} queries/s, "
                  f"efficiency {figures['scaling_efficiency']}")
        print(f"autoscale: {result['autoscale']}")


if __name__ == "__main__":
    main()
