"""A second host: agents in their own network namespace serve through the broker over TCP.

The test makes a network namespace joined to this one by a veth pair on a private
/30 (10.231.N.0/30, used only between this test's two namespaces), so the agents
reach the broker the way a second machine would: over a real interface, with
CURVE. Only keys on the broker's allow-list get service. It needs root and a
kernel that allows network namespaces; otherwise it skips and says which.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from itas.client import AsyncClient
from itas.errors import ServiceUnavailable
from itas.security import CurveKeys
from tests.helpers import FAST_HEARTBEAT, REPO, Processes, wait_for_workers

pytestmark = pytest.mark.anyio

SUBNET_PREFIX = "10.231"
IP_TIMEOUT_S = 10.0
KEYS = ("broker", "client", "agent", "intruder")
ALLOWED = ("client", "agent")
ROGUE_GRACE_S = 1.5  # how long the rogue agent gets to (fail to) register


@dataclass(frozen=True)
class Namespace:
    name: str
    host_address: str  # this namespace's end of the veth: the broker binds here
    peer_address: str  # the agents' end, inside the namespace


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False,
                            timeout=IP_TIMEOUT_S)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _free_subnet() -> str:
    """A 10.231.N prefix no interface here uses yet (another run may hold one)."""
    used = _ip("-4", "-o", "addr", "show").stdout
    start = os.getpid() % 250
    for i in range(250):
        prefix = f"{SUBNET_PREFIX}.{(start + i) % 250 + 1}"
        if f" {prefix}." not in used:
            return prefix
    pytest.fail(f"no free /30 left in {SUBNET_PREFIX}.0.0/16")


@pytest.fixture
def netns() -> Iterator[Namespace]:
    """A namespace joined to this one by a veth pair; gone afterwards, whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace (ip netns add)")
    if shutil.which("ip") is None:
        pytest.skip("needs the `ip` command: Debian package iproute2")
    token = secrets.token_hex(3)
    name, host_if, peer_if = f"itas-test-{token}", f"itas{token}h", f"itas{token}p"
    added = _ip("netns", "add", name, check=False)
    if added.returncode != 0:
        pytest.skip(f"the kernel forbids network namespaces here: {added.stderr.strip()}")
    try:
        veth = _ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if,
                   "netns", name, check=False)
        if veth.returncode != 0:
            pytest.skip(f"the kernel forbids veth pairs here: {veth.stderr.strip()}")
        prefix = _free_subnet()
        space = Namespace(name, f"{prefix}.1", f"{prefix}.2")
        _ip("addr", "add", f"{space.host_address}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", name, "addr", "add", f"{space.peer_address}/30", "dev", peer_if)
        _ip("-n", name, "link", "set", peer_if, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield space
    finally:
        # A namespace lives on while a process is inside it: end those first.
        for pid in _ip("netns", "pids", name, check=False).stdout.split():
            subprocess.run(["kill", "-KILL", pid], capture_output=True, check=False)
        _ip("netns", "del", name, check=False)  # takes the veth pair with it
        _ip("link", "del", host_if, check=False)  # in case the pair never moved


@pytest.fixture
def keys(tmp_path: Path, procs: Processes) -> tuple[dict[str, tuple[Path, Path]], Path]:
    """Key pairs made by `itas keys generate`; the allow-list holds the client's and agent's."""
    key_dir, allow = tmp_path / "keys", tmp_path / "allow"
    allow.mkdir()
    makers = [procs.spawn("keys", "generate", str(key_dir), "--name", name) for name in KEYS]
    for maker in makers:
        assert maker.wait(timeout=30) == 0, maker.stderr.read() if maker.stderr else ""
    made = {name: (key_dir / f"{name}.key", key_dir / f"{name}.key_secret") for name in KEYS}
    for name in ALLOWED:
        shutil.copy(made[name][0], allow)
    return made, allow


def agent_in(space: Namespace, procs: Processes, broker: str, name: str, kind: str,
             settings: str, secret: Path, server_public: Path) -> subprocess.Popen[str]:
    """An agent process inside the namespace; ``procs`` stops it at teardown."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", space.name, sys.executable, "-m", "itas", "agent",
         "--kind", kind, "--broker", broker, "--name", name, "--settings", settings,
         "--heartbeat", str(FAST_HEARTBEAT),
         "--curve-secret", str(secret), "--curve-server", str(server_public)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, cwd=REPO,
    )
    procs.started.append(proc)
    return proc


async def test_agents_in_another_namespace_serve_over_curve(
        netns: Namespace, procs: Processes, keys: tuple[dict[str, tuple[Path, Path]], Path]
) -> None:
    made, allow = keys
    broker_public, broker_secret = made["broker"]
    broker = procs.broker(f"tcp://{netns.host_address}:0", "--curve-secret", str(broker_secret),
                          "--curve-allow", str(allow))
    assert broker.endpoint.startswith(f"tcp://{netns.host_address}:")
    agent = agent_in(netns, procs, broker.endpoint, "netns-agent", "sleep",
                     '{"service": "remote", "seconds": 0.01, "credit": 4}', made["agent"][1],
                     broker_public)
    rogue = agent_in(netns, procs, broker.endpoint, "netns-rogue", "echo",
                     '{"service": "rogue"}', made["intruder"][1], broker_public)
    client_keys = CurveKeys.load(made["client"][1], broker_public)

    wait_for_workers(broker.endpoint, "remote", 1, curve=client_keys)
    await anyio.sleep(ROGUE_GRACE_S)
    async with AsyncClient(broker.endpoint, curve=client_keys,
                           heartbeat_interval=FAST_HEARTBEAT) as client:
        replies = []

        async def ask(tag: int) -> None:
            replies.append(await client.request("remote", {"tag": tag}, timeout=10))

        async with anyio.create_task_group() as tg:
            for tag in range(8):
                tg.start_soon(ask, tag)
        status = await client.status()
        with pytest.raises(ServiceUnavailable):
            await client.request("rogue", {"x": 1}, timeout=1.0)

    inside = set(_ip("netns", "pids", netns.name).stdout.split())
    assert sorted(r["tag"] for r in replies) == list(range(8))
    assert {r["pid"] for r in replies} == {agent.pid}  # served from inside the namespace
    assert str(agent.pid) in inside
    assert [(w["name"], w["service"]) for w in status["workers"]] == [("netns-agent", "remote")]
    assert "rogue" not in status["services"]
    # A key the broker does not admit stops the agent at once, with one line saying so
    # (not a retry loop that looks like a slow start).
    _, err = rogue.communicate(timeout=30)
    assert rogue.returncode != 0 and "Traceback" not in err, err


def test_broker_refuses_the_veth_address_without_keys(netns: Namespace,
                                                      procs: Processes) -> None:
    endpoint = f"tcp://{netns.host_address}:0"
    refused = procs.spawn("broker", "--bind", endpoint)
    assert refused.wait(timeout=30) == 2
    assert refused.stderr is not None
    assert f"refusing to bind {endpoint} without CURVE keys" in refused.stderr.read()

    insecure = procs.broker(endpoint, "--insecure")
    assert re.fullmatch(rf"tcp://{re.escape(netns.host_address)}:\d+", insecure.endpoint)
    assert insecure.proc.poll() is None
