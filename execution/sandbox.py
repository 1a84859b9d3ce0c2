"""Run untrusted Python (model-written code) against tests in a throw-away subprocess.

Why a separate process per run: model code can loop forever, allocate without
bound, fork, write files, open sockets or call ``os._exit``. None of that may
reach the caller, so every run gets a fresh interpreter, a fresh empty temp
directory as its working directory, a minimal environment, and a wall-clock
deadline after which its whole process group is killed.

The limits are set by a small stdlib-only harness (``_HARNESS``, written into
the run's control directory) before it executes the candidate, not by a
``preexec_fn``: anyio's process API has none, and ``preexec_fn`` is unsafe in
a parent that runs threads. The harness applies, where the OS allows, and
reports back which of these it could (``SandboxResult.isolation``):

==============  ==============================================================
``memory``      RLIMIT_AS: allocations beyond ``memory_mb`` raise MemoryError
``cpu``         RLIMIT_CPU: a busy loop is killed by SIGXCPU
``fsize``       RLIMIT_FSIZE: no file larger than ``FILE_SIZE_LIMIT``
``nofile``      RLIMIT_NOFILE: at most ``OPEN_FILES_LIMIT`` open files
``no_core``     RLIMIT_CORE 0: no core dumps
``netns``       a new, empty network namespace (root only): no network at all
``pidns``       a new PID namespace (root only): every process the candidate
                starts dies with it, even one that escapes the process group
``uid``         runs as the unprivileged ``nobody`` user (root only, when an
                interpreter that user may execute exists): the candidate
                cannot touch the caller's files
``nproc``       RLIMIT_NPROC (not as root: the kernel never applies it to
                root): a fork bomb stops after ``max_processes`` more processes
``socket_guard`` fallback without ``netns``: ``socket`` connect/bind/DNS raise
                PermissionError (in-process, so code that imports ``_socket``
                directly can get around it)
==============  ==============================================================

What this does not protect: the integrity of the score against code written to
cheat on purpose (the candidate runs in the harness's process and could forge
its result records). Model output is not adversarial in that way; the host is
what is protected.

Tests are either one script (optionally followed by ``check(entry_point)``, the
HumanEval harness) or a list of statements (MBPP's asserts), each run on its
own in the same namespace so the result says which passed. Results stream to a
file line by line, so a run that times out still reports the tests it finished.
"""

from __future__ import annotations

import enum
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from itas.errors import ConfigError

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 512
DEFAULT_MAX_PROCESSES = 64
MIN_MEMORY_MB = 64
FILE_SIZE_LIMIT = 16 * 1024 * 1024
OPEN_FILES_LIMIT = 256
OUTPUT_TAIL_BYTES = 4096
ERROR_CHARS = 300
DRAIN_GRACE_S = 1.0
REAP_GRACE_S = 5.0
UNPRIVILEGED_USER = "nobody"
# Minimal environment: no API keys or proxies of the caller leak into model code.
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"
PROBE_IMPORTS = "import ctypes, json, resource"


class Status(enum.StrEnum):
    PASSED = "passed"  # every test passed
    FAILED = "failed"  # it ran; some test failed or the code did not load
    TIMEOUT = "timeout"  # wall-clock or CPU limit reached
    CRASHED = "crashed"  # the process died without finishing (signal, os._exit, ...)
    MEMORY = "memory"  # the memory limit was hit


@dataclass(frozen=True, slots=True)
class TestOutcome:
    index: int
    source: str
    passed: bool
    error: str | None = None
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class SandboxResult:
    status: Status
    tests: tuple[TestOutcome, ...]
    isolation: frozenset[str] = frozenset()
    duration_s: float = 0.0
    returncode: int | None = None
    load_error: str | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    output_truncated: bool = False

    @property
    def passed(self) -> int:
        return sum(t.passed for t in self.tests)

    @property
    def total(self) -> int:
        return len(self.tests)

    @property
    def all_passed(self) -> bool:
        return self.status is Status.PASSED


@dataclass(slots=True)
class _Tail:
    """Keeps the last ``limit`` bytes of a stream, so a flood of output costs no memory."""

    limit: int = OUTPUT_TAIL_BYTES
    data: bytearray = field(default_factory=bytearray)
    seen: int = 0

    def feed(self, chunk: bytes) -> None:
        self.seen += len(chunk)
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class _Interpreter:
    python: str
    uid: int | None = None
    gid: int | None = None


