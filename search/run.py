"""``itas search CONFIG``: a whole search on the deployed mesh, with progress and outputs.

``run_search_cli`` is what the CLI calls; ``run_search`` is the same as a coroutine for
callers that already run an event loop. Outputs land in ``out_dir`` (default
``search-runs/<config name>``): ``trials.jsonl`` (every evaluation; ``--resume`` continues
from it), ``best.yaml`` (the best architecture, for ``itas ask`` / ``itas eval``),
``best.pool.yaml`` (the agents that serve it with the settings the search measured),
``summary.json`` (with the commands that reproduce the held-out score), ``convergence.png``,
``leaderboard.txt`` and ``answers/`` (every answered question per architecture, in
``itas eval``'s results format).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import anyio
import anyio.abc
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from itas.benchmarks import HELDOUT, SEARCH, Question
from itas.benchmarks.question import questions_digest
from itas.benchmarks.registry import ResolvedBenchmark, resolve_benchmark
from itas.benchmarks.splits import select
from itas.client import AsyncClient
from itas.errors import ConfigError, ItasError, leaf_exceptions
from itas.search.config import SearchConfig, load_search_config, simulated_config
from itas.search.controller import SearchController
from itas.search.deploy import deployed
from itas.search.report import write_outputs
from itas.search.runners import MeshRunner
from itas.search.store import Record, TrialStore

DEFAULT_OUT_ROOT = Path("search-runs")
RESULTS_DIR = "answers"  # per-architecture question results (itas eval's format)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SearchStopped(ItasError):
    """The search was stopped by a signal; what finished is in the trial store."""

    def __init__(self, signum: int, out_dir: Path) -> None:
        self.signum = signum
        super().__init__(f"search stopped by {signal.Signals(signum).name}; finished "
                         f"evaluations are saved in {out_dir}; continue with --resume "
                         f"--out {out_dir}")


class RichReporter:
    """A rich progress display: one bar per phase (ranking, each strategy, re-scoring)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None

    def phase(self, name: str, total: int) -> None:
        self.task = self.progress.add_task(escape(name), total=total, best="")

    def advance(self, record: Record, best: float | None) -> None:
        text = "" if best is None else f"best objective {best:.3f}"
        self.progress.update(self.task, advance=1, best=f"{text}  last {record.key} "
                             f"{record.result.score:.3f}")


@dataclass(frozen=True)
class SearchQuestions:
    """The three question sets of a search: trials (search split), confirmation (other
    search-split questions, never seen by a trial) and held-out (the other split)."""

    benchmark: ResolvedBenchmark
    search: list[Question]
    confirm: list[Question]
    heldout: list[Question]

    def digests(self) -> dict[str, str]:
        return {name: f"{len(qs)}:{questions_digest(qs)}" for name, qs in
                (("search", self.search), ("confirm", self.confirm), ("heldout", self.heldout))}


def load_questions(config: SearchConfig) -> SearchQuestions:
    """The seeded samples are nested (a larger limit keeps the smaller one's questions), so
    the confirm questions are the search split's next ones after the trial questions."""
    bench = config.benchmark
    benchmark = resolve_benchmark(bench.name, bench.definition)
    every = benchmark.read(bench.data_dir)
    trial = select(every, SEARCH, bench.search, bench.seed)
    wider = select(every, SEARCH, bench.search + bench.confirm, bench.seed)
    taken = {q.id for q in trial}
    confirm = [q for q in wider if q.id not in taken]
    heldout = select(every, HELDOUT, bench.heldout, bench.seed)
    for split, questions in ((SEARCH, trial), (HELDOUT, heldout)):
        if not questions:
            raise ConfigError(f"benchmark {benchmark.name!r}: the {split} split is empty")
    return SearchQuestions(benchmark, trial, confirm, heldout)


async def run_search(config: SearchConfig, out_dir: Path, *, resume: bool,
                     console: Console | None = None, show_progress: bool = True
                     ) -> dict[str, Any]:
    """Run (or resume) the search of ``config``; return the summary written to out_dir."""
    questions = load_questions(config)
    store = TrialStore.open(out_dir, config.fingerprint(questions.digests(),
                                                        questions.benchmark.identity()),
                            resume=resume, describe=config.result_fields())
    console = console or Console(stderr=True)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[best]}"),
                        console=console, disable=not show_progress, transient=False)
    try:
        with progress:
            async with (deployed(config.deploy, config.models, out_dir) as deployment,
                        AsyncClient(deployment.broker, timeout=config.evaluation.timeout_s)
                        as client):
                runner = MeshRunner(deployment, client,
                                    concurrency=config.evaluation.concurrency,
                                    timeout_s=config.evaluation.timeout_s,
                                    results_dir=out_dir / RESULTS_DIR,
                                    oracle_tests=config.benchmark.oracle_tests)
                controller = SearchController(config, store, runner, questions.search,
                                              questions.heldout, RichReporter(progress),
                                              questions.confirm)
                outcome = await controller.run()
                reused = deployment.reuse_report()
    except BaseExceptionGroup as group:
        _raise_first_itas_error(group)
    return write_outputs(config, store, outcome, out_dir, console if show_progress else None,
                         benchmark=questions.benchmark, reused_services=reused)


def _raise_first_itas_error(group: BaseExceptionGroup[Any]) -> NoReturn:
    """Task groups wrap errors; one itas error (a config problem, a broker that went away)
    reads better than a tree of tracebacks. Anything else keeps its group."""
    errors = [e for e in leaf_exceptions(group) if isinstance(e, ItasError)]
    if errors:
        raise errors[0] from group
    raise group


async def _watch_signals(scope: anyio.CancelScope, received: list[int]) -> None:
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for signum in signals:
            if not received:
                received.append(signum)
                scope.cancel()  # later signals while shutting down are ignored


async def run_search_until_stopped(config: SearchConfig, out_dir: Path, *, resume: bool,
                                   show_progress: bool = True) -> dict[str, Any]:
    """``run_search`` that SIGINT/SIGTERM stop cleanly: the trials in flight are cancelled,
    every process the search started is stopped, and ``SearchStopped`` says how to resume.

    Without this the interpreter's default SIGINT handling cancels the main task from
    outside the task groups, which inner cancel scopes can absorb and the search then
    carries on to write outputs it never computed."""
    received: list[int] = []
    result: dict[str, Any] | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, tg.cancel_scope, received)
            result = await run_search(config, out_dir, resume=resume,
                                      show_progress=show_progress)
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        _raise_first_itas_error(group)
    if result is None:
        raise SearchStopped(received[0] if received else signal.SIGINT, out_dir)
    return result


def run_search_cli(config_path: str | os.PathLike[str], *, resume: bool = False,
                   out_dir: str | os.PathLike[str] | None = None, progress: bool = True,
                   sim: bool = False) -> dict[str, Any]:
    """``itas search CONFIG [--out DIR] [--resume] [--no-progress] [--sim]``: blocking entry
    point; raises ``SearchStopped`` after SIGINT/SIGTERM."""
    config = load_search_config(Path(config_path))
    if sim:
        config = simulated_config(config)
    target = Path(out_dir) if out_dir is not None else DEFAULT_OUT_ROOT / config.name
    return anyio.run(lambda: run_search_until_stopped(config, target, resume=resume,
                                                      show_progress=progress))
