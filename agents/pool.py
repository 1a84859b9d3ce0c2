"""The pool supervisor: starts the agent processes a pool file lists and keeps them up.

A pool file (YAML)::

    agents:
      - kind: echo            # a kind from itas.agents.kinds
        replicas: 2
        settings: {credit: 50}
      - kind: sleep
        autoscale: {min: 1, max: 8, target_waiting: 2}   # itas.agents.autoscale
        placement:            # used by --ray only (itas.agents.ray_placement)
          num_cpus: 1
          resources: {gpu_box: 1}
          spread: true
          max_restarts: -1

Each replica is its own OS process (``python -m itas agent ...``), so a crash
takes down one replica, which is restarted with exponential backoff. SIGTERM or
SIGINT stops every child (SIGTERM, then SIGKILL after a grace period). Scaling
out is running this on more machines pointed at the same broker.
"""

from __future__ import annotations

import itertools
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
class Autoscale:
    """Replica bounds and the load a replica may carry, for ``itas.agents.autoscale``.

    ``target_waiting`` is how many requests may wait per replica beyond what its
    credit runs at once before the service grows."""

    min: int
    max: int
    target_waiting: float = 1.0
    scale_down_after_s: float = 30.0


@dataclass(frozen=True)
class Placement:
    """Where and how replicas run on Ray; each field is one of Ray's actor options
    (``num_cpus``, ``num_gpus``, ``resources``, ``label_selector``, ``max_restarts``,
    ``scheduling_strategy="SPREAD"``), passed through as is."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: Mapping[str, float] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    spread: bool = False
    max_restarts: int = -1  # Ray's meaning: -1 restarts forever


@dataclass(frozen=True)
class PoolEntry:
    kind: str
    replicas: int = 1
    settings: Mapping[str, Any] = field(default_factory=dict)
    autoscale: Autoscale | None = None
    placement: Placement = field(default_factory=Placement)


ENTRY_FIELDS = ("kind", "replicas", "settings", "autoscale", "placement")


def _number(where: str, value: Any, *, low: float, integer: bool = False) -> Any:
    if (isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
            or value < low):
        raise ConfigError(f"{where}: must be {'an integer' if integer else 'a number'} "
                          f">= {low:g}, got {value!r}")
    return value


def _mapping(where: str, value: Any, allowed: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = set(value) - set(allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; "
                          f"allowed: {', '.join(allowed)}")
    return value


def parse_autoscale(data: Any, where: str) -> Autoscale:
    item = _mapping(where, data, ("min", "max", "target_waiting", "scale_down_after_s"))
    low = _number(f"{where}.min", item.get("min", 1), low=0, integer=True)
    high = _number(f"{where}.max", item.get("max", max(low, 1)), low=1, integer=True)
    if high < low:
        raise ConfigError(f"{where}: max ({high}) is below min ({low})")
    return Autoscale(low, high, float(_number(f"{where}.target_waiting",
                                              item.get("target_waiting", 1.0), low=0)),
                     float(_number(f"{where}.scale_down_after_s",
                                   item.get("scale_down_after_s", 30.0), low=0)))


def parse_placement(data: Any, where: str) -> Placement:
    item = _mapping(where, data, ("num_cpus", "num_gpus", "resources", "labels", "spread",
                                  "max_restarts"))
    resources = item.get("resources") or {}
    if not isinstance(resources, dict):
        raise ConfigError(f"{where}.resources: expected a mapping of name: amount")
    for name, amount in resources.items():
        _number(f"{where}.resources.{name}", amount, low=0)
    labels = item.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ConfigError(f"{where}.labels: expected a mapping of label: value")
    spread = item.get("spread", False)
    if not isinstance(spread, bool):
        raise ConfigError(f"{where}.spread: must be true or false")
    return Placement(float(_number(f"{where}.num_cpus", item.get("num_cpus", 1.0), low=0)),
                     float(_number(f"{where}.num_gpus", item.get("num_gpus", 0.0), low=0)),
                     {str(k): float(v) for k, v in resources.items()},
                     {str(k): v for k, v in labels.items()}, spread,
                     _number(f"{where}.max_restarts", item.get("max_restarts", -1), low=-1,
                             integer=True))


def parse_pool(data: Any, source: str = "pool") -> list[PoolEntry]:
    """Validate a pool mapping; errors name the file, entry and field."""
    if not isinstance(data, dict) or not isinstance(data.get("agents"), list):
        raise ConfigError(f"{source}: expected a mapping with an 'agents' list")
    entries = []
    for i, item in enumerate(data["agents"], 1):
        where = f"{source}: agents[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a mapping")
        _mapping(where, item, ENTRY_FIELDS)
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
        autoscale = None
        if item.get("autoscale") is not None:
            autoscale = parse_autoscale(item["autoscale"], f"{where}.autoscale")
            if "replicas" not in item:  # an autoscaled service starts at its minimum
                replicas = autoscale.min
            if not autoscale.min <= replicas <= autoscale.max:
                raise ConfigError(f"{where}.replicas: {replicas} is outside autoscale "
                                  f"bounds {autoscale.min}..{autoscale.max}")
        placement = parse_placement(item.get("placement") or {}, f"{where}.placement")
        entries.append(PoolEntry(kind, replicas, settings, autoscale, placement))
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
    """Runs and restarts replicas; ``run()`` returns once every child has stopped.

    ``scale()`` changes an entry's replica count while running (the autoscaler's lever):
    new replicas start at once; removed ones get SIGTERM, so each stops taking work,
    finishes what it runs and says goodbye (``itas.agents.runtime``) before it exits,
    and is not restarted."""

    def __init__(self, entries: Sequence[PoolEntry], broker: str,
                 extra_args: Sequence[str] = ()) -> None:
        self.entries = list(entries)
        self.broker = broker
        self.extra_args = list(extra_args)
        self.processes: dict[tuple[int, int], anyio.abc.Process] = {}
        self.restarts = 0
        self._live: dict[int, list[int]] = {i: [] for i in range(len(self.entries))}
        self._next_id = itertools.count()
        self._retiring: set[tuple[int, int]] = set()
        self._group: anyio.abc.TaskGroup | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._group = tg
                for i, entry in enumerate(self.entries):
                    await self.scale(i, entry.replicas)
                task_status.started()
        finally:
            self._group = None
            with anyio.CancelScope(shield=True):
                await self._stop_all()

    def replicas(self, index: int) -> int:
        return len(self._live[index])

    async def scale(self, index: int, replicas: int) -> None:
        """Grow or shrink entry ``index`` to ``replicas`` (newest replicas leave first)."""
        if self._group is None:
            raise RuntimeError("Supervisor.scale: the supervisor is not running")
        live = self._live[index]
        while len(live) < replicas:
            replica = next(self._next_id)
            live.append(replica)
            self._group.start_soon(self._keep_running, index, replica, self.entries[index])
        while len(live) > replicas:
            key = (index, live.pop())
            self._retiring.add(key)
            process = self.processes.get(key)
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)  # drain: finish in-flight, then exit

    async def _keep_running(self, index: int, replica: int, entry: PoolEntry) -> None:
        key = (index, replica)
        backoff = RESTART_MIN_S
        command = agent_command(entry, self.broker, self.extra_args)
        settings = json.dumps(dict(entry.settings)).encode()
        while key not in self._retiring:
            started = anyio.current_time()
            process = await anyio.open_process(command, stdin=subprocess.PIPE, stdout=None,
                                               stderr=subprocess.PIPE, env=child_environment())
            self.processes[key] = process
            if key in self._retiring:  # retired while it was starting
                process.send_signal(signal.SIGTERM)
            await _hand_over(process, settings)
            error = await _forward_stderr(process)
            code = await process.wait()
            del self.processes[key]
            if key in self._retiring:
                break
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
        self._retiring.discard(key)

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
