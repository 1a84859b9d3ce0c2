"""The ``itas`` command line: thin wrappers that parse options and call the library.

One error boundary (``main``): every option is checked while it is parsed
(``itas.validate``: endpoints, ports, ranges, files), before a verb starts a
socket or a process; a bad value, a missing file, an ItasError from the library
or a zmq/OS error it let through ends as one line on stderr, ``itas: error:
...``, naming the option, with exit status 2 (``EXIT_USER_ERROR``). Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import os
import sys
import typing
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from itas import validate
from itas.errors import (
    BrokerUnreachable,
    ConfigError,
    ItasError,
    ServiceUnavailable,
    leaf_exceptions,
)
from itas.lifecycle import ERROR_PREFIX, EXIT_USER_ERROR
from itas.logs import DEFAULT_LOG_LEVEL, LOG_LEVEL_ENV, LOG_LEVELS, parse_level, setup_logging

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Inference-time architectures over LLMs as a mesh of ZeroMQ agents.")
keys_app = typer.Typer(no_args_is_help=True, help="CURVE key management.")
app.add_typer(keys_app, name="keys")
model_app = typer.Typer(no_args_is_help=True, help="The embedded local model.")
app.add_typer(model_app, name="model")
cache_app = typer.Typer(no_args_is_help=True, help="The on-disk response cache "
                                                   "(ITAS_CACHE_DIR, ITAS_CACHE_MAX_MB).")
app.add_typer(cache_app, name="cache")


def _checked(check: Callable[[Any], Any]) -> Callable[..., Any]:
    """An option callback running ``check``; its ConfigError becomes click's
    "Invalid value for '--option': ..." (one line, from ``main``)."""

    def callback(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        if value is None or ctx.resilient_parsing:
            return value
        try:
            if isinstance(value, list):
                return [check(v) for v in value]
            return check(value)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint=_named(ctx, param)) from None

    return callback


def _named(ctx: typer.Context, param: typer.CallbackParam) -> str:
    """The option as the user gave it: ``'--bind'``, or ``'--bind' (from ITAS_BIND)`` when
    its value came from the environment."""
    name = f"'{param.opts[0]}'" if param.opts else repr(param.name)
    variables = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
    source = ctx.get_parameter_source(param.name or "")
    if source is not None and source.name == "ENVIRONMENT":
        used = next((v for v in variables if v and os.environ.get(v)), None)
        if used:
            return f"{name} (from {used})"
    return name


CONNECT = _checked(partial(validate.endpoint, bind=False))
BIND = _checked(partial(validate.endpoint, bind=True))
POSITIVE = _checked(validate.positive)
AT_LEAST_1 = _checked(partial(validate.at_least, low=1))
FILE = _checked(validate.existing_file)
DIRECTORY = _checked(validate.existing_dir)

BrokerOpt = Annotated[str, typer.Option("--broker", "-b", envvar="ITAS_BROKER", callback=CONNECT,
                                        help="Broker endpoint to connect to.")]
CurveSecretOpt = Annotated[Path | None, typer.Option(
    "--curve-secret", envvar="ITAS_CURVE_SECRET", callback=FILE,
    help="This side's CURVE .key_secret file.")]
CurveServerOpt = Annotated[Path | None, typer.Option(
    "--curve-server", envvar="ITAS_CURVE_SERVER", callback=FILE,
    help="The broker's public .key file.")]
BrokerSecretOpt = Annotated[Path | None, typer.Option(
    "--curve-secret", callback=FILE, help="The broker's .key_secret file.")]
CurveAllowOpt = Annotated[Path | None, typer.Option(
    "--curve-allow", callback=DIRECTORY,
    help="Directory of allowed client/agent public .key files.")]
CurveRolesOpt = Annotated[Path | None, typer.Option(
    "--curve-roles", callback=FILE,
    help="YAML roles file: which services each allowed key may serve and call.")]
InsecureOpt = Annotated[bool, typer.Option(
    help="Allow binding beyond loopback without CURVE.")]
HeartbeatOpt = Annotated[float, typer.Option(callback=POSITIVE,
                                             help="Heartbeat interval, seconds.")]
ArchOpt = Annotated[str | None, typer.Option(
    "--arch", help="Architecture file or packaged name: start the agents it needs.")]
SimOpt = Annotated[bool, typer.Option(
    "--sim", help="Dry run: every model replaced by a simulated one of the same name.")]
DEFAULT_BROKER = "tcp://127.0.0.1:5555"
#: Where a broker binds: ITAS_BIND, else ITAS_BROKER (the endpoint clients are told to use,
#: so ``export ITAS_BROKER=...; itas up; itas ask ...`` meet on one port).
BIND_ENVS = ["ITAS_BIND", "ITAS_BROKER"]
BindOpt = Annotated[str, typer.Option(
    "--bind", envvar=BIND_ENVS, callback=BIND,
    help="Broker endpoint to bind; port 0 picks a free port.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON document "
                                                      "on stdout (progress stays on stderr).")]
ParentPidOpt = Annotated[int | None, typer.Option(
    hidden=True, help="Exit when this process (the one that started us) dies.")]
DEMO_TIMEOUT_S = 900.0
SETTINGS_FROM_STDIN = "-"
SIGNAL_EXIT_BASE = 128  # the shell's convention: stopped by signal N exits 128 + N


def _client_keys(secret: Path | None, server: Path | None) -> Any:
    from itas.security import CurveKeys

    if secret is None and server is None:
        return None
    if secret is None or server is None:
        raise ConfigError("CURVE needs both --curve-secret and --curve-server")
    return CurveKeys.load(secret, server)


def _follow_parent(parent_pid: int | None) -> None:
    if parent_pid is not None:
        from itas.lifecycle import die_with_parent

        die_with_parent(parent_pid)


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option}: not valid JSON ({exc})") from exc
    if not isinstance(parsed, dict):
        raise ConfigError(f"{option}: expected a JSON object")
    return parsed


@app.command()
def broker(
    bind: BindOpt = DEFAULT_BROKER,
    heartbeat: HeartbeatOpt = 1.0,
    liveness: Annotated[int, typer.Option(callback=AT_LEAST_1,
                                          help="Heartbeats missed before a worker is dropped.")
                        ] = 3,
    max_attempts: Annotated[int, typer.Option(callback=AT_LEAST_1,
                                              help="Workers tried per request before failing.")
                            ] = 3,
    unavailable_grace: Annotated[float, typer.Option(
        callback=POSITIVE, help="Seconds a request waits for a service with no worker at all "
        "before failing with 'no worker serves ...'.")] = 5.0,
    curve_secret: BrokerSecretOpt = None,
    curve_allow: CurveAllowOpt = None,
    curve_roles: CurveRolesOpt = None,
    insecure: InsecureOpt = False,
    metrics_port: Annotated[int | None, typer.Option(
        min=0, max=65535, help="Serve Prometheus metrics on this port (0: a free one).")
                            ] = None,
    metrics_host: Annotated[str, typer.Option(
        help="Address for the metrics endpoint.")] = "127.0.0.1",
    metrics_allow_remote: Annotated[bool, typer.Option(
        help="Allow a metrics address beyond loopback.")] = False,
    parent_pid: ParentPidOpt = None,
) -> None:
    """Run the ZeroMQ broker until SIGINT/SIGTERM."""
    import zmq

    from itas.broker.metrics import BrokerMetrics, check_metrics_host
    from itas.broker.server import BrokerServer, run_broker
    from itas.security import CurveKeys, Roles

    _follow_parent(parent_pid)
    if (curve_secret is None) != (curve_allow is None):
        raise ConfigError("CURVE needs both --curve-secret and --curve-allow")
    if curve_roles is not None and curve_allow is None:
        raise ConfigError("--curve-roles needs CURVE: --curve-secret and --curve-allow")
    keys = CurveKeys.load(curve_secret) if curve_secret else None
    roles = Roles.load(curve_roles, curve_allow) if curve_roles and curve_allow else None
    metrics = None
    if metrics_port is not None:
        check_metrics_host(metrics_host, allow_remote=metrics_allow_remote)
        metrics = BrokerMetrics()
    try:
        server = BrokerServer(bind, curve=keys, curve_allow=curve_allow, insecure=insecure,
                              roles=roles,
                              heartbeat_interval=heartbeat, liveness=liveness,
                              max_attempts=max_attempts, unavailable_grace=unavailable_grace,
                              metrics=metrics)
    except zmq.ZMQError as exc:  # the address is taken, or not this machine's
        raise ConfigError(f"--bind {bind}: cannot bind ({exc.strerror})") from exc
    if metrics is not None and metrics_port is not None:
        try:
            metrics.serve(metrics_host, metrics_port)
        except ConfigError:
            server.close()
            raise
    run_broker(server)


@app.command()
def agent(
    kind: Annotated[str, typer.Option(help="Agent kind, e.g. echo, sleep, generator.")],
    broker: BrokerOpt = DEFAULT_BROKER,
    settings: Annotated[str, typer.Option(
        help="Agent settings as a JSON object, or '-' to read them from stdin (for anything "
             "secret: a command line is visible to every user).")] = "{}",
    name: Annotated[str | None, typer.Option(help="Worker name shown in status.")] = None,
    heartbeat: HeartbeatOpt = 1.0,
    curve_secret: CurveSecretOpt = None,
    curve_server: CurveServerOpt = None,
    parent_pid: ParentPidOpt = None,
) -> None:
    """Run one agent process until SIGINT/SIGTERM."""
    import anyio

    from itas.agents.kinds import build_agent
    from itas.agents.runtime import Worker

    _follow_parent(parent_pid)
    if settings == SETTINGS_FROM_STDIN:
        parsed = _json_object(sys.stdin.read(), "--settings (stdin)")
    else:
        parsed = _json_object(settings, "--settings")
        secrets = validate.secret_names(parsed)
        if secrets:
            raise ConfigError(f"--settings: {', '.join(secrets)} looks like a secret, and a "
                              "command line is visible to every user; pass settings on stdin "
                              "(--settings -) or keys in the provider's environment variable")
    built = build_agent(kind, parsed)
    logging.getLogger("itas.agent").info("agent %s, settings %s", kind,
                                         json.dumps(validate.redacted(parsed)))
    worker = Worker(built, broker, name=name, heartbeat_interval=heartbeat,
                    curve=_client_keys(curve_secret, curve_server))
    anyio.run(worker.run)


@app.command()
def agents(
    pool: Annotated[Path | None, typer.Option(
        callback=FILE, help="Pool file (YAML) listing agent kinds and replicas.")] = None,
    arch: ArchOpt = None,
    sim: SimOpt = False,
    broker: BrokerOpt = DEFAULT_BROKER,
    curve_secret: CurveSecretOpt = None,
    curve_server: CurveServerOpt = None,
    autoscale_interval: Annotated[float, typer.Option(
        callback=POSITIVE, help="Seconds between autoscaling rounds (entries with "
        "autoscale: in the pool file).")] = 1.0,
    ray_address: Annotated[str | None, typer.Option(
        "--ray", help="Run the replicas as actors on this Ray cluster (host:port of its "
        "head); needs itas[ray].")] = None,
) -> None:
    """Start and supervise agent processes until SIGINT/SIGTERM: a pool file's, and every
    agent an architecture needs that the pool does not already run (--arch)."""
    import anyio

    from itas.agents.pool import Supervisor, load_pool, service_names
    from itas.agents.ray_placement import RayPool
    from itas.deploy import serving, simulated, simulated_pool
    from itas.spec import load_architecture
    from itas.stack import resolve_config

    if pool is None and arch is None:
        raise ConfigError("itas agents: give --pool FILE, --arch FILE, or both")
    entries = load_pool(pool) if pool is not None else []
    spec = load_architecture(resolve_config("architectures", arch)) if arch else None
    if sim:
        entries = simulated_pool(entries)
        spec = simulated(spec) if spec is not None else None
    entries = serving(entries, spec)
    service_names(entries, str(pool or arch))  # every entry's settings, before any starts
    extra = []
    if curve_secret or curve_server:
        _client_keys(curve_secret, curve_server)  # validate before starting anything
        extra = ["--curve-secret", str(curve_secret), "--curve-server", str(curve_server)]
    runner: Supervisor | RayPool
    if ray_address is not None:
        runner = RayPool(entries, broker, ray_address, extra)
    else:
        runner = Supervisor(entries, broker, extra)
    client_keys = _client_keys(curve_secret, curve_server)

    async def main() -> None:
        import signal

        from itas.agents.autoscale import Autoscaler
        from itas.client import AsyncClient

        async with contextlib.AsyncExitStack() as stack:
            # The autoscaler's client outlives the task group that runs the autoscaler.
            client = (await stack.enter_async_context(AsyncClient(broker, curve=client_keys))
                      if any(e.autoscale for e in entries) else None)
            async with anyio.create_task_group() as tg:
                await tg.start(runner.run)
                where = f" as Ray actors on {ray_address}" if ray_address else ""
                print(f"itas agents: {sum(e.replicas for e in runner.entries)} agent "
                      f"processes started{where} against {broker}"
                      + (" (simulated models)" if sim else ""), flush=True)
                if client is not None:
                    tg.start_soon(Autoscaler(entries, runner, client.status,
                                             interval=autoscale_interval).run)
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        break

    anyio.run(main)


@app.command()
def status(
    broker: BrokerOpt = DEFAULT_BROKER,
    as_json: Annotated[bool, typer.Option("--json", help="Print raw JSON.")] = False,
    curve_secret: CurveSecretOpt = None,
    curve_server: CurveServerOpt = None,
) -> None:
    """Print the broker's services, workers, queues and counters."""
    from itas.client import Client
    from itas.status import render_status

    with Client(broker, curve=_client_keys(curve_secret, curve_server)) as client:
        info = client.status()
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        render_status(info)


