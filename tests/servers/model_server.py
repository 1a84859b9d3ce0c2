"""Run the embedded model server the way ``itas model serve`` will: ``serve_model`` in its own process.

``model_server_process`` starts ``serve_model(port=0)`` in a subprocess, waits
for the JSON line its ``on_ready`` callback prints (base URL and the pid of the
llama.cpp server child), yields, and stops the process with SIGTERM. Tests use
it both as a fixture (a live OpenAI-compatible server) and to check shutdown.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0

_SERVE = """
import json, sys
from itas.agents.providers.local import serve_model
def ready(server):
    print(json.dumps({"base_url": server.base_url, "pid": server.process.pid}), flush=True)
serve_model(port=0, threads=int(sys.argv[1]), on_ready=ready)
"""


@dataclass
class ServedModel:
    base_url: str
    server_pid: int  # the llama.cpp server process
    process: subprocess.Popen[str]  # the serve_model process


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def wait_gone(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def read_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            return process.stdout.readline()
        if process.poll() is not None:
            break
    raise RuntimeError(f"serve_model printed no ready line (exit code {process.poll()})")


@contextlib.contextmanager
def model_server_process(threads: int = 2) -> Iterator[ServedModel]:
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE, str(threads)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    server_pid = None
    try:
        info = json.loads(read_line(process, READY_TIMEOUT_S))
        server_pid = info["pid"]
        yield ServedModel(info["base_url"], server_pid, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if server_pid is not None and alive(server_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(server_pid, signal.SIGKILL)
        if process.stdout is not None:
            process.stdout.close()
