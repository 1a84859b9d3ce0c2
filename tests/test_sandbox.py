"""The code sandbox: real subprocesses running hostile code, checked from outside afterwards.

Every hostile program runs in each namespaced tier this machine has (``bwrap`` and
``unshare``; a tier the kernel forbids is skipped with the probe's reason). As root the
whole file runs a second time as an unprivileged user (the usual deployment), through
``test_the_suite_holds_as_an_unprivileged_user``.
"""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from itas.client import Client
from itas.errors import ConfigError
from itas.execution import harness
from itas.execution.sandbox import (
    ETC_ENTRIES,
    OUTPUT_TAIL_BYTES,
    SANDBOX_ENV,
    TMP_SPACE_MB,
    SandboxResult,
    Status,
    run_tests,
    run_tests_sync,
)
from tests.helpers import REPO, Processes

pytestmark = pytest.mark.anyio

AS_ROOT = os.geteuid() == 0
NAMESPACED_TIERS = ("bwrap", "unshare")
TEST_USER = "itas-sandbox-test"
MB = 1024 * 1024

# Helpers the hostile programs share: a test passes when the attempt was stopped.
BLOCKED = textwrap.dedent("""
    import errno, os, socket, sys
    def blocked(attempt):
        try:
            attempt()
        except OSError as exc:
            return exc.errno
        raise AssertionError('not blocked')
""")


def _marker() -> str:
    """A unique argument for ``sleep`` (a number, so sleep accepts it), found in /proc."""
    return f"{random.randrange(10**6, 10**7)}.{random.randrange(1, 10**6)}"


def _processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


async def _gone(marker: str) -> None:
    """After a kill the kernel reaps a namespace's processes asynchronously; wait for it."""
    with anyio.fail_after(10):
        while _processes_with(marker):
            await anyio.sleep(0.05)


def _failures(result: SandboxResult) -> list[tuple[str, str | None]]:
    return [(t.source, t.error) for t in result.tests if not t.passed]


def _tier_or_skip(tier: str) -> None:
    try:
        run_tests_sync("", [], timeout_s=30)
    except ConfigError as exc:
        pytest.skip(f"tier {tier} does not work here: {exc}")


@pytest.fixture(params=NAMESPACED_TIERS)
def tier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(SANDBOX_ENV, request.param)
    _tier_or_skip(request.param)
    return str(request.param)


# -- what every tier does ------------------------------------------------------------------------

async def test_each_assert_reported_separately(tier: str) -> None:
    code = "def add(a, b):\n    return a + b\n"
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 5", "assert add(-1, 1) == 0"]
    result = await run_tests(code, tests, timeout_s=10)
    assert result.status is Status.FAILED
    assert [t.passed for t in result.tests] == [True, False, True]
    assert result.tests[1].error == "AssertionError"
    assert result.tests[1].source == tests[1]
    assert (result.passed, result.total) == (2, 3)
    assert {tier, "pidns", "netns", "mountns", "seccomp", "private_tmp"} <= result.isolation


async def test_all_passing_and_check_harness() -> None:
    code = "def add(a, b):\n    return a + b\n"
    check = (
        "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(0, 0) == 0\n"
    )
    result = await run_tests(code, check, entry_point="add", timeout_s=10)
    assert result.status is Status.PASSED and result.all_passed
    missing = await run_tests(code, check, entry_point="mul", timeout_s=10)
    assert missing.status is Status.FAILED
    assert "entry point 'mul' is not defined" in (missing.tests[0].error or "")


async def test_code_that_does_not_load() -> None:
    result = await run_tests("def broken(:\n    pass\n", ["assert True"], timeout_s=10)
    assert result.status is Status.FAILED
    assert result.load_error is not None and result.load_error.startswith("SyntaxError")
    assert "failed to load" in (result.tests[0].error or "")