@app.command()
def request(
    service: Annotated[str, typer.Argument(help="Service name, e.g. echo.")],
    body: Annotated[str, typer.Argument(help="Request body as JSON.")] = "null",
    broker: BrokerOpt = DEFAULT_BROKER,
    timeout: Annotated[float, typer.Option(callback=POSITIVE,
                                           help="Seconds to wait for the reply.")] = 30.0,
    curve_secret: CurveSecretOpt = None,
    curve_server: CurveServerOpt = None,
) -> None:
    """Send one request to a service and print the reply as JSON."""
    from itas.client import Client

    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"request body: not valid JSON ({exc})") from exc
    with Client(broker, curve=_client_keys(curve_secret, curve_server)) as client:
        print(json.dumps(client.request(service, payload, timeout=timeout), indent=2,
                         default=repr))


@app.command()
def orchestrator(
    broker: BrokerOpt = DEFAULT_BROKER,
    credit: Annotated[int, typer.Option(callback=AT_LEAST_1,
                                        help="Queries this process runs at once.")] = 32,
    curve_secret: CurveSecretOpt = None,
    curve_server: CurveServerOpt = None,
) -> None:
    """Run an orchestrator (the service that runs architectures) until SIGINT/SIGTERM."""
    import anyio

    from itas.agents.runtime import Worker
    from itas.orchestrator.service import OrchestratorAgent

    worker = Worker(OrchestratorAgent(credit), broker,
                    curve=_client_keys(curve_secret, curve_server))
    print(f"itas orchestrator: serving 'orchestrator' through {broker}, up to {credit} "
          "queries at once (Ctrl-C stops)", file=sys.stderr, flush=True)
    anyio.run(worker.run)


