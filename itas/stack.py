"""One machine's whole stack for ``itas up`` and ``itas demo``.

Starts, in order: the broker (its own process), the embedded model server when
the pool has ``local`` agents, the agent pool (supervised processes) plus an
orchestrator, and waits until every service has registered. Leaving the
context stops them in reverse order, also on Ctrl-C or cancellation.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import anyio
import anyio.abc

from itas.agents.pool import PoolEntry, Supervisor, load_pool
from itas.client import AsyncClient
from itas.errors import ConfigError, ItasError

READY_TIMEOUT_S = 120.0
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


def with_orchestrator(entries: Sequence[PoolEntry]) -> list[PoolEntry]:
    if any(e.kind == "orchestrator" for e in entries):
        return list(entries)
    return [*entries, PoolEntry("orchestrator", 1, {})]


def service_names(entries: Sequence[PoolEntry]) -> tuple[str, ...]:
    """The broker services a pool registers (the techniques' one naming rule)."""
    from itas.agents.kinds import build_agent

    names = []
    for entry in entries:
        if entry.replicas:
            names.append(build_agent(entry.kind, entry.settings).service)
    return tuple(dict.fromkeys(names))


def _at_model(entry: PoolEntry, model_url: str) -> PoolEntry:
    """Point a ``local`` agent at the model server this stack started."""
    if entry.settings.get("provider") != "local" or "base_url" in entry.settings:
        return entry
    return PoolEntry(entry.kind, entry.replicas, {**entry.settings, "base_url": model_url})


@contextlib.asynccontextmanager
async def run_stack(pool: str | os.PathLike[str], *, bind: str = "tcp://127.0.0.1:5555",
                    model_threads: int = 2) -> AsyncIterator[Stack]:
    entries = with_orchestrator(load_pool(resolve_config("pools", pool)))
    services = service_names(entries)
    uses_local = any(e.settings.get("provider") == "local" for e in entries)
    async with contextlib.AsyncExitStack() as stack:
        broker = await stack.enter_async_context(broker_process(bind))
        model_url = None
        if uses_local:
            from itas.agents.providers.local import local_model_server

            server = await stack.enter_async_context(local_model_server(threads=model_threads))
            model_url = server.base_url
            entries = [_at_model(e, model_url) for e in entries]
        supervisor = Supervisor(entries, broker)
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        await tg.start(supervisor.run)
        await wait_for_services(broker, services)
        yield Stack(broker, services, model_url)


@contextlib.asynccontextmanager
async def broker_process(bind: str) -> AsyncIterator[str]:
    process = await anyio.open_process(
        [sys.executable, "-m", "itas", "broker", "--bind", bind, "--parent-pid",
         str(os.getpid())],
        stdin=subprocess.DEVNULL, stderr=None, start_new_session=True)
    try:
        assert process.stdout is not None
        line = b""
        with anyio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive(1)
                line += chunk
        match = re.search(rb"listening on (\S+)", line)
        if not match:
            raise ItasError(f"broker did not start: {line!r}")
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


async def wait_for_services(broker: str, services: Sequence[str],
                            timeout: float = READY_TIMEOUT_S) -> None:
    async with AsyncClient(broker) as client:
        with anyio.fail_after(timeout):
            while True:
                known = (await client.status())["services"]
                missing = [s for s in services if known.get(s, {}).get("workers", 0) == 0]
                if not missing:
                    return
                await anyio.sleep(0.2)
