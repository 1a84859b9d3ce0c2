"""Child processes that cannot outlive the process that started them.

``itas up``, the pool supervisor and the search start brokers and agents in
their own sessions, so a Ctrl-C meant for the parent reaches them only through
the parent's orderly shutdown. If the parent is killed outright (SIGKILL, OOM),
that shutdown never runs; the kernel's parent-death signal (Linux
``PR_SET_PDEATHSIG``) covers that case. Elsewhere this is a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


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