async def test_infinite_loop_times_out_and_keeps_finished_tests(tier: str) -> None:
    code = "def spin():\n    while True:\n        pass\n"
    result = await run_tests(code, ["assert 1 + 1 == 2", "spin()"], timeout_s=1.0)
    assert result.status is Status.TIMEOUT
    assert result.tests[0].passed
    assert not result.tests[1].passed and "timeout" in (result.tests[1].error or "")


async def test_memory_hog_hits_the_limit(tier: str) -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 1024 * 1024))\n"
    result = await run_tests(code, ["assert True"], timeout_s=10, memory_mb=128)
    assert result.status is Status.MEMORY
    assert "memory" in result.isolation


async def test_os_exit_and_segfault_are_crashes(tier: str) -> None:
    exited = await run_tests("import os\nos._exit(3)\n", ["assert True"], timeout_s=10)
    assert exited.status is Status.CRASHED
    segv = await run_tests("import ctypes\nctypes.string_at(0)\n", ["assert True"], timeout_s=10)
    assert segv.status is Status.CRASHED


async def test_huge_output_is_truncated() -> None:
    code = "import sys\nfor _ in range(2000):\n    sys.stdout.write('x' * 10000 + '\\n')\n"
    result = await run_tests(code + "print('END')\n", ["assert True"], timeout_s=10)
    assert result.status is Status.PASSED
    assert result.output_truncated
    assert len(result.stdout_tail.encode()) <= OUTPUT_TAIL_BYTES
    assert result.stdout_tail.rstrip().endswith("END")


async def test_private_empty_work_dir_and_minimal_env(tier: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITAS_TEST_SECRET", "do-not-leak")
    tests = [
        "assert os.getcwd() == '/tmp' and os.listdir('.') == [], os.listdir('.')",
        "assert 'ITAS_TEST_SECRET' not in os.environ",
        "assert set(os.environ) <= {'PATH', 'LANG', 'HOME', 'TMPDIR', 'LC_CTYPE', 'PWD'}, set(os.environ)",
        "assert os.environ['HOME'] == '/tmp'",
        "open('scratch.txt', 'w').write('ok')",
        "import asyncio; asyncio.run(asyncio.sleep(0))",  # socketpair stays allowed
        "import threading; t = threading.Thread(target=print); t.start(); t.join()",
        "import subprocess; assert subprocess.run(['true']).returncode == 0",
    ]
    result = await run_tests("import os\n", tests, timeout_s=10)
    assert result.status is Status.PASSED, _failures(result)


async def test_bad_limits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="timeout_s"):
        await run_tests("", [], timeout_s=0)
    with pytest.raises(ConfigError, match="memory_mb"):
        await run_tests("", [], memory_mb=1)
    with pytest.raises(ConfigError, match="max_processes"):
        await run_tests("", [], max_processes=0)


async def test_bad_tier_setting_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SANDBOX_ENV, "chroot")
    with pytest.raises(ConfigError, match=f"{SANDBOX_ENV}='chroot'.*auto, bwrap, unshare"):
        await run_tests("", [])


def test_sync_convenience() -> None:
    result = run_tests_sync("x = 2\n", ["assert x == 2"], timeout_s=10)
    assert result.status is Status.PASSED


# -- hostile programs, checked from outside --------------------------------------------------------

@pytest.fixture
def secret_holder() -> Iterator[tuple[int, str]]:
    """A process of this user whose environment holds an API key, like an agent's."""
    secret = f"sk-test-{uuid.uuid4().hex}"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                              env={**os.environ, "ITAS_TEST_API_KEY": secret})
    try:
        environ = Path(f"/proc/{holder.pid}/environ")
        deadline = time.monotonic() + 10
        while secret.encode() not in environ.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert secret.encode() in environ.read_bytes(), "the holder must really hold it"
        yield holder.pid, secret
    finally:
        holder.kill()
        holder.wait()