ModelsOpt = Annotated[list[Path] | None, typer.Option(
    "--models", callback=DIRECTORY,
    help="Directory of architecture specs (or a search's output) to serve as models; "
         "repeatable. Packaged architectures are always served.")]
ApiKeysOpt = Annotated[Path | None, typer.Option(
    "--api-keys", callback=FILE,
    help="File of gateway bearer keys, one per line (or set ITAS_GATEWAY_API_KEYS).")]


def _gateway_config(broker: str, models: list[Path] | None, sim: bool, api_keys: Path | None,
                    host: str, insecure: bool, curve: Any, timeout: float) -> Any:
    from itas.gateway import (
        GatewayConfig,
        ModelTable,
        check_listen,
        discover_models,
        load_api_keys,
    )

    keys = load_api_keys(api_keys)
    check_listen(host, keys, insecure=insecure)
    return GatewayConfig(broker, ModelTable(discover_models(models or []), sim=sim),
                         api_keys=keys, curve=curve, timeout_s=timeout)


@app.command()
def gateway(
    broker: BrokerOpt = DEFAULT_BROKER,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")
                    ] = 8800,
    models: ModelsOpt = None,
    sim: SimOpt = False,
    api_keys: ApiKeysOpt = None,
    insecure: Annotated[bool, typer.Option(
        help="Allow listening beyond loopback without API keys.")] = False,
    timeout: Annotated[float, typer.Option(callback=POSITIVE,
                                           help="Seconds a query may take.")] = 600.0,
    curve_secret: CurveSecretOpt = None,
    curve_server: CurveServerOpt = None,
) -> None:
    """Serve the OpenAI Chat Completions API (/v1/chat/completions, /v1/models) over the
    mesh: any OpenAI client uses an architecture as a model."""
    import signal

    import anyio

    from itas.gateway import serve

    config = _gateway_config(broker, models, sim, api_keys, host, insecure,
                             _client_keys(curve_secret, curve_server), timeout)

    async def main() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:
                bound = await tg.start(serve, config, host, port)
                print(f"itas gateway: listening on http://{host}:{bound}/v1 "
                      f"(broker {broker}; {len(config.models.files)} models)", flush=True)
                async for _ in signals:
                    break
                tg.cancel_scope.cancel()

    anyio.run(main)


