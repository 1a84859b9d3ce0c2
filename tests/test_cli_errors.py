"""The CLI's error boundary, driven as a user drives it: ``itas ...`` in a subprocess.

Every bad option, endpoint or file ends with exit status 2 and exactly one line on stderr,
``itas: error: ...`` naming the option, never a traceback, never a hang, and before
anything starts (no broker bound, no agent registered).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from itas import validate
from itas.agents.pool import PoolEntry, Supervisor
from itas.client import AsyncClient, Client
from itas.errors import BrokerUnreachable, ConfigError, ServiceUnavailable
from itas.lifecycle import child_environment, itas_command
from itas.security import generate_keys
from tests.helpers import REPO, Processes

pytestmark = pytest.mark.anyio

ITAS = shutil.which("itas", path=str(Path(sys.executable).parent)) or "itas"
HANG_LIMIT_S = 60  # far above any honest answer; a hang fails instead of stalling CI


def itas(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ITAS, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=HANG_LIMIT_S, check=False)


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert len(lines) == 1 and lines[0].startswith("itas: error: "), out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.fixture(scope="module")
def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return int(server.getsockname()[1])


BAD_OPTIONS = [
    (["status", "--broker", "notaurl"], "'--broker'"),
    (["agent", "--kind", "echo", "--broker", "notaurl"], "'--broker'"),  # hung in term()
    (["agent", "--kind", "echo", "--broker", "tcp://127.0.0.1:0"], "port 0 is out of range"),
    (["agent", "--kind", "echo", "--heartbeat", "0"], "'--heartbeat'"),
    (["agent", "--kind", "echo", "--settings", "[1]"], "--settings: expected a JSON object"),
    (["agent", "--kind", "nope"], "unknown agent kind 'nope'"),
    (["broker", "--bind", "tcp://127.0.0.1:99999"], "'--bind': port 99999"),  # bound randomly
    (["broker", "--bind", "udp://127.0.0.1:5"], "'--bind'"),
    (["broker", "--bind", "inproc://x"], "'--bind'"),
    (["broker", "--bind", "ipc:///no/such/dir/sock"], "'--bind'"),
    (["broker", "--liveness", "0"], "'--liveness'"),
    (["broker", "--max-attempts", "-1"], "'--max-attempts'"),
    (["broker", "--heartbeat", "nan"], "'--heartbeat'"),
    (["broker", "--heartbeat", "-1"], "'--heartbeat'"),
    (["broker", "--curve-secret", "/no/such.key_secret"], "'--curve-secret'"),
    (["broker", "--bind", "tcp://0.0.0.0:0"], "--insecure"),
    (["orchestrator", "--credit", "-5"], "'--credit'"),
    (["orchestrator", "--credit", "0"], "'--credit'"),  # never registered
    (["orchestrator", "--credit", "many"], "'--credit'"),
    (["request", "echo", "{bad"], "request body: not valid JSON"),
    (["request", "echo", "--timeout", "0"], "'--timeout'"),
    (["ask", "hi", "--calls", "0"], "'--calls'"),
    (["ask", "hi", "--arch", "no_such_architecture"], "no_such_architecture"),
    (["up", "--bind", "tcp://0.0.0.0:0", "--pool", "sim"], "--insecure"),  # was EndOfStream
    (["up", "--bind", "tcp://127.0.0.1:70000"], "'--bind'"),
    (["up", "--curve-secret", "/etc/hostname"], "CURVE needs both"),
    (["up", "--curve-roles", "/etc/hostname"], "--curve-roles needs CURVE"),
    (["broker", "--curve-roles", "/no/such/roles.yaml"], "'--curve-roles'"),
    (["up", "--curve-secret", "/etc/hostname", "--curve-allow", "/"], "not a CURVE certificate"),
    (["demo", "--bind", "tcp://0.0.0.0:0"], "refusing to bind"),
    (["eval", "--arch", "sim_gcrf", "--benchmark", "gsm8k", "--split", "train"], "'--split'"),
    (["eval", "--arch", "sim_gcrf", "--benchmark", "gsm8k", "--concurrency", "0"],
     "'--concurrency'"),
    (["agents", "--pool", "/no/such/pool.yaml"], "'--pool'"),
    (["model", "serve", "--port", "99999"], "'--port'"),
    (["model", "serve", "--threads", "0"], "'--threads'"),
    (["search", "/no/such/search.yaml"], "no such file"),
    (["check", "no_such_architecture"], "no_such_architecture"),
    (["status", "--no-such-option"], "No such option"),
]


@pytest.mark.parametrize("args,names", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_get_one_line(args: list[str], names: str) -> None:
    assert names in one_error_line(itas(*args))


def test_a_port_in_use(busy_port: int) -> None:
    taken = f"tcp://127.0.0.1:{busy_port}"
    assert "--bind" in (line := one_error_line(itas("broker", "--bind", taken)))
    assert "in use" in line
    line = one_error_line(itas("up", "--pool", "sim", "--bind", taken))
    assert "broker did not start" in line and "in use" in line
    assert "in use" in one_error_line(itas("model", "serve", "--port", str(busy_port)))


def test_no_broker_is_one_line(free_port: int) -> None:
    nobody = f"tcp://127.0.0.1:{free_port}"
    one_error_line(itas("ask", "hi", "--arch", "sim_gcrf", "--broker", nobody, "--timeout", "3"))
    one_error_line(itas("request", "echo", "1", "--broker", nobody, "--timeout", "2"))


def test_ask_without_a_broker_fails_fast_at_its_default_timeout(free_port: int) -> None:
    """No --timeout: the default (600 s) must not be what the user waits; HANG_LIMIT_S fails
    the test long before it."""
    nobody = f"tcp://127.0.0.1:{free_port}"
    line = one_error_line(itas("ask", "hi", "--arch", "sim_gcrf", "--broker", nobody))
    assert f"no broker answered at {nobody}" in line


async def test_the_client_raises_only_itas_errors(procs: Processes) -> None:
    """A malformed endpoint is BrokerUnreachable (was a raw zmq.ZMQError); a query with no
    orchestrator to take it fails at once with ServiceUnavailable, not after its timeout."""
    for endpoint in ("notaurl", "tcp://", "ipc://"):
        with pytest.raises(BrokerUnreachable, match="cannot connect to broker"):
            Client(endpoint)
        with pytest.raises(BrokerUnreachable, match="cannot connect to broker"):
            async with AsyncClient(endpoint):
                pass
    broker = procs.broker()
    async with AsyncClient(broker.endpoint) as client:
        with pytest.raises(ServiceUnavailable, match="no worker serves orchestrator"):
            await client.ask("hi", architecture="configs/architectures/sim_gcrf.yaml",
                             timeout=HANG_LIMIT_S * 10)


def test_a_secret_never_goes_on_a_command_line() -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    line = one_error_line(itas("agent", "--kind", "echo", "--settings",
                               json.dumps({"nested": {"api_key": secret}})))
    assert "nested.api_key looks like a secret" in line and secret not in line


def test_settings_on_stdin_are_logged_redacted(free_port: int) -> None:
    secret = f"tok-{uuid.uuid4().hex}"
    agent = subprocess.Popen([ITAS, "agent", "--kind", "echo", "--settings", "-", "-v",
                              "--broker", f"tcp://127.0.0.1:{free_port}"],
                             stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        assert agent.stdin is not None and agent.stderr is not None
        agent.stdin.write(json.dumps({"service": "echo-x", "auth_token": secret}))
        agent.stdin.close()
        line = ""
        while "settings" not in line:
            line = agent.stderr.readline()
            assert line, "the agent ended without logging its settings"
        assert '"auth_token": "***"' in line and '"service": "echo-x"' in line
        assert secret not in line
    finally:
        os.killpg(agent.pid, signal.SIGTERM)
        agent.wait(timeout=HANG_LIMIT_S)
        if agent.stderr is not None:
            agent.stderr.close()


def test_itas_agents_checks_every_entry_before_starting_any(tmp_path: Path,
                                                            procs: Processes) -> None:
    broker = procs.broker()
    secret = f"sk-{uuid.uuid4().hex}"
    for entry, names in [({"provider": "sim", "model": "m", "temprature": 2}, "temprature"),
                            ({"provider": "openai", "model": "m", "api_key": secret}, "api_key")]:
        pool = tmp_path / "pool.yaml"
        pool.write_text(json.dumps({"agents": [{"kind": "echo", "replicas": 2},
                                               {"kind": "generator", "settings": entry}]}))
        line = one_error_line(itas("agents", "--pool", str(pool), "--broker", broker.endpoint))
        assert f"{pool}: agents[2] (generator)" in line and names in line
        assert secret not in line
    with Client(broker.endpoint) as client:
        assert client.status()["counters"].get("workers_joined", 0) == 0  # nothing started


def _cmdlines() -> str:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return "\n".join(found)


def test_pool_settings_reach_replicas_off_the_command_line(tmp_path: Path,
                                                           procs: Processes) -> None:
    broker = procs.broker()
    service = f"echo-{uuid.uuid4().hex}"
    pool = tmp_path / "pool.yaml"
    pool.write_text(json.dumps({"agents": [{"kind": "echo", "replicas": 2,
                                            "settings": {"service": service}}]}))
    supervisor = procs.spawn("agents", "--pool", str(pool), "--broker", broker.endpoint)
    with Client(broker.endpoint) as client:
        deadline = time.monotonic() + HANG_LIMIT_S
        while client.status()["services"].get(service, {}).get("workers", 0) < 2:
            assert supervisor.poll() is None, supervisor.communicate()
            assert time.monotonic() < deadline, "the replicas never registered"
            time.sleep(0.1)
        assert client.request(service, {"x": 1}) == {"x": 1}
        assert service not in _cmdlines()


async def test_a_replica_failing_on_its_configuration_is_not_restarted(
        capsys: pytest.CaptureFixture[str]) -> None:
    supervisor = Supervisor([PoolEntry("echo", 2)], "tcp://127.0.0.1:9",
                            ["--curve-secret", "/no/such.key_secret", "--curve-server", "/no/x"])
    with pytest.raises(ExceptionGroup) as caught:
        await supervisor.run()
    (error,) = caught.value.exceptions
    assert isinstance(error, ConfigError)
    assert "agent echo #" in str(error) and "'--curve-secret'" in str(error)
    assert supervisor.restarts == 0 and supervisor.processes == {}
    assert "itas: error" not in capsys.readouterr().err  # said once, by the supervisor


async def test_a_crashed_replica_is_restarted_with_its_settings(procs: Processes) -> None:
    broker = procs.broker()
    service = f"echo-{uuid.uuid4().hex}"
    supervisor = Supervisor([PoolEntry("echo", 1, {"service": service})], broker.endpoint)

    async def workers() -> list[dict[str, object]]:
        async with AsyncClient(broker.endpoint) as client:
            return [w for w in (await client.status())["workers"] if w["service"] == service]

    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        with anyio.fail_after(HANG_LIMIT_S):
            while len(before := await workers()) != 1:
                await anyio.sleep(0.1)
            (first,) = supervisor.processes.values()
            first.kill()
            while supervisor.restarts == 0 or [w for w in await workers() if w not in before
                                               ] == []:
                await anyio.sleep(0.1)
        (second,) = supervisor.processes.values()
        assert second.pid != first.pid
        tg.cancel_scope.cancel()
    assert supervisor.processes == {} and second.returncode is not None


# -- children run the parent's code, wherever they are started ----------------------------------

@pytest.fixture
def decoy_checkout(tmp_path: Path) -> Path:
    """A directory that looks like another source checkout: an ``itas/`` that must not load."""
    package = tmp_path / "itas"
    package.mkdir()
    (package / "__init__.py").write_text("raise SystemExit('decoy itas imported')\n")
    (package / "__main__.py").write_text("raise SystemExit('decoy itas imported')\n")
    return tmp_path


def test_children_import_the_parents_code_not_the_current_directory(
        decoy_checkout: Path) -> None:
    naive = subprocess.run([sys.executable, "-m", "itas", "check", "sim_gcrf"], cwd=decoy_checkout,
                           capture_output=True, text=True, timeout=HANG_LIMIT_S, check=False)
    assert "decoy itas imported" in naive.stderr  # what children did before
    child = subprocess.run(itas_command("check", "sim_gcrf"), cwd=decoy_checkout,
                           env=child_environment(), capture_output=True, text=True,
                           timeout=HANG_LIMIT_S, check=False)
    assert child.returncode == 0 and "decoy" not in child.stderr, child.stderr


def _up(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([ITAS, "up", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _until_up(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("itas up: broker"):
        process.kill()
        raise AssertionError(f"itas up did not start: {line!r} {process.communicate()}")
    return line.split()[3].rstrip(";")


def _stop(process: subprocess.Popen[str]) -> None:
    os.killpg(process.pid, signal.SIGINT)
    try:
        out, err = process.communicate(timeout=HANG_LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.returncode == 0 and "itas up: stopped" in out, err
    assert "Traceback" not in err


@pytest.fixture
def tiny_pool(tmp_path: Path) -> Path:
    pool = tmp_path / "tiny.yaml"
    pool.write_text(json.dumps({"agents": [{"kind": "echo", "replicas": 1}]}))
    return pool


def test_itas_up_from_another_checkout(decoy_checkout: Path, tiny_pool: Path) -> None:
    up = _up("--pool", str(tiny_pool), "--bind", "tcp://127.0.0.1:0", cwd=decoy_checkout)
    try:
        broker = _until_up(up)
        with Client(broker) as client:
            assert client.request("echo", [1]) == [1]
    finally:
        _stop(up)


def test_itas_up_insecure_and_with_curve(tmp_path: Path, tiny_pool: Path) -> None:
    up = _up("--pool", str(tiny_pool), "--bind", "tcp://0.0.0.0:0", "--insecure", cwd=tmp_path)
    try:
        _until_up(up)
    finally:
        _stop(up)
    broker_public, broker_secret = generate_keys(tmp_path / "keys", "broker")
    _, client_secret = generate_keys(tmp_path / "keys", "client")
    allow = tmp_path / "allow"
    allow.mkdir()
    shutil.copy(client_secret.with_suffix(".key"), allow)
    up = _up("--pool", str(tiny_pool), "--bind", "tcp://127.0.0.1:0", "--curve-secret",
             str(broker_secret), "--curve-allow", str(allow), cwd=tmp_path)
    try:
        broker = _until_up(up)
        allowed = itas("request", "echo", "[2]", "--broker", broker, "--curve-secret",
                       str(client_secret), "--curve-server", str(broker_public))
        assert allowed.returncode == 0 and json.loads(allowed.stdout) == [2], allowed.stderr
        one_error_line(itas("request", "echo", "[2]", "--broker", broker, "--timeout", "2"))
    finally:
        _stop(up)


# -- the checks themselves, over many inputs ------------------------------------------------------

HOSTS = st.one_of(st.sampled_from(["127.0.0.1", "localhost", "[::1]", "example.org", "10.0.0.7"]),
                  st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5})?", fullmatch=True))


@settings(max_examples=300, deadline=None, database=None)
@given(host=HOSTS, port=st.integers(-10, 70000))
def test_connect_endpoints_follow_the_port_range(host: str, port: int) -> None:
    value = f"tcp://{host}:{port}"
    if 1 <= port <= 65535:
        assert validate.endpoint(value, bind=False) == value
    else:
        with pytest.raises(ConfigError):
            validate.endpoint(value, bind=False)


@settings(max_examples=400, deadline=None, database=None)
@given(value=st.one_of(st.text(max_size=40),
                       st.text(alphabet="tcpi:/[]*.0123456789abz@-_", max_size=30)))
def test_what_the_check_accepts_libzmq_accepts(value: str) -> None:
    """Any string: the check answers or raises ConfigError, nothing else; and an endpoint it
    lets through is one the real libzmq takes (connect is syntax only, it never blocks)."""
    try:
        validate.endpoint(value, bind=False)
    except ConfigError:
        return
    context = zmq.Context.instance()
    dealer = context.socket(zmq.DEALER)
    try:
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.IPV6, 1)
        dealer.connect(value)
    finally:
        dealer.close()


@settings(max_examples=200, deadline=None, database=None)
@given(tree=st.recursive(
    st.one_of(st.text(max_size=8), st.integers()),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["api_key", "API-KEY", "token", "model", "password",
                                         "api_key_env", "base_url", "client_secret"]),
                        children, max_size=4)),
    max_leaves=12))
def test_redaction_leaves_no_secret_value(tree: object) -> None:
    names = validate.secret_names(tree)
    text = json.dumps(validate.redacted(tree))
    assert ("***" in text) == bool(names)
    for key in ("api_key_env", "model", "base_url"):
        assert not any(n.split(".")[-1].split("[")[0] == key for n in names)


def test_a_code_running_agent_checks_its_sandbox_at_start(free_port: int) -> None:
    """A sandbox the agent cannot use is one clear line when it starts (before it ever
    reaches a broker), not an error per request."""
    out = itas("agent", "--kind", "code_tester", "--broker", f"tcp://127.0.0.1:{free_port}",
               env={"ITAS_SANDBOX": "chroot"})
    assert "ITAS_SANDBOX='chroot': expected one of" in one_error_line(out)