async def test_cannot_read_the_environment_of_other_processes(
        tier: str, secret_holder: tuple[int, str], monkeypatch: pytest.MonkeyPatch) -> None:
    pid, secret = secret_holder
    monkeypatch.setenv("ITAS_TEST_API_KEY", secret)
    code = BLOCKED + textwrap.dedent(f"""
        def leaks():
            found = []
            for name in os.listdir('/proc'):
                try:
                    data = open('/proc/' + name + '/environ', 'rb').read()
                except OSError:
                    continue
                if {secret!r}.encode() in data:
                    found.append(name)
            return found
    """)
    tests = [
        "assert leaks() == []",
        f"assert {secret!r} not in repr(dict(os.environ))",
        (f"assert not os.path.exists('/proc/{pid}/environ') or "
         f"{secret!r}.encode() not in open('/proc/{pid}/environ', 'rb').read()"),
        (f"assert not os.path.exists('/proc/{os.getpid()}/cmdline') or "
         f"b'pytest' not in open('/proc/{os.getpid()}/cmdline', 'rb').read()"),
        "assert sorted(int(p) for p in os.listdir('/proc') if p.isdigit())[-1] < 100",
    ]
    result = await run_tests(code, tests, timeout_s=20)
    assert result.status is Status.PASSED, _failures(result)
    assert secret not in result.stdout_tail + result.stderr_tail


