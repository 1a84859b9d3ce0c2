"""CURVE on: only keys on the broker's allow-list get service."""

from __future__ import annotations

import shutil
import stat

import anyio
import anyio.lowlevel
import pytest

from itas.client import AsyncClient
from itas.errors import AuthenticationError, ConfigError
from itas.security import CurveKeys, check_bind, generate_keys
from tests.helpers import FAST_HEARTBEAT, Processes, wait_for_workers

pytestmark = pytest.mark.anyio


@pytest.fixture
def keys(tmp_path):
    made = {name: generate_keys(tmp_path / "keys", name) for name in
            ("broker", "client", "agent", "intruder")}
    allow = tmp_path / "allow"
    allow.mkdir()
    for name in ("client", "agent"):
        shutil.copy(made[name][0], allow)
    return made, allow


def test_secret_key_file_is_private(keys) -> None:
    made, _ = keys
    assert stat.S_IMODE(made["client"][1].stat().st_mode) == 0o600


async def test_only_allowed_keys_get_service(procs: Processes, keys) -> None:
    made, allow = keys
    broker_public, broker_secret = made["broker"]
    broker = procs.broker("tcp://127.0.0.1:0", "--curve-secret", str(broker_secret),
                          "--curve-allow", str(allow))
    procs.agent(broker.endpoint, "echo", {"service": "trusted"},
                "--curve-secret", str(made["agent"][1]), "--curve-server", str(broker_public))
    procs.agent(broker.endpoint, "echo", {"service": "rogue"},
                "--curve-secret", str(made["intruder"][1]), "--curve-server", str(broker_public))
    client_keys = CurveKeys.load(made["client"][1], broker_public)
    intruder_keys = CurveKeys.load(made["intruder"][1], broker_public)
    info = wait_for_workers(broker.endpoint, "trusted", 1, curve=client_keys)
    await anyio.sleep(1.0)  # give the rogue agent every chance to register
    async with AsyncClient(broker.endpoint, curve=client_keys,
                           heartbeat_interval=FAST_HEARTBEAT) as client:
        assert await client.request("trusted", {"x": 1}) == {"x": 1}
        info = await client.status()
    assert "rogue" not in info["services"]
    async with AsyncClient(broker.endpoint, curve=intruder_keys,
                           heartbeat_interval=FAST_HEARTBEAT) as intruder:
        with pytest.raises(AuthenticationError, match="refused CURVE key"):  # not a timeout
            await intruder.request("trusted", {"x": 1}, timeout=30)
    async with AsyncClient(broker.endpoint, heartbeat_interval=FAST_HEARTBEAT) as plain:
        with pytest.raises(AuthenticationError, match="requires CURVE|require CURVE keys"):
            await plain.request("trusted", {"x": 1}, timeout=30)
    await anyio.lowlevel.checkpoint()


def test_binding_beyond_loopback_needs_keys_or_insecure() -> None:
    with pytest.raises(ConfigError, match="refusing to bind tcp://0.0.0.0:5555"):
        check_bind("tcp://0.0.0.0:5555", curve=False, insecure=False)
    check_bind("tcp://0.0.0.0:5555", curve=True, insecure=False)
    check_bind("tcp://0.0.0.0:5555", curve=False, insecure=True)
    check_bind("tcp://127.0.0.1:5555", curve=False, insecure=False)
    check_bind("ipc:///tmp/itas.sock", curve=False, insecure=False)


def test_broker_cli_refuses_an_open_bind(procs: Processes) -> None:
    proc = procs.spawn("broker", "--bind", "tcp://0.0.0.0:0")
    assert proc.wait(timeout=20) == 2
    assert "refusing to bind" in proc.stderr.read()
