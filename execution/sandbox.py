"""Run untrusted Python (model-written code) against tests in a throw-away sandbox.

Why: model code can loop forever, allocate without bound, fork, write files,
open sockets, read other processes' environments (API keys) or leave daemons
behind. None of that may reach the caller, so every run gets a fresh
interpreter in a fresh sandbox, and a wall-clock deadline after which all of
it is killed.

How it is confined depends on what the machine allows; the first tier that
works is used, and the tier is detected once per process (a probe run):

``bwrap``
    bubblewrap (``bwrap`` >= 0.8, Debian package ``bubblewrap``) builds the
    sandbox: new user, mount, PID, network, IPC and UTS namespaces.
``unshare``
    No bwrap, but the kernel allows unprivileged user namespaces: the harness
    (``itas.execution.harness``) makes the same namespaces and the same
    filesystem itself.
``unconfined``
    Neither works: **fail closed** by default (``run_tests`` raises
    ConfigError, so a code_tester agent answers with an error instead of
    running code unprotected). Only with ``ITAS_SANDBOX=unconfined`` does code
    run anyway, with rlimits, seccomp and a clean environment but without
    namespaces; every result then says ``unconfined`` in ``isolation``, and the
    first such run logs a warning.

``ITAS_SANDBOX`` (``auto``, the default, or one of the tier names) picks a
tier; asking for one that does not work here is a ConfigError naming why.

In both namespaced tiers the candidate sees only: ``/usr`` and the other
system directories, a few files of ``/etc`` (the dynamic linker's cache,
``passwd``, ``group``, time zone), the interpreter's own installation and the
caller's site-packages, all read-only; its own ``/proc`` (only its own
processes), a minimal ``/dev``, and private tmpfs for ``/tmp`` (its working
directory and ``HOME``; ``/var/tmp`` points there) and ``/dev/shm``, each
capped at ``TMP_SPACE_MB``. Nothing else of the host: no home directories, no
``/run``, no sockets of other programs, no other processes. As root, runs
also drop to the user ``nobody`` first (``uid``), so the fork bomb limit
applies and no host file is accessible as its owner.

Reported in ``SandboxResult.isolation``: the tier; ``userns``, ``mountns``,
``pidns``, ``netns``, ``ipcns`` and ``private_tmp`` (namespaced tiers);
``uid`` (root only); ``seccomp`` (no ``socket()`` of any family, no io_uring,
namespaces, mounts, ptrace, keyrings, bpf); ``die_with_parent`` (the run is
killed if this process dies); and the rlimits applied: ``memory``
(RLIMIT_AS), ``cpu`` (SIGXCPU, reported as a timeout), ``fsize``
(``FILE_SIZE_LIMIT`` per file), ``nofile``, ``nproc`` (a fork bomb stops after
``max_processes`` more processes; never as root, whom the kernel does not
limit), ``no_core``.

What this does not protect: the integrity of the score against code written to
cheat on purpose (the candidate runs in the harness's process and could forge
its result records); memory used by files in the private tmpfs counts against
``TMP_SPACE_MB``, not against ``memory_mb``.

Tests are either one script (optionally followed by ``check(entry_point)``, the
HumanEval harness) or a list of statements (MBPP's asserts), each run on its
own in the same namespace so the result says which passed. Results stream to a
file line by line, so a run that times out still reports the tests it finished.
"""

from __future__ import annotations

import enum
import json
import logging
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

log = logging.getLogger("itas.sandbox")

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 512
DEFAULT_MAX_PROCESSES = 64
MIN_MEMORY_MB = 64
TMP_SPACE_MB = 64
FILE_SIZE_LIMIT = 16 * 1024 * 1024
OPEN_FILES_LIMIT = 256
OUTPUT_TAIL_BYTES = 4096
ERROR_CHARS = 300
DRAIN_GRACE_S = 1.0
REAP_GRACE_S = 5.0
PROBE_TIMEOUT_S = 60.0
UNPRIVILEGED_USER = "nobody"
SANDBOX_ENV = "ITAS_SANDBOX"
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"
# Inside the namespaced tiers: the control directory (harness, job) and the work dir.
CONTROL_INSIDE = "/.itas"
WORK_INSIDE = "/tmp"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group",
               "nsswitch.conf", "alternatives")
HARNESS_SOURCE = Path(__file__).with_name("harness.py")
# Runs as the sandbox's user, unconfined: what the interpreter is, what it may read.
PROBE_SCRIPT = (
    "import json, os, sys\n"
    "print(json.dumps({'version': list(sys.version_info[:2]),\n"
    "    'prefixes': [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix],\n"
    "    'readable': [d for d in json.loads(sys.argv[1]) if os.access(d, os.R_OK | os.X_OK)]}))\n"
)