@pytest.fixture
def loopback_server() -> Iterator[tuple[int, list[int]]]:
    """A TCP listener on the host's loopback; the list counts the connections it accepted."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[int] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(1)
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


async def test_no_socket_of_any_kind(tier: str, loopback_server: tuple[int, list[int]]) -> None:
    port, accepted = loopback_server
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # reachable from the host
    with anyio.fail_after(10):
        while not accepted:
            await anyio.sleep(0.01)
    accepted.clear()
    code = BLOCKED + "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    tests = [
        f"assert blocked(lambda: socket.create_connection(('127.0.0.1', {port}), 2)) == 1",
        "assert blocked(lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)) == 1",
        "assert blocked(lambda: socket.socket(socket.AF_UNIX)) == 1",
        "assert blocked(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)) == 1",
        "assert libc.socket(2, 1, 0) == -1 and ctypes.get_errno() == errno.EPERM",
        "assert libc.syscall(425, 8, 0) == -1",  # io_uring_setup
        "assert libc.unshare(0x10000000) == -1 and ctypes.get_errno() == errno.EPERM",
    ]
    result = await run_tests(code, tests, timeout_s=20)
    assert result.status is Status.PASSED, _failures(result)
    assert accepted == []


async def test_cannot_reach_the_broker_over_pyzmq(tier: str) -> None:
    procs = Processes()
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    monitor = None
    try:
        broker = procs.broker()
        port = router.bind_to_random_port("tcp://127.0.0.1")
        monitor = router.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        with Client(broker.endpoint) as client:
            before = client.status()["counters"]
        code = textwrap.dedent(f"""
            import time, zmq
            print('pyzmq', zmq.__version__, flush=True)
            context = zmq.Context()
            sockets = []
            for endpoint in ({broker.endpoint!r}, 'tcp://127.0.0.1:{port}'):
                dealer = context.socket(zmq.DEALER)
                dealer.setsockopt(zmq.LINGER, 0)
                dealer.setsockopt(zmq.IMMEDIATE, 1)  # a pipe only once a connection is up
                dealer.connect(endpoint)
                sockets.append(dealer)
        """)
        tests = ["assert all(s.poll(1500, zmq.POLLOUT) == 0 for s in sockets)"]
        result = await run_tests(code, tests, timeout_s=20)
        assert "pyzmq" in result.stdout_tail, (result.load_error, result.stderr_tail)
        assert result.status in (Status.PASSED, Status.CRASHED), result.tests
        with Client(broker.endpoint) as client:
            after = client.status()["counters"]
        assert after.pop("requests") == before.pop("requests") + 1  # our own status call
        assert after == before
        assert monitor.poll(200) == 0, "a connection reached the listener"
    finally:
        if monitor is not None:
            monitor.close(linger=0)
        router.close(linger=0)
        context.term()
        procs.stop_all()


async def test_a_daemon_does_not_outlive_the_run(tier: str) -> None:
    marker = _marker()
    code = textwrap.dedent(f"""
        import os, signal
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                os.execv('/bin/sleep', ['sleep', '{marker}'])
            os._exit(0)
        os.waitpid(pid, 0)
    """)
    running = (f"import time\nfor _ in range(500):\n    if any(b'{marker}' in open("
               f"'/proc/' + p + '/cmdline', 'rb').read() for p in os.listdir('/proc') "
               "if p.isdigit()):\n        break\n    time.sleep(0.01)\nelse:\n"
               "    raise AssertionError('no daemon')")
    result = await run_tests(code, ["import os\n" + running], timeout_s=20)
    assert result.status is Status.PASSED, _failures(result)
    # Nothing to wait for: the run ends only after its PID namespace is empty.
    assert _processes_with(marker) == []


async def test_a_timed_out_run_leaves_no_process(tier: str) -> None:
    marker = _marker()
    code = (f"import subprocess, time\nsubprocess.Popen(['sleep', '{marker}'], "
            "start_new_session=True)\nwhile True:\n    time.sleep(1)\n")
    result = await run_tests(code, ["assert True"], timeout_s=1.5)
    assert result.status is Status.TIMEOUT
    await _gone(marker)


async def test_cancelling_the_caller_kills_the_run(tier: str) -> None:
    marker = _marker()
    code = (f"import subprocess, time\nsubprocess.Popen(['sleep', '{marker}'])\n"
            "while True:\n    time.sleep(0.01)\n")
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_tests, code, ["assert True"])  # default 10 s timeout
        with anyio.fail_after(20):
            while not _processes_with(marker):
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    await _gone(marker)


async def test_temp_space_is_private_and_capped(tier: str) -> None:
    marker = f"itas-hostile-{uuid.uuid4().hex}"
    key = random.randrange(1, 2**31)
    code = BLOCKED + textwrap.dedent(f"""
        import ctypes
        def fill(path, megabytes):
            written = 0
            chunk = b'x' * (1024 * 1024)
            try:
                with open(path, 'wb') as f:
                    for _ in range(megabytes):
                        f.write(chunk)
                        f.flush()
                        written += 1
            except OSError as exc:
                return written, exc.errno
            return written, None
        def fill_many(directory):
            total = 0
            for i in range(200):
                written, error = fill(directory + '/{marker}-' + str(i), 10)
                total += written
                if error is not None:
                    return total, error
            return total, None
        libc = ctypes.CDLL(None, use_errno=True)
    """)
    tests = [
        f"assert fill('/dev/shm/{marker}', 100)[1] in (errno.ENOSPC, errno.EFBIG)",
        f"assert fill('/tmp/{marker}', 100)[1] in (errno.ENOSPC, errno.EFBIG)",
        f"assert fill('/var/tmp/{marker}', 100)[1] in (errno.ENOSPC, errno.EFBIG)",
        *(f"total, error = fill_many({d!r}); assert error == errno.ENOSPC and total <= "
          f"{TMP_SPACE_MB}, (total, error)" for d in ("/tmp", "/dev/shm")),
        f"assert libc.shmget({key}, 100 * 1024 * 1024, 0o1600) >= 0",  # IPC_CREAT
    ]
    result = await run_tests(code, tests, timeout_s=60, memory_mb=256)
    assert result.status is Status.PASSED, _failures(result)
    for directory in ("/tmp", "/var/tmp", "/dev/shm"):
        leftovers = [p.name for p in Path(directory).iterdir() if marker in p.name]
        assert leftovers == [], (directory, leftovers)
    sysv = Path("/proc/sysvipc/shm").read_text().split("\n")[1:]
    assert not [line for line in sysv if line.split() and int(line.split()[0]) == key]


async def test_fork_bomb_is_bounded_and_reaped(tier: str) -> None:
    marker = _marker()
    code = textwrap.dedent(f"""
        import os
        made = 0
        for _ in range(400):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                os.execv('/bin/sleep', ['sleep', '{marker}'])
            made += 1
    """)
    result = await run_tests(code, ["assert made < 40, made", "assert made >= 10, made"],
                             timeout_s=20, max_processes=32)
    assert result.status is Status.PASSED, _failures(result)
    assert "nproc" in result.isolation
    assert _processes_with(marker) == []
    exponential = ("import os\nfor _ in range(12):\n    try:\n        os.fork()\n"
                   "    except OSError:\n        pass\n")
    bomb = await run_tests(exponential, ["assert True"], timeout_s=5, max_processes=32)
    assert bomb.status in (Status.PASSED, Status.CRASHED, Status.TIMEOUT)


@pytest.fixture
def home_secret() -> Iterator[Path]:
    """A secret file in this user's home directory, readable by its owner only."""
    path = Path.home() / f".itas-sandbox-test-{uuid.uuid4().hex}"
    path.write_text("agent's private key")
    path.chmod(0o600)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