@app.command()
def ask(
    prompt: Annotated[str | None, typer.Argument(
        help="The question (or --messages FILE for a conversation).")] = None,
    arch: Annotated[str, typer.Option(help="Architecture file, or the name of a packaged one.")
                    ] = "local_gcrf",
    messages: Annotated[Path | None, typer.Option(
        callback=FILE, help="A conversation as JSON: [{role, content}, ...], the last "
                            "message the user's.")] = None,
    sim: SimOpt = False,
    trace: Annotated[bool, typer.Option(help="Show the flow: layers, calls, candidates.")
                     ] = False,
    broker: BrokerOpt = DEFAULT_BROKER,
    timeout: Annotated[float, typer.Option(callback=POSITIVE,
                                           help="Seconds to wait for the answer.")] = 600.0,
    calls: Annotated[int | None, typer.Option(callback=AT_LEAST_1,
                                              help="Budget: most LLM calls.")] = None,
    tokens: Annotated[int | None, typer.Option(callback=AT_LEAST_1,
                                               help="Budget: most tokens.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole answer as JSON.")
                       ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the answer: no waiting "
                                        "line, no summary on stderr.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ask the models again: no "
                                           "reply of this query comes from the response "
                                           "cache (new replies are still stored).")] = False,
    curve_secret: CurveSecretOpt = None,
    curve_server: CurveServerOpt = None,
) -> None:
    """Answer a prompt (or a conversation) with an architecture, through the orchestrator;
    with --sim, on simulated models of the same names (start them with
    `itas up --arch FILE --sim`)."""
    import anyio

    from itas.client import AsyncClient
    from itas.deploy import simulated
    from itas.progress import WaitDisplay, answered_line
    from itas.query import ORCHESTRATOR_SERVICE, Answer, load_messages
    from itas.render import print_answer
    from itas.spec import load_architecture
    from itas.stack import resolve_config

    if (prompt is None) == (messages is None):
        raise ConfigError("itas ask: give the question, or --messages FILE, not both")
    conversation = load_messages(messages) if messages is not None else prompt
    assert conversation is not None
    architecture = load_architecture(resolve_config("architectures", arch))
    if sim:
        architecture = simulated(architecture)
    budget = {k: v for k, v in (("calls", calls), ("tokens", tokens)) if v is not None}
    display = WaitDisplay("itas ask", architecture)

    async def main() -> Answer:
        async with AsyncClient(broker, curve=_client_keys(curve_secret, curve_server)) as client:
            try:  # fail fast: no broker, or no orchestrator, is one line, not a long wait (an
                # agent service nobody serves is the broker's to name, after its grace)
                await client.require_services([ORCHESTRATOR_SERVICE])
            except (BrokerUnreachable, ServiceUnavailable) as exc:
                raise ConfigError(f"{exc}; start the mesh with `itas up` (or `itas up --arch "
                                  f"{arch}{' --sim' if sim else ''}`), or pass --broker"
                                  ) from exc
            live = display.live and not (as_json or quiet)
            asking = client.ask(conversation, architecture=architecture, trace=trace,
                                budget=budget or None, timeout=timeout, fresh=no_cache,
                                check=False, on_progress=display.progress if live else None)
            if as_json or quiet:
                return await asking
            async with display.shown():
                return await asking

    answer = anyio.run(main)
    if as_json:
        print(json.dumps(dataclasses.asdict(answer), indent=2, default=repr))
        return
    if not quiet:
        print(f"itas ask: {answered_line(answer)}", file=sys.stderr, flush=True)
    print_answer(answer, trace=trace)


