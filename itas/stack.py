"""One machine's whole stack for ``itas up`` and ``itas demo``.

Starts, in order: the broker (its own process), the embedded model server when
the pool has ``local`` agents, the agent pool (supervised processes) plus an
orchestrator, and waits until every service has registered. Leaving the
context stops them in reverse order, also on Ctrl-C or cancellation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import anyio
import anyio.abc

from itas.agents.autoscale import Autoscaler
from itas.agents.pool import PoolEntry, Supervisor, load_pool, service_names
from itas.agents.ray_placement import RayPool
from itas.client import AsyncClient
from itas.deploy import serving, simulated, simulated_pool
from itas.errors import ConfigError
from itas.lifecycle import ERROR_PREFIX, child_environment, itas_command
from itas.security import CurveKeys, Roles, check_bind, generate_keys
from itas.spec import Architecture

READY_TIMEOUT_S = 120.0
BROKER_START_S = 30.0
BROKER_STOP_S = 5.0


def packaged_config(kind: str, name: str) -> Path:
    """A config shipped with itas, by name: ``packaged_config("pools", "local")``."""
    for suffix in ("", ".yaml", ".yml", ".json"):
        candidate = resources.files("itas.configs") / kind / f"{name}{suffix}"
        if candidate.is_file():
            return Path(str(candidate))
    known = sorted(Path(str(p)).stem for p in (resources.files("itas.configs") / kind).iterdir()
                   if p.name.endswith((".yaml", ".yml", ".json")))
    raise ConfigError(f"{name}: no such file, and no packaged {kind[:-1]} config of that name "
                      f"(packaged: {', '.join(known)})")


def resolve_config(kind: str, value: str | os.PathLike[str]) -> Path:
    """A path if it exists, else the packaged config of that name."""
    path = Path(value)
    return path if path.exists() else packaged_config(kind, str(value))


@dataclass(frozen=True)
class Stack:
    broker: str
    services: tuple[str, ...]
    model_url: str | None
    #: Keys the stack's own clients use (with CURVE), e.g. the gateway ``itas up`` runs.
    client_curve: CurveKeys | None = None


@dataclass(frozen=True)
class StackKeys:
    """CURVE for a whole stack: the broker's secret key file (its public ``.key`` file lies
    beside it, as ``itas keys generate`` writes them) and the allow-list directory."""

    broker_secret: Path
    allow: Path
    roles: Path | None = None

    @property
    def broker_public(self) -> Path:
        return self.broker_secret.with_suffix(".key")

    def check(self) -> None:
        CurveKeys.load(self.broker_secret, self.broker_public)
        if not self.allow.is_dir():
            raise ConfigError(f"--curve-allow {self.allow}: no such directory")
        if self.roles is not None:
            Roles.load(self.roles, self.allow)

    def write_roles(self, directory: Path, own_key_name: str) -> Path | None:
        """The roles file the stack's broker reads: the user's, plus everything for the
        stack's own key (its orchestrator calls every agent; its agents serve theirs)."""
        if self.roles is None:
            return None
        import yaml

        data = yaml.safe_load(self.roles.read_text())
        data[own_key_name] = {"serve": ["*"], "call": ["*"]}
        path = directory / "roles.yaml"
        path.write_text(yaml.safe_dump(data))
        return path


def with_orchestrator(entries: Sequence[PoolEntry]) -> list[PoolEntry]:
    if any(e.kind == "orchestrator" for e in entries):
        return list(entries)
    return [*entries, PoolEntry("orchestrator", 1, {})]


def _at_model(entry: PoolEntry, model_url: str) -> PoolEntry:
    """Point a ``local`` agent at the model server this stack started."""
    if entry.settings.get("provider") != "local" or "base_url" in entry.settings:
        return entry
    return dataclasses.replace(entry, settings={**entry.settings, "base_url": model_url})