async def test_the_host_filesystem_is_hidden_and_read_only(tier: str, home_secret: Path) -> None:
    site = next(p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p))
    installed = (sys.prefix, sys.base_prefix, *(p for p in sys.path if p.endswith("-packages")))
    visible = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "proc", "dev",
               "tmp", "var", ".itas", *(Path(p).resolve().parts[1] for p in installed),
               *(Path(p).parts[1] for p in installed)}
    code = BLOCKED
    tests = [
        f"assert blocked(lambda: open({str(home_secret)!r}).read()) == errno.ENOENT",
        (f"assert not os.path.exists({str(Path.home())!r}) or "
         f"{home_secret.name!r} not in os.listdir({str(Path.home())!r})"),
        f"assert not os.path.exists({str(REPO / 'pyproject.toml')!r})",
        f"assert set(os.listdir('/')) <= {visible!r}, os.listdir('/')",
        f"assert set(os.listdir('/etc')) <= {set(ETC_ENTRIES)!r}, os.listdir('/etc')",
        f"assert blocked(lambda: open({site!r} + '/evil.pth', 'w')) == errno.EROFS",
        "assert blocked(lambda: open('/usr/evil', 'w')) == errno.EROFS",
        "assert blocked(lambda: open('/evil', 'w')) == errno.EROFS",
        "assert blocked(lambda: os.mkdir('/etc/evil')) == errno.EROFS",
    ]
    result = await run_tests(code, tests, timeout_s=20)
    assert result.status is Status.PASSED, _failures(result)
    assert home_secret.read_text() == "agent's private key"
    assert not Path(site, "evil.pth").exists()


@pytest.mark.skipif(not AS_ROOT, reason="only root hands runs to another user")
async def test_root_runs_as_nobody(tier: str) -> None:
    result = await run_tests("import os\n", ["assert os.getuid() == os.geteuid() != 0"],
                             timeout_s=10)
    assert result.status is Status.PASSED, _failures(result)
    assert {"uid", "nproc"} <= result.isolation


