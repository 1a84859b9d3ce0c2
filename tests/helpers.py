"""Running the real thing in tests: broker and agents as OS processes on loopback.

Every process a test starts is registered with ``Processes`` and is stopped
(SIGTERM, then SIGKILL) at teardown, so no test leaves a process behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from itas.client import Client

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data"
FAST_HEARTBEAT = 0.2


class Processes:
    """Starts itas processes in their own sessions and guarantees they end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def spawn(self, *args: str, env: dict[str, str] | None = None, module: str = "itas"
              ) -> subprocess.Popen[str]:
        """``python -m <module> <args>`` (default: the itas CLI) in its own session."""
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True, cwd=REPO, env={**os.environ, **(env or {})},
        )
        self.started.append(proc)
        return proc

    def broker(self, bind: str = "tcp://127.0.0.1:0", *extra: str) -> Broker:
        return Broker(self, bind, extra)

    def agent(self, broker: str, kind: str, settings: dict | None = None, *extra: str
              ) -> subprocess.Popen[str]:
        return self.spawn("agent", "--kind", kind, "--broker", broker, "--heartbeat",
                          str(FAST_HEARTBEAT), "--settings", json.dumps(settings or {}), *extra)

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.started:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


class Broker:
    """A broker process; ``restart()`` brings it back on the same endpoint."""

    def __init__(self, procs: Processes, bind: str, extra: tuple[str, ...]) -> None:
        self.procs, self.extra = procs, extra
        self.endpoint = self._start(bind)

    def _start(self, bind: str) -> str:
        self.proc = self.procs.spawn("broker", "--bind", bind, "--heartbeat",
                                     str(FAST_HEARTBEAT), *self.extra)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"listening on (\S+)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"broker did not start: {line!r} {self.proc.stderr.read()!r}")
        return match.group(1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=10)

    def restart(self) -> None:
        self._start(self.endpoint)


def wait_for_workers(endpoint: str, service: str, count: int, timeout: float = 20.0,
                     **client_options: object) -> dict:
    """Poll the broker's status until ``service`` has ``count`` workers."""
    deadline = time.monotonic() + timeout
    with Client(endpoint, **client_options) as client:
        while True:
            info = client.status()
            workers = info["services"].get(service, {}).get("workers", 0)
            if workers == count:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service}: {workers} workers, wanted {count}: {info}")
            time.sleep(0.1)
