"""Pool replicas as Ray actors: Ray places and restarts them, itas does the rest.

``itas agents --ray ADDRESS --pool FILE`` connects to a running Ray cluster as a
driver and starts one actor per replica. Each actor runs the ordinary agent
process (``python -m itas agent``, settings on stdin) on the node Ray chose, so
the process boundary and the ZeroMQ connection to the broker are exactly those of
a local pool; the broker may run inside the cluster or outside it, as long as
every node reaches its endpoint.

Placement and restarts are Ray's, not re-implemented: the pool entry's
``placement`` maps one to one onto actor options (``num_cpus``, ``num_gpus``,
``resources``, ``labels`` -> ``label_selector``, ``spread`` -> the SPREAD
scheduling strategy, ``max_restarts``). When a node dies, its actors die with it,
and Ray starts them again on a node that has the resources, within
``max_restarts``; the broker meanwhile notices the lost workers (heartbeat) and
hands their in-flight requests to other replicas. If the agent process alone
exits, its actor exits too, so that restart also goes through Ray's policy.

The actors belong to this driver: when it stops (SIGTERM), every replica drains
(finishes in-flight work and says goodbye) and the actors are removed. A loopback
ADDRESS keeps the driver on loopback as well (Ray would otherwise announce the
machine's network address; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set for it).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.abc

from itas.agents.pool import Placement, PoolEntry, agent_command
from itas.errors import ConfigError
from itas.lifecycle import child_environment, preexec_die_with_parent

log = logging.getLogger("itas.ray")

INSTALL_HINT = "--ray needs Ray on this machine and on every node: pip install 'itas[ray]'"
DRAIN_TIMEOUT_S = 40.0
NODE_CHECK_S = 0.5
CONNECT_CHECK_S = 5.0
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray(address: str) -> Any:
    """Import Ray (an optional extra); a loopback address keeps Ray on loopback."""
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:  # read by Ray at import: use 127.0.0.1, not the machine's address
        os.environ.setdefault(LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc
    return ray


def check_reachable(address: str, timeout: float = CONNECT_CHECK_S) -> None:
    """Fail at once, in one line, when nothing listens at ``address`` (HOST:PORT of the
    head's GCS): ``ray.init`` would retry such an address for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--ray {address!r}: expected HOST:PORT of the Ray head "
                          "(e.g. 127.0.0.1:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"--ray {address}: no Ray cluster answers there "
                          f"({exc.strerror or exc})") from exc


def actor_options(placement: Placement) -> dict[str, Any]:
    """Ray actor options for one pool entry's replicas."""
    options: dict[str, Any] = {
        "num_cpus": placement.num_cpus,
        "num_gpus": placement.num_gpus,
        "max_restarts": placement.max_restarts,
        "max_concurrency": 4,  # drain and where() run while the actor watches its agent
    }
    if placement.resources:
        options["resources"] = dict(placement.resources)
    if placement.labels:
        options["label_selector"] = dict(placement.labels)
    if placement.spread:
        options["scheduling_strategy"] = "SPREAD"
    return options


class AgentProcess:
    """The Ray actor: one ``itas agent`` process, for as long as the actor lives.

    Its agent process dies with it (parent-death signal). If the agent exits on its
    own, the actor exits as well, so Ray's ``max_restarts`` decides what happens next.
    """

    def __init__(self, entry: PoolEntry, broker: str, extra_args: Sequence[str]) -> None:
        import ray

        self.node_id: str = ray.get_runtime_context().get_node_id()
        name = f"{entry.kind}/ray-node-{self.node_id[:12]}/{os.getpid()}"
        command = agent_command(entry, broker, [*extra_args, "--name", name])
        self._draining = False
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE,
                                        env=child_environment(),
                                        preexec_fn=preexec_die_with_parent)  # noqa: PLW1509
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(dict(entry.settings)).encode())
        self.process.stdin.close()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        """End the actor when its agent exits, and the agent when the node's raylet dies.

        A Ray worker outlives a killed raylet (it is re-parented), and so would its agent,
        still serving from a node Ray counts as dead while Ray starts a replacement
        elsewhere. The raylet is the worker's parent, so its death shows as a new ppid.
        """
        raylet = os.getppid()
        while True:
            try:
                code = self.process.wait(timeout=NODE_CHECK_S)
                break
            except subprocess.TimeoutExpired:
                if os.getppid() != raylet and not self._draining:
                    log.warning("the raylet is gone: draining the agent, ending the actor")
                    self.drain()
                    os._exit(1)
        if not self._draining:  # the agent died under us: let Ray restart the actor
            log.warning("agent process exited with %s; ending its actor", code)
            os._exit(1)

    def where(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "pid": self.process.pid}

    def drain(self) -> int:
        """SIGTERM the agent and wait: it finishes in-flight work and says goodbye."""
        self._draining = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=DRAIN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


class RayPool:
    """A pool's replicas as Ray actors; a ``Scaler`` for ``itas.agents.autoscale``."""

    def __init__(self, entries: Sequence[PoolEntry], broker: str, address: str,
                 extra_args: Sequence[str] = ()) -> None:
        self.entries = list(entries)
        self.broker = broker
        self.address = address
        self.extra_args = list(extra_args)
        self.ray = import_ray(address)
        check_reachable(address)
        self._actor_class: Any = None
        self.actors: dict[int, list[Any]] = {i: [] for i in range(len(self.entries))}

    def connect(self) -> None:
        ray = self.ray
        try:
            ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"--ray {self.address}: cannot join the Ray cluster "
                              f"({exc})") from exc
        self._actor_class = ray.remote(AgentProcess)

    def replicas(self, index: int) -> int:
        return len(self.actors[index])

    async def scale(self, index: int, replicas: int) -> None:
        entry, actors = self.entries[index], self.actors[index]
        options = actor_options(entry.placement)
        while len(actors) < replicas:
            actors.append(self._actor_class.options(**options).remote(
                entry, self.broker, self.extra_args))
        leaving = []
        while len(actors) > replicas:
            leaving.append(actors.pop())
        await self._drain(leaving)

    async def _drain(self, actors: list[Any]) -> None:
        """Drain each actor's agent, then remove the actor for good (no restart)."""
        async def one(actor: Any) -> None:
            try:
                with anyio.move_on_after(DRAIN_TIMEOUT_S + 5):
                    await actor.drain.remote()
            except self.ray.exceptions.RayError as exc:  # its node is gone: nothing to drain
                log.info("drain: %s", exc)
            self.ray.kill(actor, no_restart=True)

        async with anyio.create_task_group() as tg:
            for actor in actors:
                tg.start_soon(one, actor)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Start every entry's replicas; on cancellation drain them all and leave Ray."""
        await anyio.to_thread.run_sync(self.connect)
        try:
            for i, entry in enumerate(self.entries):
                await self.scale(i, entry.replicas)
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                everyone = [a for actors in self.actors.values() for a in actors]
                for actors in self.actors.values():
                    actors.clear()
                await self._drain(everyone)
                self.ray.shutdown()