_interpreter_cache: list[_Interpreter] = []


async def run_tests(
    code: str,
    tests: str | Sequence[str],
    *,
    entry_point: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    max_processes: int = DEFAULT_MAX_PROCESSES,
) -> SandboxResult:
    """Execute ``code`` then the tests in a fresh sandboxed interpreter.

    ``tests``: a list of statements (each one test, run separately in order), or
    one script (one test). With ``entry_point`` the script must define
    ``check(candidate)`` and is called as ``check(<entry_point>)``.
    Never raises for anything the code does; raises ConfigError for bad limits.
    """
    if timeout_s <= 0:
        raise ConfigError(f"sandbox: timeout_s must be > 0, got {timeout_s}")
    if memory_mb < MIN_MEMORY_MB:
        raise ConfigError(f"sandbox: memory_mb must be >= {MIN_MEMORY_MB}, got {memory_mb}")
    if max_processes < 1:
        raise ConfigError(f"sandbox: max_processes must be >= 1, got {max_processes}")
    sources = [tests] if isinstance(tests, str) else [str(t) for t in tests]
    interpreter = await _interpreter()
    root = Path(tempfile.mkdtemp(prefix="itas-sandbox-"))
    try:
        ctl, cwd, results = _prepare(root, interpreter)
        job = {
            "code": code,
            "tests": sources,
            "check": entry_point if isinstance(tests, str) else None,
            "results": str(results),
            "cpu_s": int(timeout_s) + 1,
            "memory": memory_mb * 1024 * 1024,
            "fsize": FILE_SIZE_LIMIT,
            "nofile": OPEN_FILES_LIMIT,
            "nproc": max_processes,
            "error_chars": ERROR_CHARS,
            "uid": interpreter.uid,
            "gid": interpreter.gid,
        }
        (ctl / "job.json").write_text(json.dumps(job), encoding="utf-8")
        (ctl / "harness.py").write_text(_HARNESS, encoding="utf-8")
        run = await _execute(interpreter.python, ctl, cwd, timeout_s)
        records = _read_records(results)
        return _result(sources, records, run)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(partial(shutil.rmtree, root, ignore_errors=True))


def run_tests_sync(code: str, tests: str | Sequence[str], **options: Any) -> SandboxResult:
    """``run_tests`` for callers without an event loop (scripts, the CLI)."""
    return anyio.run(partial(run_tests, code, tests, **options))


def _prepare(root: Path, interpreter: _Interpreter) -> tuple[Path, Path, Path]:
    """Control dir (harness, job, results; not visible as cwd) and an empty work dir.

    The results file is created here and opened by the harness before it drops
    privileges, so the unprivileged candidate needs no write access to it.
    """
    ctl, cwd = root / "ctl", root / "cwd"
    ctl.mkdir()
    cwd.mkdir()
    results = ctl / "results.jsonl"
    results.touch(mode=0o600)
    root.chmod(0o755)
    ctl.chmod(0o755)
    if interpreter.uid is not None and interpreter.gid is not None:
        os.chown(cwd, interpreter.uid, interpreter.gid)
    return ctl, cwd, results


@dataclass(frozen=True, slots=True)
class _Run:
    timed_out: bool
    returncode: int | None
    duration_s: float
    stdout: _Tail
    stderr: _Tail


