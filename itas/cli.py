"""The ``itas`` command line: thin wrappers that parse options and call the library."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from itas.errors import ConfigError, ItasError, leaf_exceptions

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Inference-time architectures over LLMs as a mesh of ZeroMQ agents.")
keys_app = typer.Typer(no_args_is_help=True, help="CURVE key management.")
app.add_typer(keys_app, name="keys")
model_app = typer.Typer(no_args_is_help=True, help="The embedded local model.")
app.add_typer(model_app, name="model")

BrokerOpt = Annotated[str, typer.Option("--broker", "-b", envvar="ITAS_BROKER",
                                        help="Broker endpoint to connect to.")]
CurveSecretOpt = Annotated[Path | None, typer.Option(
    "--curve-secret", envvar="ITAS_CURVE_SECRET", help="This side's CURVE .key_secret file.")]
CurveServerOpt = Annotated[Path | None, typer.Option(
    "--curve-server", envvar="ITAS_CURVE_SERVER", help="The broker's public .key file.")]
DEFAULT_BROKER = "tcp://127.0.0.1:5555"
ParentPidOpt = Annotated[int | None, typer.Option(
    hidden=True, help="Exit when this process (the one that started us) dies.")]
DEMO_TIMEOUT_S = 900.0
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


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)


@app.command()
def broker(
    bind: Annotated[str, typer.Option(help="Endpoint to bind; port 0 picks a free port.")] =
    "tcp://127.0.0.1:5555",
    heartbeat: Annotated[float, typer.Option(help="Heartbeat interval, seconds.")] = 1.0,
    liveness: Annotated[int, typer.Option(help="Heartbeats missed before a worker is dropped.")
                        ] = 3,
    max_attempts: Annotated[int, typer.Option(help="Workers tried per request before failing.")
                            ] = 3,
    curve_secret: Annotated[Path | None, typer.Option(help="Broker's .key_secret file.")
                            ] = None,
    curve_allow: Annotated[Path | None, typer.Option(
        help="Directory of allowed client/agent public .key files.")] = None,
    insecure: Annotated[bool, typer.Option(help="Allow binding beyond loopback without CURVE.")
                        ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    parent_pid: ParentPidOpt = None,
) -> None:
    """Run the ZeroMQ broker until SIGINT/SIGTERM."""
    from itas.broker.server import BrokerServer, run_broker
    from itas.security import CurveKeys

    _setup_logging(verbose)
    _follow_parent(parent_pid)
    if (curve_secret is None) != (curve_allow is None):
        raise ConfigError("CURVE needs both --curve-secret and --curve-allow")
    keys = CurveKeys.load(curve_secret) if curve_secret else None
    server = BrokerServer(bind, curve=keys, curve_allow=curve_allow, insecure=insecure,
                          heartbeat_interval=heartbeat, liveness=liveness,
                          max_attempts=max_attempts)
    run_broker(server)


@app.command()
def agent(
    kind: Annotated[str, typer.Option(help="Agent kind, e.g. echo, sleep, generator.")],
    broker: BrokerOpt = DEFAULT_BROKER,
    settings: Annotated[str, typer.Option(help="Agent settings as a JSON object.")] = "{}",
    name: Annotated[str | None, typer.Option(help="Worker name shown in status.")] = None,
    heartbeat: Annotated[float, typer.Option(help="Heartbeat interval, seconds.")] = 1.0,
    curve_secret: CurveSecretOpt = None,
    curve_server: CurveServerOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    parent_pid: ParentPidOpt = None,
) -> None:
    """Run one agent process until SIGINT/SIGTERM."""
    import anyio

    from itas.agents.kinds import build_agent
    from itas.agents.runtime import Worker

    _setup_logging(verbose)
    _follow_parent(parent_pid)
    try:
        parsed = json.loads(settings)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--settings: not valid JSON ({exc})") from exc
    if not isinstance(parsed, dict):
        raise ConfigError("--settings: expected a JSON object")
    worker = Worker(build_agent(kind, parsed), broker, name=name, heartbeat_interval=heartbeat,
                    curve=_client_keys(curve_secret, curve_server))
    anyio.run(worker.run)


@app.command()
def agents(
    pool: Annotated[Path, typer.Option(help="Pool file (YAML) listing agent kinds and replicas.")],
    broker: BrokerOpt = DEFAULT_BROKER,
    curve_secret: CurveSecretOpt = None,
    curve_server: CurveServerOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start and supervise a pool of agent processes until SIGINT/SIGTERM."""
    import anyio

    from itas.agents.pool import Supervisor, load_pool

    _setup_logging(verbose)
    extra = []
    if curve_secret or curve_server:
        _client_keys(curve_secret, curve_server)  # validate before starting anything
        extra = ["--curve-secret", str(curve_secret), "--curve-server", str(curve_server)]
    supervisor = Supervisor(load_pool(pool), broker, extra)

    async def main() -> None:
        import signal

        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            print(f"itas pool: {sum(e.replicas for e in supervisor.entries)} agent processes "
                  f"started against {broker}", flush=True)
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
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 30.0,
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
    credit: Annotated[int, typer.Option(help="Queries this process runs at once.")] = 32,
    curve_secret: CurveSecretOpt = None,
    curve_server: CurveServerOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run an orchestrator (the service that runs architectures) until SIGINT/SIGTERM."""
    import anyio

    from itas.agents.runtime import Worker
    from itas.orchestrator.service import OrchestratorAgent

    _setup_logging(verbose)
    worker = Worker(OrchestratorAgent(credit), broker,
                    curve=_client_keys(curve_secret, curve_server))
    anyio.run(worker.run)


@app.command()
def ask(
    prompt: Annotated[str, typer.Argument(help="The question.")],
    arch: Annotated[str, typer.Option(help="Architecture file, or the name of a packaged one.")
                    ] = "local_gcrf",
    trace: Annotated[bool, typer.Option(help="Show the flow: layers, calls, candidates.")
                     ] = False,
    broker: BrokerOpt = DEFAULT_BROKER,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 600.0,
    calls: Annotated[int | None, typer.Option(help="Budget: most LLM calls.")] = None,
    tokens: Annotated[int | None, typer.Option(help="Budget: most tokens.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole answer as JSON.")
                       ] = False,
    curve_secret: CurveSecretOpt = None,
    curve_server: CurveServerOpt = None,
) -> None:
    """Answer a prompt with an architecture, through the orchestrator."""
    from itas.client import Client
    from itas.render import print_answer
    from itas.stack import resolve_config

    budget = {k: v for k, v in (("calls", calls), ("tokens", tokens)) if v is not None}
    with Client(broker, curve=_client_keys(curve_secret, curve_server)) as client:
        answer = client.ask(prompt, architecture=resolve_config("architectures", arch),
                            trace=trace, budget=budget or None, timeout=timeout)
    if as_json:
        print(json.dumps(dataclasses.asdict(answer), indent=2, default=repr))
    else:
        print_answer(answer, trace=trace)


@app.command()
def up(
    pool: Annotated[str, typer.Option(help="Pool file, or the name of a packaged pool.")
                    ] = "local",
    bind: Annotated[str, typer.Option(help="Broker endpoint.")] = DEFAULT_BROKER,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start broker, embedded model server, agent pool and orchestrator; Ctrl-C stops all."""
    import signal

    import anyio

    from itas.stack import run_stack

    _setup_logging(verbose)

    async def main() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with run_stack(pool, bind=bind) as stack:
                print(f"itas up: broker {stack.broker}; services: {', '.join(stack.services)}"
                      + (f"; model server {stack.model_url}" if stack.model_url else ""),
                      flush=True)
                async for _ in signals:
                    break
        print("itas up: stopped", flush=True)

    anyio.run(main)


