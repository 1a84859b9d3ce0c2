"""What the OpenAI-compatible gateway costs, and what streaming buys.

All through a real broker, sim agent processes, an orchestrator and an ``itas gateway``
process, measured in this run:

- direct:   queries/s and p50/p99 latency of ``AsyncClient.ask`` at concurrency C, for a
            one-call architecture whose call takes 20 ms (cpu_bound: the 2 cores are the
            limit, so every process's CPU per query counts) and 200 ms (call_bound: the
            calls are the limit, as with real LLMs)
- gateway:  the same architecture, the same concurrency, as HTTP POSTs to
            /v1/chat/completions (one keep-alive connection per task; a minimal client)
- ratio_qps, p50_overhead_ms: gateway against direct
- streaming: generate -> fuse with the fuser's call taking F seconds (word by word):
            time to the first content chunk vs time to the whole answer, streamed and not

Targets (issue 11): ratio_qps >= 0.8, p50_overhead_ms <= 10; ttft well below the answer's
time (the first token as the last layer starts). The load client runs in this process and
competes for the same cores as the mesh, for both paths alike.
Usage: python perf/gateway.py [--json] [--quick] [--concurrency C] [--fuser-latency F]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import httpx
import yaml

from itas.agents.pool import PoolEntry, Supervisor, service_names
from itas.client import AsyncClient
from itas.lifecycle import child_environment, itas_command
from itas.stack import broker_process, wait_for_services

#: Seconds per sim call: short enough that the 2-core machine is the limit (CPU-bound: every
#: process's CPU per query counts, the gateway's too), and long enough to be an LLM's.
CALL_LATENCIES_S = {"cpu_bound": 0.02, "call_bound": 0.2}
SINGLES = {name: {"name": f"perf_{name}", "layers": [[
    {"technique": "generator", "provider": "sim", "model": name}]]} for name in CALL_LATENCIES_S}
STREAM = {"name": "perf_stream", "layers": [
    [{"technique": "generator", "provider": "sim", "model": "cpu_bound", "samples": 2}],
    [{"technique": "fuser", "provider": "sim", "model": "slowfuser"}]]}
MESSAGES = [{"role": "user", "content": "What is 6 x 7?"}]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def load(one: Any, queries: int, concurrency: int) -> dict[str, float]:
    """Run ``queries`` calls of ``one()`` with ``concurrency`` in flight; qps and latency."""
    latencies: list[float] = []
    todo = iter(range(queries))

    async def worker() -> None:
        for _ in todo:
            started = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    elapsed = time.perf_counter() - started
    return {"qps": round(queries / elapsed, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2)}


class RawHTTP:
    """A minimal keep-alive HTTP/1.1 client for JSON POSTs: as lean as ``AsyncClient`` on the
    direct path, so the comparison measures the gateway, not the load client (httpx spends
    about a millisecond of CPU per request, on the same two cores as the mesh)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: anyio.abc.SocketStream | None = None
        self.buffer = b""

    async def post(self, path: str, body: dict[str, Any]) -> bytes:
        try:
            return await self._post(path, body)
        except anyio.EndOfStream:  # the server closed an idle keep-alive connection
            await self.aclose()
            return await self._post(path, body)

    async def _post(self, path: str, body: dict[str, Any]) -> bytes:
        if self.stream is None:
            self.stream = await anyio.connect_tcp(self.host, self.port)
            self.buffer = b""
        data = json.dumps(body).encode()
        await self.stream.send(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                               f"Content-Type: application/json\r\n"
                               f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += await self.stream.receive()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        match = re.search(rb"(?i)content-length: *(\d+)", head)
        if match is None:
            raise RuntimeError(f"no Content-Length in {head[:300]!r}")
        length = int(match.group(1))
        while len(self.buffer) < length:
            self.buffer += await self.stream.receive()
        reply, self.buffer = self.buffer[:length], self.buffer[length:]
        if status != 200:
            raise RuntimeError(f"gateway answered {status}: {reply[:300]!r}")
        return reply

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None


def start_gateway(broker: str, models: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(itas_command("gateway", "--broker", broker, "--port", "0",
                                         "--models", str(models)),
                            stdout=subprocess.PIPE, env=child_environment(),
                            start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(rb"listening on (http://\S+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"the gateway did not start: {line!r}")
    return proc, match.group(1).decode()


async def measure(args: argparse.Namespace, broker: str, url: str) -> dict[str, Any]:
    result: dict[str, Any] = {"concurrency": args.concurrency}
    async with AsyncClient(broker, timeout=120) as client, httpx.AsyncClient(
            base_url=url, timeout=120) as http:
        for name, latency in CALL_LATENCIES_S.items():
            queries = (200 if args.quick else 1000) if latency < 0.1 else (
                100 if args.quick else 400)
            result[name] = {"call_latency_s": latency, "queries": queries,
                            **await compare(args, client, url, SINGLES[name], queries)}
        result["streaming"] = await streaming(http, 3 if args.quick else 8,
                                              args.fuser_latency)
    return result


async def compare(args: argparse.Namespace, client: AsyncClient, url: str,
                  arch: dict[str, Any], queries: int) -> dict[str, Any]:
    """Direct and through the gateway, interleaved rounds of the same load."""
    result: dict[str, Any] = {}

    async def direct() -> None:
        await client.ask(MESSAGES, architecture=arch)

    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    connections = [RawHTTP(host, int(port)) for _ in range(args.concurrency)]
    free = list(connections)

    async def via_gateway() -> None:
        connection = free.pop()
        try:
            await connection.post("/v1/chat/completions",
                                  {"model": arch["name"], "messages": MESSAGES})
        finally:
            free.append(connection)

    for one in (direct, via_gateway):  # warm both paths
        await load(one, 2 * args.concurrency, args.concurrency)
    rounds: dict[str, list[dict[str, float]]] = {"direct": [], "gateway": []}
    for _ in range(1 if args.quick else 2):  # interleaved, so drift hits both alike
        rounds["direct"].append(await load(direct, queries, args.concurrency))
        rounds["gateway"].append(await load(via_gateway, queries, args.concurrency))
    for name, runs in rounds.items():
        result[name] = {k: round(statistics.median(r[k] for r in runs), 2)
                        for k in runs[0]}
    result["ratio_qps"] = round(result["gateway"]["qps"] / result["direct"]["qps"], 3)
    result["p50_overhead_ms"] = round(result["gateway"]["p50_ms"]
                                      - result["direct"]["p50_ms"], 2)
    for connection in connections:
        await connection.aclose()
    return result


async def streaming(http: httpx.AsyncClient, repeats: int, fuser_latency: float
                    ) -> dict[str, float]:
    ttft, streamed_total, plain_total = [], [], []
    body = {"model": "perf_stream", "messages": MESSAGES}
    for _ in range(repeats):
        started = time.perf_counter()
        first = None
        async with http.stream("POST", "/chat/completions",
                               json={**body, "stream": True}) as response:
            async for line in response.aiter_lines():
                if first is None and line.startswith("data: {") and '"content":"' in line \
                        and '"content":""' not in line:
                    first = time.perf_counter() - started
        streamed_total.append(time.perf_counter() - started)
        ttft.append(first if first is not None else float("nan"))
        started = time.perf_counter()
        (await http.post("/chat/completions", json=body)).raise_for_status()
        plain_total.append(time.perf_counter() - started)
    return {"fuser_latency_s": fuser_latency,
            "ttft_s": round(statistics.median(ttft), 3),
            "streamed_answer_s": round(statistics.median(streamed_total), 3),
            "unstreamed_answer_s": round(statistics.median(plain_total), 3),
            "ttft_over_answer": round(statistics.median(ttft)
                                      / statistics.median(plain_total), 3)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    entries = [
        *(PoolEntry("generator", 1, {"provider": "sim", "model": name, "latency": latency,
                                     "credit": 64}) for name, latency in CALL_LATENCIES_S.items()),
        PoolEntry("fuser", 1, {"provider": "sim", "model": "slowfuser",
                               "latency": args.fuser_latency}),
        PoolEntry("orchestrator", 1, {"credit": 128}),
    ]
    with tempfile.TemporaryDirectory(prefix="itas-perf-gateway-") as tmp:
        models = Path(tmp)
        for spec in (*SINGLES.values(), STREAM):
            (models / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
        async with anyio.create_task_group() as output:
            async with broker_process("tcp://127.0.0.1:0", output) as broker:
                supervisor = Supervisor(entries, broker)
                async with anyio.create_task_group() as tg:
                    await tg.start(supervisor.run)
                    await wait_for_services(broker, service_names(entries))
                    gateway, url = await anyio.to_thread.run_sync(start_gateway, broker, models)
                    try:
                        result = await measure(args, broker, f"{url}")
                    finally:
                        gateway.terminate()
                        gateway.wait(timeout=10)
                    tg.cancel_scope.cancel()
            output.cancel_scope.cancel()
    result["cpus"] = os.cpu_count()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--quick", action="store_true", help="shorter measurements")
    parser.add_argument("--concurrency", type=int, default=16, help="queries in flight C")
    parser.add_argument("--fuser-latency", type=float, default=0.5,
                        help="seconds the streaming fuser's call takes F")
    args = parser.parse_args()
    out = anyio.run(main, args)
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    sys.exit(0)
