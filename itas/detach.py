"""``itas up --detach`` and ``itas down``: a stack in the background, for one terminal.

``itas up --detach`` starts the same ``itas up`` (same interpreter, import path and options)
as a child in its own session, with its output going to a log file named at start, and
relays the child's progress lines until the stack is ready; then it records the stack (its
broker endpoint, process id and log) in the runtime directory and returns. So a README or a
script can run ``itas up --detach; itas ask ...; itas down`` top to bottom, and no line of
the stack ever lands inside another command's output.

``itas down`` finds the record of the stack on a broker endpoint, sends it SIGTERM (its
orderly shutdown stops every part) and waits until it has exited. A record whose process is
gone is stale and removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from itas.agents.providers.local import model_state_path
from itas.errors import ConfigError
from itas.lifecycle import ERROR_PREFIX, child_environment, itas_command

READY_TIMEOUT_S = 600.0  # the embedded model's first load is the slow part
STOP_TIMEOUT_S = 60.0
POLL_S = 0.2
READY_RE = re.compile(r"^itas up: broker (\S+); services: ")


def runtime_dir() -> Path:
    """Where the records live: beside the model server's (``ITAS_RUNTIME_DIR``, ...)."""
    return model_state_path().parent


def _record_path(broker: str) -> Path:
    digest = hashlib.sha256(broker.encode()).hexdigest()[:16]
    return runtime_dir() / f"stack-{digest}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def start_detached(args: Sequence[str], say: Callable[[str], None]) -> tuple[str, int, Path]:
    """Run ``itas up ARGS`` in the background; return (broker, pid, log) once it is ready.
    ConfigError quotes the stack's own error line when it stops before that."""
    folder = runtime_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = folder / f"up-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    say(f"starting in the background; its log: {log}")
    with log.open("wb") as out:
        process = subprocess.Popen(itas_command("up", *args), stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=child_environment())
    deadline = time.monotonic() + READY_TIMEOUT_S
    shown = 0
    while True:
        text = log.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        # Whole lines only, unless the stack has exited (then its last words count too).
        whole = text.endswith("\n") or process.poll() is not None
        complete = lines if whole else lines[:-1]
        for line in complete[shown:]:
            ready = READY_RE.match(line)
            if ready:
                broker = ready.group(1)
                _record_path(broker).write_text(json.dumps(
                    {"broker": broker, "pid": process.pid, "log": str(log)}), encoding="utf-8")
                return broker, process.pid, log
            if line.startswith("itas up: "):
                say(line.removeprefix("itas up: "))
        shown = max(shown, len(complete))
        if process.poll() is not None:
            errors = [x for x in lines if x.startswith(ERROR_PREFIX)]
            why = errors[-1].removeprefix(ERROR_PREFIX) if errors else (
                f"exit status {process.returncode}; see {log}")
            raise ConfigError(f"--detach: the stack did not start: {why}")
        if time.monotonic() > deadline:
            process.terminate()
            raise ConfigError(f"--detach: not ready within {READY_TIMEOUT_S:.0f} s; "
                              f"see {log}")
        time.sleep(POLL_S)


def stop_detached(broker: str) -> int:
    """Stop the detached stack on ``broker``; its process id. ConfigError when none runs."""
    path = _record_path(broker)
    try:
        pid = int(json.loads(path.read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"no stack started with 'itas up --detach' on {broker} "
                          f"(no record in {runtime_dir()})") from None
    if not _alive(pid):
        path.unlink(missing_ok=True)
        raise ConfigError(f"the stack on {broker} (pid {pid}) had already stopped")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid) and not _reaped(pid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if _alive(pid) and not _reaped(pid):
        os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return pid


def _reaped(pid: int) -> bool:
    """A zombie child of this very process counts as stopped (reap it); others are not ours."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def detach_args(argv: Sequence[str]) -> list[str]:
    """``itas up``'s own arguments from ``sys.argv``, without ``--detach``."""
    args = list(argv[1:])
    if args and args[0] == "up":
        args = args[1:]
    return [a for a in args if a != "--detach"]