@app.command()
def demo(
    prompt: Annotated[str, typer.Argument(help="The question.")] =
    "In two sentences: why does the sky look blue?",
    arch: Annotated[str, typer.Option(help="Architecture file or packaged name.")] =
    "local_gcrf",
    pool: Annotated[str, typer.Option(help="Pool file or packaged name.")] = "local",
    bind: Annotated[str, typer.Option(help="Broker endpoint.")] = "tcp://127.0.0.1:0",
) -> None:
    """The main job in one command: start the local stack, answer one prompt with a trace, stop."""
    import anyio

    from itas.client import AsyncClient
    from itas.render import print_answer
    from itas.stack import resolve_config, run_stack

    async def main() -> None:
        async with run_stack(pool, bind=bind) as stack:
            print(f"itas demo: stack up (broker {stack.broker}, "
                  f"{len(stack.services)} services); asking {arch}...", flush=True)
            async with AsyncClient(stack.broker, timeout=DEMO_TIMEOUT_S) as client:
                answer = await client.ask(prompt, architecture=resolve_config("architectures",
                                                                              arch), trace=True)
        print_answer(answer, trace=True)

    anyio.run(main)


@app.command()
def check(
    arch: Annotated[str, typer.Argument(help="Architecture file or packaged name.")],
) -> None:
    """Validate an architecture and print its plan and static cost bound."""
    from itas.plan import describe
    from itas.spec import load_architecture
    from itas.stack import resolve_config

    print(describe(load_architecture(resolve_config("architectures", arch))))