class Status(enum.StrEnum):
    PASSED = "passed"  # every test passed
    FAILED = "failed"  # it ran; some test failed or the code did not load
    TIMEOUT = "timeout"  # wall-clock or CPU limit reached
    CRASHED = "crashed"  # the process died without finishing (signal, os._exit, ...)
    MEMORY = "memory"  # the memory limit was hit


class Tier(enum.StrEnum):
    BWRAP = "bwrap"
    UNSHARE = "unshare"
    UNCONFINED = "unconfined"


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
class _Host:
    """Who runs the sandbox and with which interpreter, and what that one may bind."""

    python: str
    uid: int | None  # set (with gid) when root hands runs to ``nobody``
    gid: int | None
    prefixes: tuple[str, ...]  # the interpreter's installation
    site_dirs: tuple[str, ...]  # the caller's site-packages it can use


@dataclass(slots=True)
class _Detected:
    host: _Host | None = None
    unavailable: dict[Tier, str | None] = field(default_factory=dict)  # None: it works
    warned: bool = False


_detected = _Detected()


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
    Never raises for anything the code does; raises ConfigError for bad limits,
    a bad ``ITAS_SANDBOX``, or when no isolation works here (fail closed).
    """
    if timeout_s <= 0:
        raise ConfigError(f"sandbox: timeout_s must be > 0, got {timeout_s}")
    if memory_mb < MIN_MEMORY_MB:
        raise ConfigError(f"sandbox: memory_mb must be >= {MIN_MEMORY_MB}, got {memory_mb}")
    if max_processes < 1:
        raise ConfigError(f"sandbox: max_processes must be >= 1, got {max_processes}")
    sources = [tests] if isinstance(tests, str) else [str(t) for t in tests]
    host = await _host()
    tier = await _tier(host)
    job = _Job(code, sources, entry_point if isinstance(tests, str) else None,
               timeout_s, memory_mb, max_processes)
    run, records = await _run(host, tier, job)
    setup = _setup_error(records)
    if setup is not None:
        raise ConfigError(f"sandbox ({tier}): could not set up isolation: {setup}")
    return _result(sources, records, run)


async def check_isolation() -> Tier:
    """The tier runs will use here, probed now; ConfigError (fail closed) when none works.
    Agents that only run code call it at start, so a machine that cannot isolate code is
    one clear error at start instead of one per request."""
    return await _tier(await _host())


def run_tests_sync(code: str, tests: str | Sequence[str], **options: Any) -> SandboxResult:
    """``run_tests`` for callers without an event loop (scripts, the CLI)."""
    return anyio.run(partial(run_tests, code, tests, **options))


@dataclass(frozen=True, slots=True)
class _Job:
    code: str
    tests: list[str]
    check: str | None
    timeout_s: float
    memory_mb: int
    max_processes: int


@dataclass(frozen=True, slots=True)
class _Run:
    timed_out: bool
    returncode: int | None
    duration_s: float
    stdout: _Tail
    stderr: _Tail


async def _run(host: _Host, tier: Tier, job: _Job) -> tuple[_Run, list[dict[str, Any]]]:
    """One run in ``tier``: control dir, job file, the command, the records it wrote."""
    root = Path(tempfile.mkdtemp(prefix="itas-sandbox-"))
    results_fd = -1
    try:
        ctl, work, sysroot = root / "ctl", root / "work", root / "sysroot"
        for directory in (ctl, work, sysroot):
            directory.mkdir()
        root.chmod(0o755)
        ctl.chmod(0o755)
        sysroot.chmod(0o755)
        if host.uid is not None and host.gid is not None:
            os.chown(work, host.uid, host.gid)
        results = ctl / "results.jsonl"
        # Opened here and inherited: nothing inside needs write access to a host file.
        results_fd = os.open(results, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                             0o600)
        isolation = [str(tier), "die_with_parent"]
        if host.uid is not None:
            isolation.append("uid")
        if tier is Tier.BWRAP:
            isolation += ["userns", "mountns", "pidns", "netns", "ipcns", "private_tmp"]
        spec = {
            "code": job.code,
            "tests": job.tests,
            "check": job.check,
            "tier": str(tier),
            "isolation": isolation,
            "results_fd": results_fd,
            "parent_pid": None if tier is Tier.BWRAP else os.getpid(),
            "plan": _plan(host) if tier is Tier.UNSHARE else [],
            "sysroot": str(sysroot),
            "cwd": str(work) if tier is Tier.UNCONFINED else WORK_INSIDE,
            "site_dirs": list(host.site_dirs),
            "cpu_s": int(job.timeout_s) + 1,
            "memory": job.memory_mb * 1024 * 1024,
            "fsize": FILE_SIZE_LIMIT,
            "nofile": OPEN_FILES_LIMIT,
            "nproc": job.max_processes,
            "error_chars": ERROR_CHARS,
        }
        (ctl / "job.json").write_text(json.dumps(spec), encoding="utf-8")
        (ctl / "harness.py").write_text(_harness_source(), encoding="utf-8")
        inside = Path(CONTROL_INSIDE) if tier is Tier.BWRAP else ctl
        command = [host.python, "-I", "-B", str(inside / "harness.py"), str(inside / "job.json")]
        if tier is Tier.BWRAP:
            command = _bwrap_command(host, ctl) + command
        home = WORK_INSIDE if tier is not Tier.UNCONFINED else str(work)
        env = {"PATH": CHILD_PATH, "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home}
        run = await _execute(command, ctl, env, host, results_fd, job.timeout_s)
        return run, _read_records(results)
    finally:
        with anyio.CancelScope(shield=True):
            if results_fd >= 0:
                os.close(results_fd)
            await anyio.to_thread.run_sync(partial(shutil.rmtree, root, ignore_errors=True))


def _harness_source() -> str:
    return HARNESS_SOURCE.read_text(encoding="utf-8")


def _plan(host: _Host) -> list[list[str | int]]:
    """The filesystem the candidate sees, as steps both namespaced tiers carry out:
    ``["ro-bind", source, target]``, ``["symlink", link_text, target]``,
    ``["dir", target]``, ``["tmpfs", bytes, target]``, ``["proc", target]``,
    ``["dev", target]``."""
    plan: list[list[str | int]] = []
    bound: list[str] = []

    def expose(path: str) -> None:
        if path in ("", "/") or any(path == b or path.startswith(b + "/") for b in bound):
            return  # never the whole host (an interpreter installed at /)
        if os.path.islink(path):
            plan.append(["symlink", os.readlink(path), path])
        elif os.path.exists(path):
            plan.append(["ro-bind", path, path])
            bound.append(path)

    cap = TMP_SPACE_MB * 1024 * 1024
    plan += [["proc", "/proc"], ["dev", "/dev"], ["tmpfs", cap, "/dev/shm"],
             ["tmpfs", cap, WORK_INSIDE], ["dir", "/var"], ["symlink", WORK_INSIDE, "/var/tmp"]]
    # After the private mounts, so an interpreter installed under /tmp stays visible.
    for path in SYSTEM_DIRS:
        expose(path)
    for name in ETC_ENTRIES:
        expose(f"/etc/{name}")
    for path in (*host.prefixes, *host.site_dirs):
        expose(os.path.realpath(path))
        if os.path.realpath(path) != path:
            expose(path)
    return plan


def _bwrap_command(host: _Host, ctl: Path) -> list[str]:
    """bubblewrap's options for the same plan, plus the control dir and a read-only root."""
    bwrap = shutil.which("bwrap") or shutil.which("bwrap", path=CHILD_PATH) or "bwrap"
    args = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--hostname", "sandbox"]
    for step in _plan(host):
        kind, target = str(step[0]), str(step[-1])
        if kind in ("ro-bind", "symlink"):
            args += [f"--{kind}", str(step[1]), target]
        elif kind == "tmpfs":
            args += ["--size", str(step[1]), "--tmpfs", target]
        else:
            args += [f"--{kind}", target]
    return [*args, "--ro-bind", str(ctl), CONTROL_INSIDE, "--remount-ro", "/",
            "--chdir", WORK_INSIDE, "--"]