def test_a_code_tester_agent_keeps_its_api_key(tier: str, procs: Processes) -> None:
    """The issue's leak, as a user meets it: a real agent process with a key in its
    environment runs model code that looks for it everywhere."""
    secret = f"sk-test-{uuid.uuid4().hex}"
    broker = procs.broker()
    procs.spawn("agent", "--kind", "code_tester", "--broker", broker.endpoint,
                "--heartbeat", "0.2", env={"ITAS_TEST_API_KEY": secret, SANDBOX_ENV: tier})
    candidate = textwrap.dedent(f"""
        import os
        def leaked():
            found = {secret!r} in repr(dict(os.environ))
            for name in os.listdir('/proc'):
                try:
                    found = found or {secret!r}.encode() in open(
                        '/proc/' + name + '/environ', 'rb').read()
                except OSError:
                    pass
            return found
    """)
    with Client(broker.endpoint) as client:
        deadline = time.monotonic() + 60
        while not client.status()["services"].get("code_tester", {}).get("workers"):
            assert time.monotonic() < deadline, "the code_tester agent never registered"
            time.sleep(0.1)
        reply = client.request("code_tester", {
            "candidates": [{"id": "spy", "text": candidate}],
            "tests": ["assert not leaked()"], "params": {"timeout_s": 20}}, timeout=60)
    (spy,) = reply["candidates"]
    assert spy["tests_passed"] == 1, spy["meta"]["execution"]
    assert {tier, "pidns", "seccomp"} <= set(spy["meta"]["execution"]["isolation"])


# -- when no isolation works: fail closed, or an explicit, recorded downgrade ----------------------

NO_NAMESPACES = textwrap.dedent("""
    import json, sys
    from itas.execution.harness import install_seccomp
    assert install_seccomp()  # now neither bwrap nor unshare can make a user namespace
    from itas.errors import ConfigError
    from itas.execution.sandbox import run_tests_sync
    try:
        result = run_tests_sync('import socket', ['socket.socket()', 'assert 1'], timeout_s=20)
    except ConfigError as exc:
        print(json.dumps({'error': str(exc)}))
    else:
        print(json.dumps({'isolation': sorted(result.isolation),
                          'passed': [t.passed for t in result.tests],
                          'errors': [t.error for t in result.tests]}))
""")


def _without_namespaces(setting: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", NO_NAMESPACES], capture_output=True, text=True,
                         env={**os.environ, SANDBOX_ENV: setting}, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_without_namespaces_it_fails_closed() -> None:
    answer = _without_namespaces("auto")
    error = str(answer.get("error"))
    assert "no isolation" in error and "bwrap:" in error and "unshare:" in error, answer
    assert f"{SANDBOX_ENV}=unconfined" in error


def test_the_unconfined_downgrade_is_explicit_and_recorded() -> None:
    answer = _without_namespaces("unconfined")
    isolation = answer["isolation"]
    assert isinstance(isolation, list)
    assert "unconfined" in isolation and "pidns" not in isolation and "seccomp" in isolation
    assert answer["passed"] == [False, True]
    assert "PermissionError" in str(answer["errors"])


# -- the seccomp filter, as data -------------------------------------------------------------------

def _evaluate(program: list[tuple[int, int, int, int]], arch: int, nr: int, arg0: int) -> int:
    """A classic-BPF interpreter for the instructions the filter uses."""
    data = {0: nr & 0xFFFFFFFF, 4: arch, 16: arg0 & 0xFFFFFFFF}
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == harness.BPF_LD_W_ABS:
            acc = data[k]
        elif code == harness.BPF_RET_K:
            return k
        else:
            taken = {harness.BPF_JEQ_K: acc == k, harness.BPF_JGE_K: acc >= k,
                     harness.BPF_JSET_K: bool(acc & k)}[code]
            pc += jt if taken else jf


@settings(max_examples=400, deadline=None, database=None)
@given(machine=st.sampled_from(sorted(harness.SYSCALLS)), nr=st.integers(0, 2**31 - 1),
       arg0=st.integers(0, 2**32 - 1), foreign=st.booleans())
def test_seccomp_filter_denies_exactly_its_list(machine: str, nr: int, arg0: int,
                                                foreign: bool) -> None:
    arch, numbers = harness.SYSCALLS[machine]
    program = harness.seccomp_program(machine)
    assert program is not None
    by_number = {numbers[name]: name for name in (*harness.DENIED, *harness.DENIED_WITH_ENOSYS)}
    for number in (nr % 512, nr):
        verdict = _evaluate(program, arch ^ 1 if foreign else arch, number, arg0)
        if foreign:
            expected = harness.SECCOMP_RET_KILL_PROCESS
        elif ((machine == "x86_64" and number >= harness.X32_SYSCALL_BIT)
              or by_number.get(number) in harness.DENIED_WITH_ENOSYS):
            expected = harness.SECCOMP_RET_ERRNO | harness.ENOSYS
        elif number in by_number or (number == numbers["clone"]
                                     and arg0 & harness.CLONE_NEWUSER):
            expected = harness.SECCOMP_RET_ERRNO | harness.EPERM
        else:
            expected = harness.SECCOMP_RET_ALLOW
        assert verdict == expected, (machine, number, hex(arg0))
    assert harness.seccomp_program("sparc") is None


# -- the same file, as an unprivileged user ---------------------------------------------------------

@pytest.fixture(scope="module")
def unprivileged_user() -> pwd.struct_passwd:
    """A real unprivileged user with a home directory, created once on this machine."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        pytest.skip("useradd is not installed: cannot create an unprivileged user")
    subprocess.run([useradd, "--create-home", "--user-group", "--shell", "/usr/sbin/nologin",
                    TEST_USER], check=True, capture_output=True)
    return pwd.getpwnam(TEST_USER)


def _venv_for(user: pwd.struct_passwd, venv: Path) -> Path:
    """An interpreter the user can start (ours may live under /root) that sees the same
    packages: a venv of the system's Python of our minor version, pointing at ours."""
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}",
                          path="/usr/local/bin:/usr/bin:/bin")
    if system is None:
        pytest.skip(f"no system python{sys.version_info.major}.{sys.version_info.minor} that "
                    f"{user.pw_name} could run")
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
    ours = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "itas-test-parent.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in ours))
    return venv / "bin" / "python"


