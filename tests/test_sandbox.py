"""The code sandbox: real subprocesses running hostile code, and what they can and cannot do."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from itas.errors import ConfigError
from itas.execution.sandbox import OUTPUT_TAIL_BYTES, Status, run_tests, run_tests_sync

pytestmark = pytest.mark.anyio

AS_ROOT = os.geteuid() == 0


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


async def test_each_assert_reported_separately() -> None:
    code = "def add(a, b):\n    return a + b\n"
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 5", "assert add(-1, 1) == 0"]
    result = await run_tests(code, tests, timeout_s=10)
    assert result.status is Status.FAILED
    assert [t.passed for t in result.tests] == [True, False, True]
    assert result.tests[1].error == "AssertionError"
    assert result.tests[1].source == tests[1]
    assert (result.passed, result.total) == (2, 3)


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


async def test_infinite_loop_times_out_and_keeps_finished_tests() -> None:
    code = "def spin():\n    while True:\n        pass\n"
    result = await run_tests(code, ["assert 1 + 1 == 2", "spin()"], timeout_s=1.0)
    assert result.status is Status.TIMEOUT
    assert result.tests[0].passed
    assert not result.tests[1].passed and "timeout" in (result.tests[1].error or "")


async def test_memory_hog_hits_the_limit() -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 1024 * 1024))\n"
    result = await run_tests(code, ["assert True"], timeout_s=10, memory_mb=128)
    assert result.status is Status.MEMORY
    assert "memory" in result.isolation


async def test_os_exit_and_segfault_are_crashes() -> None:
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


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A root-owned directory under /tmp that other users may enter (pytest's tmp_path
    sits below a 0700 directory, which would make every permission test trivial)."""
    path = Path(tempfile.mkdtemp(prefix="itas-test-sandbox-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def loopback_server() -> Iterator[int]:
    """A TCP listener on the host's loopback that accepts connections."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


async def test_no_network(loopback_server: int) -> None:
    with socket.create_connection(("127.0.0.1", loopback_server), timeout=2):
        pass  # reachable from the host
    code = "import socket\n"
    test = f"socket.create_connection(('127.0.0.1', {loopback_server}), timeout=2)"
    result = await run_tests(code, [test], timeout_s=10)
    assert result.status is Status.FAILED
    error = result.tests[0].error or ""
    if "netns" in result.isolation:
        assert "ConnectionRefusedError" in error or "unreachable" in error
    else:
        assert "socket_guard" in result.isolation and "PermissionError" in error


async def test_fresh_empty_cwd_minimal_env_removed_afterwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ITAS_TEST_SECRET", "do-not-leak")
    code = "import os, sys\nprint(os.getcwd())\n"
    tests = [
        "assert os.listdir('.') == [], os.listdir('.')",
        "assert 'ITAS_TEST_SECRET' not in os.environ",
        "assert set(os.environ) <= {'PATH', 'LANG', 'HOME', 'TMPDIR', 'LC_CTYPE'}, set(os.environ)",
        "open('scratch.txt', 'w').write('ok')",
    ]
    result = await run_tests(code, tests, timeout_s=10)
    assert result.status is Status.PASSED, result.tests
    cwd = Path(result.stdout_tail.strip())
    assert cwd.name == "cwd" and not cwd.exists()


@pytest.mark.skipif(not AS_ROOT, reason="privilege drop and namespaces need root")
async def test_root_runs_unprivileged_in_namespaces(open_dir: Path) -> None:
    secret = open_dir / "secret.txt"
    secret.write_text("root only")
    secret.chmod(stat.S_IRUSR | stat.S_IWUSR)
    code = "import os\n"
    tests = [
        "assert os.getuid() != 0",
        f"open({str(secret)!r}).read()",
        f"open({str(secret)!r}, 'w')",
        f"open({str(open_dir / 'new.txt')!r}, 'w')",
        "assert os.getpid() == 1",
    ]
    result = await run_tests(code, tests, timeout_s=10)
    if "uid" not in result.isolation:
        pytest.skip(f"no interpreter the unprivileged user can run: {sorted(result.isolation)}")
    assert {"netns", "pidns", "nproc"} <= result.isolation
    assert [t.passed for t in result.tests] == [True, False, False, False, True]
    assert all("PermissionError" in (t.error or "") for t in result.tests[1:4])
    assert secret.read_text() == "root only"
    assert not (open_dir / "new.txt").exists()


async def test_fork_bomb_is_contained() -> None:
    code = (
        "import os\n"
        "for _ in range(12):\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    result = await run_tests(code, ["assert True"], timeout_s=5, max_processes=32)
    assert result.status in (Status.PASSED, Status.CRASHED, Status.TIMEOUT)
    if AS_ROOT and "uid" in result.isolation:
        assert "nproc" in result.isolation


async def test_escaped_background_process_is_killed() -> None:
    marker = f"{uuid.uuid4().int % 10**6}.{uuid.uuid4().int % 1000 + 1}"
    code = f"import subprocess\nsubprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
    result = await run_tests(code, ["assert True"], timeout_s=10)
    assert result.status is Status.PASSED
    with anyio.fail_after(5):
        while _processes_with(f"sleep {marker}"):
            await anyio.sleep(0.05)
    if "pidns" not in result.isolation:
        pytest.skip("without a PID namespace a process that leaves the group may survive")


async def test_cancelling_the_caller_kills_the_run(open_dir: Path) -> None:
    open_dir.chmod(0o777)  # the candidate may run unprivileged
    report = open_dir / "cwd.txt"
    marker = f"{uuid.uuid4().int % 10**6}.{uuid.uuid4().int % 1000 + 1}"
    code = (
        "import os, subprocess, time\n"
        f"subprocess.Popen(['sleep', '{marker}'])\n"
        f"open({str(report)!r}, 'w').write(os.getcwd())\n"
        "while True:\n"
        "    time.sleep(0.01)\n"
    )
    with anyio.move_on_after(2.0) as scope:
        await run_tests(code, ["assert True"], timeout_s=60)
    assert scope.cancelled_caught
    assert report.exists(), "the candidate never ran"
    assert not Path(report.read_text()).parent.exists()
    with anyio.fail_after(5):
        while _processes_with(f"sleep {marker}"):
            await anyio.sleep(0.05)


async def test_bad_limits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="timeout_s"):
        await run_tests("", [], timeout_s=0)
    with pytest.raises(ConfigError, match="memory_mb"):
        await run_tests("", [], memory_mb=1)


def test_sync_convenience() -> None:
    result = run_tests_sync("x = 2\n", ["assert x == 2"], timeout_s=10)
    assert result.status is Status.PASSED