@model_app.command("serve")
def model_serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    threads: Annotated[int, typer.Option(help="CPU threads for generation.")] = 2,
) -> None:
    """Serve the embedded SmolLM2-135M-Instruct over an OpenAI-compatible HTTP API."""
    from itas.agents.providers.local import serve_model

    serve_model(host, port, threads,
                on_ready=lambda s: print(f"itas model server ready at {s.base_url}", flush=True))


@keys_app.command("generate")
def keys_generate(
    directory: Annotated[Path, typer.Argument(help="Where to write the key pair.")],
    name: Annotated[str, typer.Option(help="Base name of the key files.")] = "itas",
) -> None:
    """Write NAME.key (public: give it to the broker's allow-list) and NAME.key_secret (0600)."""
    from itas.security import generate_keys

    public, secret = generate_keys(directory, name)
    print(f"public key: {public}\nsecret key: {secret} (keep it on this machine)")


@app.command("eval")
def eval_(
    arch: Annotated[list[str], typer.Option(
        "--arch", help="Architecture file or packaged name; repeat to compare several.")],
    benchmark: Annotated[str, typer.Option(
        help="Benchmark: a name (gsm8k, humaneval, ...), a YAML definition, or a "
             ".jsonl/.json data file described by the --*-field and --scorer options.")],
    split: Annotated[str | None, typer.Option(help="search or heldout (default: all).")
                     ] = None,
    limit: Annotated[int | None, typer.Option(help="A seeded sample of at most N questions.")
                     ] = None,
    concurrency: Annotated[int, typer.Option(help="Questions in flight at once.")] = 8,
    broker: BrokerOpt = DEFAULT_BROKER,
    out: Annotated[Path | None, typer.Option(
        help="Output directory (default runs/eval-<timestamp>); reuse it to resume.")] = None,
    judge: Annotated[str | None, typer.Option(
        help="Judge for judge-scored benchmarks: PROVIDER:MODEL (service judge@...).")] = None,
    baseline: Annotated[str | None, typer.Option(
        help="Pairwise benchmarks: architecture whose answers are the baseline.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Benchmark data directory.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and the sample.")] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for one query.")] = 300.0,
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
    curve_secret: CurveSecretOpt = None,
    curve_server: CurveServerOpt = None,
) -> None:
    """Score architectures on a benchmark through the running mesh (resumable)."""
    import anyio

    from itas.evaluation.run import EvalOptions, run_eval

    fields = {"scorer": scorer, "name": benchmark_name, "question_field": question_field,
              "answer_field": answer_field, "id_field": id_field, "prompt": prompt_template,
              "choices_field": choices_field, "tests_field": tests_field,
              "visible_tests_field": visible_tests_field,
              "entry_point_field": entry_point_field}
    options = EvalOptions(
        archs=arch, benchmark=benchmark, oracle_tests=oracle_tests,
        benchmark_fields={k: v for k, v in fields.items() if v is not None} or None,
        split=split, limit=limit, concurrency=concurrency,
        broker=broker, out=out, judge=judge, baseline=baseline, data_dir=data_dir, seed=seed,
        timeout_s=timeout, retry_errors=retry_errors,
        curve=_client_keys(curve_secret, curve_server), judge_prompts=judge_prompts,
        reference_answers=reference_answers, baseline_answers=baseline_answers)
    anyio.run(run_eval, options)


@app.command()
def search(
    config: Annotated[Path, typer.Argument(help="Search config (YAML).")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output folder (default search-runs/<name>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the search in the output folder.")
                      ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress.")] = True,
) -> None:
    """Search for the best architecture for a benchmark and a budget (ITAS); SIGINT or
    SIGTERM stops it cleanly (exit status 130), and --resume continues it."""
    from itas.search.run import SearchStopped, run_search_cli

    try:
        result = run_search_cli(config, resume=resume, out_dir=out, progress=progress)
    except SearchStopped as stopped:
        print(f"itas: {stopped}", file=sys.stderr)
        raise typer.Exit(SIGNAL_EXIT_BASE + stopped.signum) from None
    print(f"best architecture: {result['files']['best_spec']}")


def _itas_errors(exc: BaseException) -> list[ItasError] | None:
    """The ItasErrors inside an exception (groups from task groups included), or None
    when anything else is in there too (a bug, which keeps its traceback)."""
    leaves = list(leaf_exceptions(exc))
    if all(isinstance(e, ItasError) for e in leaves):
        return [e for e in leaves if isinstance(e, ItasError)]
    return None


def main() -> None:
    try:
        app()
    except (ItasError, BaseExceptionGroup) as exc:
        errors = _itas_errors(exc)
        if errors is None:
            raise
        for error in errors:
            print(f"itas: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