async def _execute(python: str, ctl: Path, cwd: Path, timeout_s: float) -> _Run:
    env = {"PATH": CHILD_PATH, "LANG": "C.UTF-8", "HOME": str(cwd), "TMPDIR": str(cwd)}
    out, err = _Tail(), _Tail()
    started = time.monotonic()
    process = await anyio.open_process(
        [python, "-I", "-B", str(ctl / "harness.py"), str(ctl / "job.json")],
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    timed_out = False
    try:
        async with anyio.create_task_group() as tg:
            if process.stdout is not None:
                tg.start_soon(_drain, process.stdout, out)
            if process.stderr is not None:
                tg.start_soon(_drain, process.stderr, err)
            with anyio.move_on_after(timeout_s) as deadline:
                await process.wait()
            timed_out = deadline.cancelled_caught
            _kill_group(process.pid)
            # A process that left the group may still hold the pipes open.
            tg.cancel_scope.deadline = anyio.current_time() + DRAIN_GRACE_S
    finally:
        with anyio.CancelScope(shield=True):
            _kill_group(process.pid)
            with anyio.move_on_after(REAP_GRACE_S):
                await process.wait()
            await process.aclose()
    return _Run(timed_out, process.returncode, time.monotonic() - started, out, err)


async def _drain(stream: anyio.abc.ByteReceiveStream, tail: _Tail) -> None:
    try:
        async for chunk in stream:
            tail.feed(chunk)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        return


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def _interpreter() -> _Interpreter:
    """Pick the interpreter, and whether runs drop to ``nobody``.

    Only as root: the first interpreter that ``nobody`` can start (a venv whose
    base lives under /root cannot be), probed once per process. Otherwise the
    caller's own interpreter, unprivileged or not as the caller is.
    """
    if _interpreter_cache:
        return _interpreter_cache[0]
    chosen = _Interpreter(sys.executable)
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(UNPRIVILEGED_USER)
        except KeyError:
            user = None
        if user is not None:
            for python in _candidate_interpreters():
                if await _runs_as(python, user.pw_uid, user.pw_gid):
                    chosen = _Interpreter(python, user.pw_uid, user.pw_gid)
                    break
    _interpreter_cache[:] = [chosen]
    return chosen


async def _runs_as(python: str, uid: int, gid: int) -> bool:
    try:
        probe = await anyio.run_process(
            [python, "-I", "-c", PROBE_IMPORTS],
            check=False,
            cwd="/",
            env={"PATH": CHILD_PATH},
            user=uid,
            group=gid,
            extra_groups=[],
        )
    except OSError:  # not executable for that user
        return False
    return probe.returncode == 0


def _candidate_interpreters() -> list[str]:
    """The caller's interpreter first, then the system's of the same minor version."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    names = [sys.executable, os.path.realpath(sys.executable)]
    names += [
        shutil.which(version, path=CHILD_PATH) or "",
        shutil.which("python3", path=CHILD_PATH) or "",
    ]
    seen: list[str] = []
    for name in names:
        if name and name not in seen and os.path.exists(name):
            seen.append(name)
    return seen


def _read_records(results: Path) -> list[dict[str, Any]]:
    """Parse the harness's JSON lines; a torn last line (killed mid-write) is skipped."""
    records: list[dict[str, Any]] = []
    try:
        lines = results.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _result(sources: list[str], records: list[dict[str, Any]], run: _Run) -> SandboxResult:
    isolation: frozenset[str] = frozenset()
    load_error: str | None = None
    done = False
    exit_signal: int | None = None
    outcomes: dict[int, TestOutcome] = {}
    for record in records:
        kind = record.get("kind")
        if kind == "start":
            isolation = frozenset(str(i) for i in record.get("isolation", ()))
        elif kind == "load":
            load_error = str(record.get("error"))
        elif kind == "test":
            index = int(record.get("index", -1))
            if 0 <= index < len(sources):
                outcomes[index] = TestOutcome(
                    index,
                    sources[index],
                    bool(record.get("passed")),
                    record.get("error"),
                    float(record.get("duration_s", 0.0)),
                )
        elif kind == "done":
            done = True
        elif kind == "exit" and record.get("signal"):
            exit_signal = int(record["signal"])
    if exit_signal is None and run.returncode is not None and run.returncode < 0:
        exit_signal = -run.returncode
    stderr = run.stderr.text()
    if load_error is not None:
        missing = f"not run: the code failed to load ({load_error})"
    else:
        missing = "not run: " + ("timeout" if run.timed_out else "the process ended early")
    tests = tuple(
        outcomes.get(i, TestOutcome(i, src, False, missing)) for i, src in enumerate(sources)
    )
    errors = [t.error or "" for t in tests] + [load_error or ""]
    if done and all(t.passed for t in tests):
        status = Status.PASSED
    elif any(e.startswith("MemoryError") for e in errors) or (not done and "MemoryError" in stderr):
        status = Status.MEMORY
    elif done:
        status = Status.FAILED
    elif run.timed_out or exit_signal == signal.SIGXCPU:
        status = Status.TIMEOUT
    else:
        status = Status.CRASHED
    return SandboxResult(
        status=status,
        tests=tests,
        isolation=isolation,
        duration_s=run.duration_s,
        returncode=run.returncode,
        load_error=load_error,
        stdout_tail=run.stdout.text(),
        stderr_tail=stderr,
        output_truncated=max(run.stdout.seen, run.stderr.seen) > OUTPUT_TAIL_BYTES,
    )


# The child side. Stdlib only, Python >= 3.8; runs as ``python -I -B harness.py job.json``.
_HARNESS = r'''
import json, os, resource, sys, time

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000


def describe(exc, chars):
    text = str(exc)
    name = type(exc).__name__
    return (name + ": " + text if text else name)[:chars]


def limit(applied, which, value, name, hard=None):
    try:
        resource.setrlimit(which, (value, value if hard is None else hard))
        applied.append(name)
    except (ValueError, OSError):
        pass


def namespaces(applied):
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
    except (ImportError, OSError):
        return
    for flag, name in ((CLONE_NEWNET, "netns"), (CLONE_NEWPID, "pidns")):
        if libc.unshare(flag) == 0:
            applied.append(name)


def forward(out, pid):
    """PID-namespace parent: wait for the namespace's init (the candidate's
    process), report how it ended, exit."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + sig
    out.write(json.dumps({"kind": "exit", "signal": sig, "code": code}) + "\n")
    out.flush()
    os._exit(code)


def processes_of(uid):
    """How many processes ``uid`` runs now: RLIMIT_NPROC counts them all, so the
    candidate's allowance comes on top (other sandboxes may run as the same user)."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                count += os.stat("/proc/" + name).st_uid == uid
            except OSError:
                pass
    return count


def block_network():
    import socket

    def refuse(*args, **kwargs):
        raise PermissionError("network access is disabled in the sandbox")

    for name in ("connect", "connect_ex", "bind", "sendto"):
        setattr(socket.socket, name, refuse)
    socket.getaddrinfo = refuse
    socket.create_connection = refuse


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    out = open(job["results"], "a", encoding="utf-8")
    applied = []
    limit(applied, resource.RLIMIT_CORE, 0, "no_core")
    limit(applied, resource.RLIMIT_FSIZE, job["fsize"], "fsize")
    limit(applied, resource.RLIMIT_NOFILE, job["nofile"], "nofile")
    if os.geteuid() == 0:
        namespaces(applied)
        if "pidns" in applied:
            pid = os.fork()
            if pid:
                forward(out, pid)
        if job["uid"] is not None:
            try:
                os.setgroups([])
                os.setgid(job["gid"])
                os.setuid(job["uid"])
                applied.append("uid")
            except OSError:
                pass
    if os.geteuid() != 0:  # the kernel never limits root's processes
        limit(applied, resource.RLIMIT_NPROC, processes_of(os.getuid()) + job["nproc"], "nproc")
    # Hard above soft: SIGXCPU (reported as a timeout) comes before SIGKILL.
    limit(applied, resource.RLIMIT_CPU, job["cpu_s"], "cpu", job["cpu_s"] + 1)
    limit(applied, resource.RLIMIT_AS, job["memory"], "memory")
    if "netns" not in applied:
        block_network()
        applied.append("socket_guard")

    me = os.getpid()

    def emit(**record):
        if os.getpid() == me:  # not from processes the candidate forked
            out.write(json.dumps(record) + "\n")
            out.flush()

    emit(kind="start", isolation=applied)
    namespace = {"__name__": "__candidate__"}
    try:
        exec(compile(job["code"], "<candidate>", "exec"), namespace)
    except BaseException as exc:
        emit(kind="load", error=describe(exc, job["error_chars"]))
    else:
        for index, source in enumerate(job["tests"]):
            started = time.monotonic()
            try:
                exec(compile(source, "<test " + str(index) + ">", "exec"), namespace)
                if job["check"] is not None:
                    if job["check"] not in namespace:
                        raise NameError("entry point " + repr(job["check"]) + " is not defined")
                    namespace["check"](namespace[job["check"]])
                passed, error = True, None
            except BaseException as exc:
                passed, error = False, describe(exc, job["error_chars"])
            emit(kind="test", index=index, passed=passed, error=error,
                 duration_s=round(time.monotonic() - started, 6))
    emit(kind="done")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    # Skip interpreter shutdown: candidate threads or atexit hooks could hang it.
    os._exit(0)


main()
'''