@app.command()
def up(
    pool: Annotated[str | None, typer.Option(
        help="Pool file, or the name of a packaged pool (default: local, unless --arch).")
                    ] = None,
    arch: ArchOpt = None,
    sim: SimOpt = False,
    bind: BindOpt = DEFAULT_BROKER,
    insecure: InsecureOpt = False,
    curve_secret: BrokerSecretOpt = None,
    curve_allow: CurveAllowOpt = None,
    detach: Annotated[bool, typer.Option(
        "--detach", help="Run in the background: return once every part is ready (its "
                         "output goes to a log file named at start); `itas down` stops it.")
                      ] = False,
    curve_roles: CurveRolesOpt = None,
    gateway_port: Annotated[int, typer.Option(
        min=-1, max=65535, envvar="ITAS_GATEWAY_PORT",
        help="Port of the OpenAI-compatible gateway on 127.0.0.1 (0: any free one; -1: no "
             "gateway).")] = 8800,
    models: ModelsOpt = None,
    ray_address: Annotated[str | None, typer.Option(
        "--ray", help="Run the agents as actors on this Ray cluster (host:port of its head); "
        "needs itas[ray] and a --bind the nodes reach.")] = None,
) -> None:
    """Start broker, embedded model server, agent pool, orchestrator and the OpenAI-compatible
    gateway; Ctrl-C stops all.

    With --curve-secret (the broker's key; its .key file beside it) and --curve-allow,
    the broker admits the keys in that directory and the stack's own processes; with
    --curve-roles, each key may serve and call only what that file says (the stack's own
    processes may serve and call everything)."""
    import signal

    import anyio

    from itas.progress import line_reporter
    from itas.spec import load_architecture
    from itas.stack import StackKeys, resolve_config, run_stack

    try:
        from itas.gateway import serve
    except ImportError:  # the gateway extra is not installed: the rest of the stack still runs
        if gateway_port >= 0:
            print("itas up: no gateway (pip install 'itas[gateway]' for it)", file=sys.stderr)
        gateway_port = -1
    if (curve_secret is None) != (curve_allow is None):
        raise ConfigError("CURVE needs both --curve-secret and --curve-allow")
    if curve_roles is not None and curve_allow is None:
        raise ConfigError("--curve-roles needs CURVE: --curve-secret and --curve-allow")
    keys = (StackKeys(curve_secret, curve_allow, curve_roles) if curve_secret and curve_allow
            else None)
    if detach:
        from itas.detach import detach_args, start_detached

        args = detach_args(sys.argv)
        if "--bind" not in args:  # the endpoint this process resolved (ITAS_BIND, ...)
            args += ["--bind", bind]
        endpoint, pid, log = start_detached(args, line_reporter("itas up"))
        print(f"itas up: broker {endpoint} ready in the background (pid {pid}, log {log}); "
              f"`itas down --broker {endpoint}` stops it", flush=True)
        return

    async def main() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            spec = load_architecture(resolve_config("architectures", arch)) if arch else None
            chosen = pool if pool is not None or spec is not None else "local"
            async with run_stack(chosen, arch=spec, sim=sim, bind=bind, insecure=insecure,
                                 keys=keys, report=line_reporter("itas up"), ray=ray_address
                                 ) as stack, anyio.create_task_group() as tg:
                gateway_url = ""
                if gateway_port >= 0:
                    config = _gateway_config(stack.broker, models, sim, None, "127.0.0.1",
                                             False, stack.client_curve, 600.0)
                    bound = await tg.start(serve, config, "127.0.0.1", gateway_port)
                    gateway_url = f"; gateway http://127.0.0.1:{bound}/v1"
                print(f"itas up: broker {stack.broker}; services: {', '.join(stack.services)}"
                      + (" (simulated models)" if sim else "")
                      + (f"; model server {stack.model_url}" if stack.model_url else "")
                      + gateway_url, flush=True)
                async for _ in signals:
                    break
                tg.cancel_scope.cancel()
        print("itas up: stopped", flush=True)

    anyio.run(main)


@app.command()
def down(broker: BrokerOpt = DEFAULT_BROKER) -> None:
    """Stop the stack that `itas up --detach` started on this broker endpoint."""
    from itas.detach import stop_detached

    pid = stop_detached(broker)
    print(f"itas down: stopped the stack on {broker} (pid {pid})")