@contextlib.asynccontextmanager
async def run_stack(pool: str | os.PathLike[str] | None, *,
                    arch: Architecture | None = None, sim: bool = False,
                    bind: str = "tcp://127.0.0.1:5555", model_threads: int = 2,
                    insecure: bool = False, keys: StackKeys | None = None,
                    report: Callable[[str], None] | None = None,
                    ray: str | None = None) -> AsyncIterator[Stack]:
    """Everything is checked before the first process starts: the pool (every entry's
    settings), the bind rule (beyond loopback only with CURVE or ``insecure``), the keys.

    The agents are the pool's (a file or packaged name) plus whatever ``arch`` needs that the
    pool does not serve (``itas.deploy.serving``); with ``sim``, every model of both is a
    simulated one of the same name (the dry run ``itas ask --sim`` calls).

    With ``keys``, the stack's own agents and its readiness check authenticate with a
    key pair made for this run only, in a private temporary directory that is removed
    when the stack stops; the broker allows it beside the keys in ``keys.allow``.

    ``report`` is told, one line at a time, what has started as each part becomes ready
    (the broker, the model server, every service as it registers), so a wait of many seconds
    shows life.
    With ``ray`` (a Ray cluster's address) the agents run as Ray actors
    (``itas.agents.ray_placement``); the broker and the model server stay on this
    machine, so ``bind`` must be an address the cluster's nodes reach. Entries with
    ``autoscale`` are sized by ``itas.agents.autoscale`` either way.
    """
    say = report or (lambda _line: None)
    check_bind(bind, curve=keys is not None, insecure=insecure)
    if keys is not None:
        keys.check()
    source = str(resolve_config("pools", pool)) if pool is not None else "--arch"
    entries = load_pool(resolve_config("pools", pool)) if pool is not None else []
    if sim:
        entries = simulated_pool(entries)
        arch = simulated(arch) if arch is not None else None
    entries = with_orchestrator(serving(entries, arch))
    services = service_names(entries, source)
    uses_local = any(e.settings.get("provider") == "local" for e in entries)
    async with contextlib.AsyncExitStack() as stack:
        broker_args: list[str] = ["--insecure"] if insecure else []
        agent_args: list[str] = []
        client_keys = None
        if keys is not None:
            own = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="itas-stack-")))
            allow = own / "allow"
            allow.mkdir()
            for public in keys.allow.glob("*.key"):
                shutil.copy(public, allow / public.name)
            _, own_secret = generate_keys(own, "itas-stack-own")
            shutil.copy(own_secret.with_suffix(".key"), allow / "itas-stack-own.key")
            broker_args += ["--curve-secret", str(keys.broker_secret), "--curve-allow",
                            str(allow)]
            roles = keys.write_roles(own, "itas-stack-own")
            if roles is not None:
                broker_args += ["--curve-roles", str(roles)]
            agent_args = ["--curve-secret", str(own_secret), "--curve-server",
                          str(keys.broker_public)]
            client_keys = CurveKeys.load(own_secret, keys.broker_public)
        output = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(output.cancel_scope.cancel)
        started = anyio.current_time()
        broker = await stack.enter_async_context(broker_process(bind, output, broker_args))
        say(f"broker listening on {broker}")
        model_url = None
        if uses_local:
            from itas.agents.providers.local import local_model_server

            say("starting the embedded model server (loading the model takes a while)")
            from itas.agents.providers.local import recording

            server = await stack.enter_async_context(local_model_server(threads=model_threads))
            stack.enter_context(recording(server))  # agents started elsewhere find it
            model_url = server.base_url
            say(f"model server ready at {model_url} ({server.load_s:.1f} s)")
            entries = [_at_model(e, model_url) for e in entries]
        runner: Supervisor | RayPool = (
            RayPool(entries, broker, ray, agent_args) if ray is not None
            else Supervisor(entries, broker, agent_args))
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        await tg.start(runner.run)
        if any(e.autoscale for e in entries):
            client = await stack.enter_async_context(AsyncClient(broker, curve=client_keys))
            stack.callback(tg.cancel_scope.cancel)  # the autoscaler stops before its client
            tg.start_soon(Autoscaler(entries, runner, client.status).run)
        say(f"{sum(e.replicas for e in entries)} agent process(es) started; waiting for "
            f"{len(services)} service(s) to register")

        def registered(service: str) -> None:
            say(f"ready: {service} ({anyio.current_time() - started:.1f} s)")

        await wait_for_services(broker, services, curve=client_keys, on_ready=registered)
        yield Stack(broker, services, model_url, client_keys)


@contextlib.asynccontextmanager
async def broker_process(bind: str, output: anyio.abc.TaskGroup,
                         extra_args: Sequence[str] = ()) -> AsyncIterator[str]:
    """A broker child; yields its endpoint once it listens. Its stderr is copied to ours
    by a task in ``output``; if it exits before listening, ConfigError quotes its error."""
    process = await anyio.open_process(
        itas_command("broker", "--bind", bind, "--parent-pid", str(os.getpid()), *extra_args),
        stdin=subprocess.DEVNULL, start_new_session=True, env=child_environment())
    try:
        assert process.stdout is not None and process.stderr is not None  # both piped
        line = b""
        with anyio.fail_after(BROKER_START_S):
            with contextlib.suppress(anyio.EndOfStream):
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive(1)
        match = re.search(rb"listening on (\S+)", line)
        if not match:
            with anyio.move_on_after(BROKER_STOP_S):
                await process.wait()
            error = (await _read_all(process.stderr)).strip().splitlines()
            why = error[-1].removeprefix(ERROR_PREFIX) if error else (
                f"exit status {process.returncode}")
            raise ConfigError(f"the broker did not start: {why}")
        output.start_soon(_copy_to_stderr, process.stderr)
        yield match.group(1).decode()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(BROKER_STOP_S):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
            await process.aclose()


async def _read_all(stream: anyio.abc.ByteReceiveStream) -> str:
    data = b""
    with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError,
                             anyio.BrokenResourceError):
        async for chunk in stream:
            data += chunk
    return data.decode(errors="replace")


async def _copy_to_stderr(stream: anyio.abc.ByteReceiveStream) -> None:
    with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
        async for chunk in stream:
            sys.stderr.write(chunk.decode(errors="replace"))
            sys.stderr.flush()


async def wait_for_services(broker: str, services: Sequence[str],
                            timeout: float = READY_TIMEOUT_S, *,
                            curve: CurveKeys | None = None,
                            on_ready: Callable[[str], None] | None = None) -> None:
    """Until every one of ``services`` has a worker; ``on_ready`` hears of each once, as it
    registers. TimeoutError after ``timeout`` s names the services still missing."""
    announced: set[str] = set()
    missing = list(services)
    async with AsyncClient(broker, curve=curve) as client:
        with anyio.move_on_after(timeout):
            while True:
                known = (await client.status())["services"]
                missing = [s for s in services if known.get(s, {}).get("workers", 0) == 0]
                for service in services:
                    if service not in missing and service not in announced:
                        announced.add(service)
                        if on_ready is not None:
                            on_ready(service)
                if not missing:
                    return
                await anyio.sleep(0.2)
    raise TimeoutError(f"services not registered within {timeout:.0f} s: "
                       f"{', '.join(missing)}")
