"""The pool supervisor: starts the agent processes a pool file lists and keeps them up.

A pool file (YAML)::

    agents:
      - kind: echo            # a kind from itas.agents.kinds
        replicas: 2
        settings: {credit: 50}

Each replica is its own OS process (``python -m itas agent ...``), so a crash
takes down one replica, which is restarted with exponential backoff. SIGTERM or
SIGINT stops every child (SIGTERM, then SIGKILL after a grace period). Scaling
out is running this on more machines pointed at the same broker.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import yaml

from itas.agents.kinds import KINDS, build_agent
from itas.errors import ConfigError
from itas.lifecycle import ERROR_PREFIX, EXIT_USER_ERROR, child_environment, itas_command

log = logging.getLogger("itas.pool")

RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
HEALTHY_AFTER_S = 10.0  # a replica that ran this long resets its backoff
STOP_GRACE_S = 10.0
LAST_LINE_BYTES = 2000


@dataclass(frozen=True)
class PoolEntry:
    kind: str
    replicas: int = 1
    settings: Mapping[str, Any] = field(default_factory=dict)


def parse_pool(data: Any, source: str = "pool") -> list[PoolEntry]:
    """Validate a pool mapping; errors name the file, entry and field."""
    if not isinstance(data, dict) or not isinstance(data.get("agents"), list):
        raise ConfigError(f"{source}: expected a mapping with an 'agents' list")
    entries = []
    for i, item in enumerate(data["agents"], 1):
        where = f"{source}: agents[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = set(item) - {"kind", "replicas", "settings"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; "
                              "allowed: kind, replicas, settings")
        kind = item.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{where}.kind: unknown agent kind {kind!r}; "
                              f"known kinds: {', '.join(sorted(KINDS))}")
        replicas = item.get("replicas", 1)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ConfigError(f"{where}.replicas: must be a non-negative integer")
        settings = item.get("settings") or {}
        if not isinstance(settings, dict):
            raise ConfigError(f"{where}.settings: expected a mapping")
        entries.append(PoolEntry(kind, replicas, settings))
    return entries


def load_pool(path: str | Path) -> list[PoolEntry]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read pool file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    return parse_pool(data, str(path))


def service_names(entries: Sequence[PoolEntry], source: str = "pool") -> tuple[str, ...]:
    """The broker services a pool registers, building every entry's agent in this
    process first (nothing is started), so any bad setting is found before a replica
    starts; the error names the entry."""
    names = []
    for i, entry in enumerate(entries, 1):
        try:
            agent = build_agent(entry.kind, entry.settings)
        except ConfigError as exc:
            raise ConfigError(f"{source}: agents[{i}] ({entry.kind}): {exc}") from exc
        if entry.replicas:
            names.append(agent.service)
    return tuple(dict.fromkeys(names))


def agent_command(entry: PoolEntry, broker: str, extra_args: Sequence[str] = ()) -> list[str]:
    """The replica's argv: its settings come on stdin, and it exits with this process,
    even if this one is killed outright."""
    return itas_command("agent", "--kind", entry.kind, "--broker", broker, "--settings", "-",
                        "--parent-pid", str(os.getpid()), *extra_args)


class Supervisor:
    """Runs and restarts replicas; ``run()`` returns once every child has stopped."""

    def __init__(self, entries: Sequence[PoolEntry], broker: str,
                 extra_args: Sequence[str] = ()) -> None:
        self.entries = list(entries)
        self.broker = broker
        self.extra_args = list(extra_args)
        self.processes: dict[tuple[int, int], anyio.abc.Process] = {}
        self.restarts = 0

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        try:
            async with anyio.create_task_group() as tg:
                for i, entry in enumerate(self.entries):
                    for replica in range(entry.replicas):
                        tg.start_soon(self._keep_running, i, replica, entry)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop_all()

    async def _keep_running(self, index: int, replica: int, entry: PoolEntry) -> None:
        backoff = RESTART_MIN_S
        command = agent_command(entry, self.broker, self.extra_args)
        settings = json.dumps(dict(entry.settings)).encode()
        while True:
            started = anyio.current_time()
            process = await anyio.open_process(command, stdin=subprocess.PIPE, stdout=None,
                                               stderr=subprocess.PIPE, env=child_environment())
            self.processes[(index, replica)] = process
            await _hand_over(process, settings)
            error = await _forward_stderr(process)
            code = await process.wait()
            del self.processes[(index, replica)]
            ran = anyio.current_time() - started
            if code == EXIT_USER_ERROR and ran < HEALTHY_AFTER_S:
                raise ConfigError(f"agent {entry.kind} #{replica} exited at start: "
                                  f"{error or f'exit status {code}'}")
            if ran > HEALTHY_AFTER_S:
                backoff = RESTART_MIN_S
            log.warning("agent %s #%d exited with %s%s; restarting in %.1f s",
                        entry.kind, replica, code, f" ({error})" if error else "", backoff)
            self.restarts += 1
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_MAX_S)

    async def _stop_all(self) -> None:
        processes = list(self.processes.values())
        self.processes.clear()
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(STOP_GRACE_S):
            for process in processes:
                await process.wait()
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _hand_over(process: anyio.abc.Process, settings: bytes) -> None:
    """Write the settings to the replica's stdin and close it; a replica that died
    before reading them is reported by its exit status instead."""
    assert process.stdin is not None  # opened with stdin=PIPE
    try:
        await process.stdin.send(settings)
        await process.stdin.aclose()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass


async def _forward_stderr(process: anyio.abc.Process) -> str:
    """Copy the replica's stderr to ours line by line until it closes, except its
    "itas: error: ..." line: that one is returned (without the prefix), and the supervisor
    reports it once, naming the replica."""
    assert process.stderr is not None  # opened with stderr=PIPE
    pending, error = b"", ""

    def take(line: bytes) -> None:
        nonlocal error
        text = line.decode(errors="replace")
        if text.startswith(ERROR_PREFIX):
            error = text.removeprefix(ERROR_PREFIX).strip()
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    async for chunk in process.stderr:
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            take(line)
        if len(pending) > LAST_LINE_BYTES:  # a line without end costs no memory
            take(pending)
            pending = b""
    if pending:
        take(pending)
    return error