@app.command()
def demo(
    prompt: Annotated[str, typer.Argument(help="The question.")] =
    "In two sentences: why does the sky look blue?",
    arch: Annotated[str, typer.Option(help="Architecture file or packaged name.")] =
    "local_gcrf",
    pool: Annotated[str, typer.Option(help="Pool file or packaged name.")] = "local",
    bind: Annotated[str, typer.Option(
        envvar="ITAS_BIND", callback=BIND,
        help="Broker endpoint (default: a free loopback port, so a running stack is never "
             "in the way).")] = "tcp://127.0.0.1:0",
) -> None:
    """The main job in one command: start the local stack, answer one prompt with a trace, stop."""
    import anyio

    from itas.client import AsyncClient
    from itas.progress import answered_line, line_reporter
    from itas.render import print_answer
    from itas.stack import resolve_config, run_stack

    architecture = resolve_config("architectures", arch)

    async def main() -> None:
        async with run_stack(pool, bind=bind, report=line_reporter("itas demo")) as stack:
            print(f"itas demo: stack up (broker {stack.broker}, "
                  f"{len(stack.services)} services); asking {arch}...", flush=True)
            async with AsyncClient(stack.broker, timeout=DEMO_TIMEOUT_S) as client:
                answer = await client.ask(prompt, architecture=architecture, trace=True)
        print_answer(answer, trace=True)
        print(f"itas demo: {answered_line(answer)}", file=sys.stderr, flush=True)

    anyio.run(main)