async def _execute(command: list[str], cwd: Path, env: dict[str, str], host: _Host,
                   results_fd: int, timeout_s: float) -> _Run:
    out, err = _Tail(), _Tail()
    started = time.monotonic()
    as_user: dict[str, Any] = {}
    if host.uid is not None:
        as_user = {"user": host.uid, "group": host.gid, "extra_groups": []}
    process = await anyio.open_process(
        command, stdin=subprocess.DEVNULL, cwd=cwd, env=env, start_new_session=True,
        pass_fds=(results_fd,), **as_user)
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


async def _tier(host: _Host) -> Tier:
    """The tier ``ITAS_SANDBOX`` asks for (default: the best that works), or ConfigError."""
    wanted = os.environ.get(SANDBOX_ENV, "auto").strip().lower() or "auto"
    names = ["auto", *(str(t) for t in Tier)]
    if wanted not in names:
        raise ConfigError(f"{SANDBOX_ENV}={wanted!r}: expected one of {', '.join(names)}")
    if wanted == Tier.UNCONFINED:
        if not _detected.warned:
            _detected.warned = True
            log.warning("%s=unconfined: model-written code runs without namespaces; it can "
                        "read this user's files and other processes and reach the network",
                        SANDBOX_ENV)
        return Tier.UNCONFINED
    order = [Tier.BWRAP, Tier.UNSHARE] if wanted == "auto" else [Tier(wanted)]
    reasons = []
    for tier in order:
        if tier not in _detected.unavailable:
            _detected.unavailable[tier] = await _probe(host, tier)
        reason = _detected.unavailable[tier]
        if reason is None:
            return tier
        reasons.append(f"{tier}: {reason}")
    raise ConfigError(
        f"sandbox: no isolation for model-written code here ({'; '.join(reasons)}); install "
        f"bubblewrap or allow unprivileged user namespaces, or set {SANDBOX_ENV}=unconfined "
        "to run it without (it could then read this user's files and reach the network)")