@pytest.mark.skipif(not AS_ROOT, reason="already unprivileged")
@pytest.mark.slow
def test_the_suite_holds_as_an_unprivileged_user(unprivileged_user: pwd.struct_passwd) -> None:
    where = Path(tempfile.mkdtemp(prefix="itas-unprivileged-"))
    # In the user's home, as a user's own install would be: the sandbox must show the
    # candidate that venv and nothing else of the home directory.
    venv = Path(unprivileged_user.pw_dir) / f".itas-test-venv-{uuid.uuid4().hex[:8]}"
    try:
        where.chmod(0o755)
        python = _venv_for(unprivileged_user, venv)
        owned = where / "owned"  # pytest recreates its basetemp, so it owns the parent
        owned.mkdir()
        os.chown(owned, unprivileged_user.pw_uid, unprivileged_user.pw_gid)
        basetemp = owned / "pytest"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": unprivileged_user.pw_dir,
               "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "USER": TEST_USER}
        command = [str(python), "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                   f"--basetemp={basetemp}", __file__, "-k", "not unprivileged_user"]
        out = subprocess.run(command, cwd=REPO, env=env, user=unprivileged_user.pw_uid,
                             group=unprivileged_user.pw_gid, extra_groups=[],
                             capture_output=True, text=True, timeout=280, check=False)
        tail = (out.stdout + out.stderr)[-12000:]
        skipped = [line for line in out.stdout.splitlines() if "does not work here" in line]
        if all(f"tier {t} does not work" in "".join(skipped) for t in NAMESPACED_TIERS):
            pytest.skip(f"as {TEST_USER}, no tier works: {skipped[0]}")
        assert out.returncode == 0, tail
        assert " passed" in out.stdout.strip().splitlines()[-1], tail
    finally:
        shutil.rmtree(where, ignore_errors=True)
        shutil.rmtree(venv, ignore_errors=True)