@app.command()
def check(
    arch: Annotated[str, typer.Argument(help="Architecture file or packaged name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Validate an architecture and print its plan, call and token bounds, and warnings."""
    from itas.plan import describe, summary_dict
    from itas.spec import load_architecture
    from itas.stack import resolve_config

    architecture = load_architecture(resolve_config("architectures", arch))
    if as_json:
        print(json.dumps(summary_dict(architecture), indent=2))
    else:
        print(describe(architecture))


@model_app.command("serve")
def model_serve(
    host: Annotated[str, typer.Option(envvar="ITAS_MODEL_HOST", show_envvar=True,
                                      help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        envvar="ITAS_MODEL_PORT", show_envvar=True,
        callback=_checked(partial(validate.port, allow_zero=True)),
        help="Port to listen on; 0 picks a free one.")] = 8765,
    threads: Annotated[int, typer.Option(callback=AT_LEAST_1,
                                         help="CPU threads for generation.")] = 2,
) -> None:
    """Serve the embedded SmolLM2-135M-Instruct over an OpenAI-compatible HTTP API."""
    import socket

    from itas.agents.providers.local import serve_model

    if port:  # the server would only say so after loading the model, in many lines
        try:
            with socket.create_server((host, port)):
                pass
        except OSError as exc:
            raise ConfigError(f"--host {host} --port {port}: cannot listen ({exc.strerror})"
                              ) from exc
    serve_model(host, port, threads,
                on_ready=lambda s: print(f"itas model server ready at {s.base_url}", flush=True))


@keys_app.command("generate")
def keys_generate(
    directory: Annotated[Path, typer.Argument(help="Where to write the key pair.")],
    name: Annotated[str, typer.Option(help="Base name of the key files.")] = "itas",
) -> None:
    """Write NAME.key (public: give it to the broker's allow-list) and NAME.key_secret (0600)."""
    import zmq.auth

    from itas.security import generate_keys, key_fingerprint

    public, secret = generate_keys(directory, name)
    fingerprint = key_fingerprint(zmq.auth.load_certificate(public)[0])
    print(f"public key: {public} (fingerprint {fingerprint}, as the broker's log names it)\n"
          f"secret key: {secret} (keep it on this machine)")


@cache_app.command("stats")
def cache_stats(as_json: JsonOpt = False) -> None:
    """Where the response cache is, how many replies it holds and how big it is."""
    import datetime

    from itas.agents.providers.cache import ResponseCache, cache_cap_bytes, default_cache_path

    if not default_cache_path().exists():  # not made just to be looked at
        info: dict[str, Any] = {"path": str(default_cache_path()), "entries": 0, "bytes": 0,
                                "max_bytes": cache_cap_bytes()}
    else:
        cache = ResponseCache()
        try:
            info = cache.stats()
        finally:
            cache.close()
    if as_json:
        print(json.dumps(info, indent=2))
        return

    def when(stamp: float | None) -> str:
        return (datetime.datetime.fromtimestamp(stamp, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
                if stamp else "-")

    cap = info.get("max_bytes")
    print(f"response cache {info['path']}: {info['entries']} replies, "
          f"{info['bytes'] / 1e6:.1f} MB in use"
          + (f" of a {cap / 1e6:.1f} MB cap" if cap else " (no cap; set ITAS_CACHE_MAX_MB)")
          + (f", {info['tokens']} tokens, oldest {when(info['oldest'])}, newest "
             f"{when(info['newest'])}" if info["entries"] else ""))


@cache_app.command("clear")
def cache_clear() -> None:
    """Remove every reply from the response cache."""
    from itas.agents.providers.cache import ResponseCache, default_cache_path

    if not default_cache_path().exists():
        print(f"response cache {default_cache_path()}: already empty")
        return
    cache = ResponseCache()
    try:
        removed = cache.clear()
    finally:
        cache.close()
    print(f"response cache {cache.path}: removed {removed} replies")


@app.command("eval")
def eval_(
    arch: Annotated[list[str], typer.Option(
        "--arch", help="Architecture file or packaged name; repeat to compare several.")],
    benchmark: Annotated[str, typer.Option(
        help="Benchmark: a name (gsm8k, humaneval, ...), a YAML definition, or a "
             ".jsonl/.json data file described by the --*-field and --scorer options.")],
    split: Annotated[str | None, typer.Option(
        callback=_checked(partial(validate.one_of, choices=("search", "heldout"))),
        help="search or heldout (default: all).")] = None,
    limit: Annotated[int | None, typer.Option(callback=AT_LEAST_1,
                                              help="A seeded sample of at most N questions.")
                     ] = None,
    concurrency: Annotated[int, typer.Option(callback=AT_LEAST_1,
                                             help="Questions in flight at once.")] = 8,
    broker: BrokerOpt = DEFAULT_BROKER,
    out: Annotated[Path | None, typer.Option(
        help="Output directory (default runs/eval-<timestamp>); reuse it to resume.")] = None,
    judge: Annotated[str | None, typer.Option(
        help="Judge for judge-scored benchmarks: PROVIDER:MODEL (service judge@...).")] = None,
    baseline: Annotated[str | None, typer.Option(
        help="Pairwise benchmarks: architecture whose answers are the baseline.")] = None,
    data_dir: Annotated[Path | None, typer.Option(callback=DIRECTORY,
                                                  help="Benchmark data directory.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and the sample.")] = 0,
    timeout: Annotated[float, typer.Option(callback=POSITIVE,
                                           help="Seconds to wait for one query.")] = 300.0,
    retry_errors: Annotated[bool, typer.Option(help="Rerun questions that failed before.")
                            ] = False,
    oracle_tests: Annotated[bool, typer.Option(
        help="Let selection (tests: benchmark) see the grading tests: an oracle pass@k, "
             "labelled ORACLE in every output.")] = False,
    scorer: Annotated[str | None, typer.Option(
        help="Benchmark file: numeric, exact, choice, math, code or judge.")] = None,
    benchmark_name: Annotated[str | None, typer.Option(
        help="Benchmark file: its name (default: the file name).")] = None,
    question_field: Annotated[str | None, typer.Option(
        help="Benchmark file: the field with the question (default question).")] = None,
    answer_field: Annotated[str | None, typer.Option(
        help="Benchmark file: the field with the answer (default answer).")] = None,
    id_field: Annotated[str | None, typer.Option(
        help="Benchmark file: the field with the id (default: the position).")] = None,
    prompt_template: Annotated[str | None, typer.Option(
        help="Benchmark file: the prompt, with {field} placeholders.")] = None,
    choices_field: Annotated[str | None, typer.Option(
        help="Benchmark file, choice scorer: the field listing the options.")] = None,
    tests_field: Annotated[str | None, typer.Option(
        help="Benchmark file, code scorer: the field with the grading asserts.")] = None,
    visible_tests_field: Annotated[str | None, typer.Option(
        help="Benchmark file, code scorer: the field with asserts a model may see.")] = None,
    entry_point_field: Annotated[str | None, typer.Option(
        help="Benchmark file, code scorer: the field naming the function.")] = None,
    judge_prompts: Annotated[Path | None, typer.Option(
        help="Judge with the benchmark's own prompts: FastChat's judge_prompts.jsonl "
             "(MT-Bench) or an Arena-Hard judge config (YAML).")] = None,
    reference_answers: Annotated[Path | None, typer.Option(
        help="MT-Bench reference answers (FastChat reference_answer/gpt-4.jsonl).")] = None,
    baseline_answers: Annotated[Path | None, typer.Option(
        help="Arena-Hard: the baseline's answers (model_answer/gpt-4-0314.jsonl).")] = None,
    sim: SimOpt = False,
    as_json: JsonOpt = False,
    curve_secret: CurveSecretOpt = None,
    curve_server: CurveServerOpt = None,
) -> None:
    """Score architectures on a benchmark through the running mesh (resumable); with --sim,
    on simulated models of the same names (start them with `itas up --arch FILE --sim`)."""
    import anyio

    from itas.evaluation.report import console_for
    from itas.evaluation.run import SUMMARY_FILE, EvalOptions, default_out_dir, run_eval

    fields = {"scorer": scorer, "name": benchmark_name, "question_field": question_field,
              "answer_field": answer_field, "id_field": id_field, "prompt": prompt_template,
              "choices_field": choices_field, "tests_field": tests_field,
              "visible_tests_field": visible_tests_field,
              "entry_point_field": entry_point_field}
    options = EvalOptions(
        archs=arch, benchmark=benchmark, oracle_tests=oracle_tests,
        benchmark_fields={k: v for k, v in fields.items() if v is not None} or None,
        split=split, limit=limit, concurrency=concurrency,
        broker=broker, out=out or default_out_dir(), judge=judge, baseline=baseline,
        data_dir=data_dir, seed=seed,
        timeout_s=timeout, retry_errors=retry_errors,
        curve=_client_keys(curve_secret, curve_server), judge_prompts=judge_prompts,
        reference_answers=reference_answers, baseline_answers=baseline_answers, sim=sim)
    if not as_json:
        anyio.run(run_eval, options)
        return
    anyio.run(run_eval, options, console_for(sys.stderr))  # the tables go to stderr then
    assert options.out is not None
    print((options.out / SUMMARY_FILE).read_text(encoding="utf-8"), end="")


@app.command()
def search(
    config: Annotated[Path, typer.Argument(callback=FILE, help="Search config (YAML).")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output folder (default search-runs/<name>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the search in the output folder.")
                      ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress.")] = True,
    sim: Annotated[bool, typer.Option(
        "--sim", help="Dry run: every model of the config replaced by a simulated one of the "
        "same name; the search is named <name>-simulated.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Search for the best architecture for a benchmark and a budget (ITAS); SIGINT or
    SIGTERM stops it cleanly (exit status 130), and --resume continues it."""
    from itas.search.run import SearchStopped, run_search_cli

    try:
        result = run_search_cli(config, resume=resume, out_dir=out, progress=progress,
                                sim=sim)
    except SearchStopped as stopped:
        print(f"itas: {stopped}", file=sys.stderr)
        raise typer.Exit(SIGNAL_EXIT_BASE + stopped.signum) from None
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(f"best architecture: {result['files']['best_spec']}")


def _user_errors(exc: BaseException) -> list[str] | None:
    """One line per error meant for the user (ItasErrors, and zmq or OS errors the library
    let through), task-group groups flattened; None when anything else is in there too
    (a bug, which keeps its traceback)."""
    import zmq

    leaves = list(leaf_exceptions(exc))
    if not all(isinstance(e, ItasError | zmq.ZMQError | OSError) for e in leaves):
        return None
    return [" ".join(str(e).split()) if isinstance(e, ConfigError) else str(e) for e in leaves]


def _usage_error(exc: typer.TyperException) -> str:
    """click's message on one line, with the verb whose --help explains it."""
    format_message = getattr(exc, "format_message", None)
    message = " ".join((format_message() if format_message else str(exc)).split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see: {ctx.command_path} --help)"
    return message


LogLevelOpt = Annotated[str | None, typer.Option(
    "--log-level", envvar=LOG_LEVEL_ENV, show_envvar=True, metavar="|".join(LOG_LEVELS),
    help=f"Log level here and in every process this starts (default {DEFAULT_LOG_LEVEL}).")]
ShorthandVerboseOpt = Annotated[bool, typer.Option(
    "--verbose", "-v", help="Shorthand for --log-level info.")]


def _logging_set_up(callback: Callable[..., Any]) -> Callable[..., Any]:
    """The verb's own callback behind ``--log-level``/``-v``, which it does not declare: the
    options are added here, once, so no verb can miss them."""

    @functools.wraps(callback)
    def verb(*args: Any, log_level: str | None = None, verbose: bool = False,
             **kwargs: Any) -> Any:
        try:
            level = parse_level(log_level or DEFAULT_LOG_LEVEL,
                                f"--log-level (or {LOG_LEVEL_ENV})")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if verbose and LOG_LEVELS.index(level) > LOG_LEVELS.index("info"):
            level = "info"  # -v: at least INFO, whatever the environment says
        setup_logging(level)
        return callback(*args, **kwargs)

    hints = typing.get_type_hints(callback, include_extras=True)  # typer needs real types
    signature = inspect.signature(callback)
    params = [p.replace(annotation=hints.get(p.name, p.annotation))
              for p in signature.parameters.values()]
    params += [inspect.Parameter("log_level", inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=LogLevelOpt),
               inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False,
                                 annotation=ShorthandVerboseOpt)]
    verb.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=params, return_annotation=None)
    del verb.__wrapped__  # typer reads __signature__, not the callback's own
    return verb


for _info in [*app.registered_commands, *keys_app.registered_commands,
              *model_app.registered_commands, *cache_app.registered_commands]:
    assert _info.callback is not None
    _info.callback = _logging_set_up(_info.callback)


def _print_version(value: bool) -> None:
    if value:
        from itas import __version__

        print(f"itas {__version__}")
        raise typer.Exit()


@app.callback()
def _itas(version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="Print the version and exit.")] = False) -> None:
    """Inference-time architectures over LLMs as a mesh of ZeroMQ agents."""


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # click's usage errors, as typer re-exports them
        if type(exc).__name__ == "NoArgsIsHelpError":  # `itas` alone: the help, as before
            exc.show()  # type: ignore[attr-defined]
            raise SystemExit(EXIT_USER_ERROR) from None
        print(f"{ERROR_PREFIX}{_usage_error(exc)}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
    except typer.Abort:
        print("itas: aborted", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as exc:  # ItasError, zmq.ZMQError, OSError, or a group of them
        errors = _user_errors(exc)
        if errors is None:
            raise
        for error in errors:
            print(f"{ERROR_PREFIX}{error}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)
