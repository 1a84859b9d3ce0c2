"""Child processes: they run the same code as their parent and cannot outlive it.

``itas up``, the pool supervisor and the search start brokers and agents in
their own sessions, so a Ctrl-C meant for the parent reaches them only through
the parent's orderly shutdown. If the parent is killed outright (SIGKILL, OOM),
that shutdown never runs; the kernel's parent-death signal (Linux
``PR_SET_PDEATHSIG``) covers that case. Elsewhere this is a no-op.

Every child runs ``itas_command(...)`` with ``child_environment()``: the same
interpreter and the same import path as the parent, independent of the current
directory. A child that fails on its configuration exits with
``EXIT_USER_ERROR`` (the CLI's "itas: error: ..." exit status), which the pool
supervisor takes as a reason to give up rather than restart.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Mapping

PR_SET_PDEATHSIG = 1
EXIT_USER_ERROR = 2
ERROR_PREFIX = "itas: error: "  # how the CLI starts its one line about such an error


def die_with_parent(parent_pid: int, sig: signal.Signals = signal.SIGTERM) -> None:
    """Have ``sig`` sent to this process when ``parent_pid`` (our parent) dies.

    Call it first thing in the child. If the parent is already gone, the signal
    is sent at once, since the kernel would not send it any more.
    """
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)


def preexec_die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """``die_with_parent`` for ``subprocess.Popen(preexec_fn=...)``: runs before exec."""
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def python_command() -> list[str]:
    """This interpreter, told not to put the current directory first on its import path
    (``-P``): a child started from a source checkout would otherwise import ``itas/`` from
    that checkout and ``itas.broker`` from the installed package."""
    return [sys.executable, "-P"]


def itas_command(*args: str) -> list[str]:
    """``python -m itas ARGS`` for a child process (``itas up``, the pool, the search)."""
    return [*python_command(), "-m", "itas", *args]


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus its import path as ``PYTHONPATH``, so a child
    started with ``python_command()`` imports exactly the modules this process does,
    whatever directory it runs in."""
    path = [os.path.abspath(entry) if entry else os.getcwd() for entry in sys.path]
    path = [entry for entry in dict.fromkeys(path) if os.path.exists(entry)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), **(extra or {})}