async def _probe(host: _Host, tier: Tier) -> str | None:
    """None if an empty run works in ``tier``, else why not (one line)."""
    if tier is Tier.BWRAP and shutil.which("bwrap") is None and shutil.which(
            "bwrap", path=CHILD_PATH) is None:
        return "bwrap is not installed (Debian: apt-get install bubblewrap)"
    try:
        run, records = await _run(host, tier, _Job("", [], None, PROBE_TIMEOUT_S,
                                                   DEFAULT_MEMORY_MB, DEFAULT_MAX_PROCESSES))
    except OSError as exc:
        return f"cannot start ({exc})"
    if any(r.get("kind") == "done" for r in records):
        return None
    setup = _setup_error(records)
    if setup is not None:
        return setup
    lines = run.stderr.text().strip().splitlines()
    return lines[-1] if lines else f"exit status {run.returncode}"


def _setup_error(records: list[dict[str, Any]]) -> str | None:
    """The harness's own setup failure; a record after ``start`` could be the candidate's."""
    for record in records:
        if record.get("kind") == "start":
            return None
        if record.get("kind") == "setup":
            return str(record.get("error"))
    return None


async def _host() -> _Host:
    """The interpreter and user for runs, probed once per process.

    As root, runs go to ``nobody``, with the first interpreter that user can
    start (a venv whose base lives under /root cannot be); elsewhere the
    caller's own interpreter, as the caller.
    """
    if _detected.host is not None:
        return _detected.host
    site_dirs = _site_dirs()
    chosen = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(UNPRIVILEGED_USER)
        except KeyError:
            user = None
        if user is not None:
            for python in _candidate_interpreters():
                chosen = await _describe(python, site_dirs, user.pw_uid, user.pw_gid)
                if chosen is not None:
                    break
    if chosen is None:
        chosen = await _describe(sys.executable, site_dirs, None, None)
    if chosen is None:
        raise ConfigError(f"sandbox: the interpreter {sys.executable} does not start")
    _detected.host = chosen
    return chosen


async def _describe(python: str, site_dirs: list[str], uid: int | None,
                    gid: int | None) -> _Host | None:
    """Run the probe script as the sandbox's user; None if it cannot."""
    as_user: dict[str, Any] = {}
    if uid is not None:
        as_user = {"user": uid, "group": gid, "extra_groups": []}
    try:
        probe = await anyio.run_process([python, "-I", "-c", PROBE_SCRIPT, json.dumps(site_dirs)],
                                        check=False, cwd="/", env={"PATH": CHILD_PATH},
                                        **as_user)
        facts = json.loads(probe.stdout)
    except (OSError, ValueError):  # not executable for that user, or no answer
        return None
    if probe.returncode != 0:
        return None
    same_version = tuple(facts["version"]) == sys.version_info[:2]
    usable = [d for d in facts["readable"] if same_version]
    prefixes = tuple(dict.fromkeys(str(p) for p in facts["prefixes"]))
    return _Host(python, uid, gid, prefixes, tuple(usable))


def _site_dirs() -> list[str]:
    """The caller's site-packages: the candidate gets the same libraries, read-only."""
    found = []
    for entry in sys.path:
        if os.path.basename(entry) in ("site-packages", "dist-packages") and os.path.isdir(entry):
            found.append(os.path.abspath(entry))
    return list(dict.fromkeys(found))


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
