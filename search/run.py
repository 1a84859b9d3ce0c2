"""``itas search CONFIG``: a whole search on the deployed mesh, with progress and outputs.

``run_search_cli`` is what the CLI calls; ``run_search`` is the same as a coroutine for
callers that already run an event loop. Outputs land in ``out_dir`` (default
``search-runs/<config name>``): ``trials.jsonl`` (every evaluation; ``--resume`` continues
from it), ``best.yaml`` (the best architecture, for ``itas ask`` / ``itas eval``),
``summary.json``, ``convergence.png``, ``leaderboard.txt`` and ``answers/`` (every answered
question per architecture, in ``itas eval``'s results format).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from itas.benchmarks import HELDOUT, SEARCH, Question, load_benchmark
from itas.client import AsyncClient
from itas.errors import ConfigError, ItasError, leaf_exceptions
from itas.search.config import SearchConfig, load_search_config
from itas.search.controller import SearchController
from itas.search.deploy import deployed
from itas.search.report import write_outputs
from itas.search.runners import MeshRunner
from itas.search.store import Record, TrialStore

DEFAULT_OUT_ROOT = Path("search-runs")
RESULTS_DIR = "answers"  # per-architecture question results (itas eval's format)


class RichReporter:
    """A rich progress display: one bar per phase (ranking, each strategy, re-scoring)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None

    def phase(self, name: str, total: int) -> None:
        self.task = self.progress.add_task(name, total=total, best="")

    def advance(self, record: Record, best: float | None) -> None:
        text = "" if best is None else f"best objective {best:.3f}"
        self.progress.update(self.task, advance=1, best=f"{text}  last {record.key} "
                             f"{record.result.score:.3f}")


def load_questions(config: SearchConfig) -> tuple[list[Question], list[Question]]:
    bench = config.benchmark
    found = []
    for split, limit in ((SEARCH, bench.search), (HELDOUT, bench.heldout)):
        questions = load_benchmark(bench.name, split=split, limit=limit, seed=bench.seed,
                                   data_dir=bench.data_dir)
        if not questions:
            raise ConfigError(f"benchmark {bench.name!r}: the {split} split is empty")
        found.append(questions)
    return found[0], found[1]


async def run_search(config: SearchConfig, out_dir: Path, *, resume: bool,
                     console: Console | None = None, show_progress: bool = True
                     ) -> dict[str, Any]:
    """Run (or resume) the search of ``config``; return the summary written to out_dir."""
    search_questions, heldout_questions = load_questions(config)
    store = TrialStore.open(out_dir, config.fingerprint(), resume=resume,
                            describe=config.result_fields())
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
                                    results_dir=out_dir / RESULTS_DIR)
                controller = SearchController(config, store, runner, search_questions,
                                              heldout_questions, RichReporter(progress))
                outcome = await controller.run()
    except BaseExceptionGroup as group:
        # Task groups wrap errors; one itas error (a config problem, a broker that went
        # away) reads better than a tree of tracebacks.
        errors = [e for e in leaf_exceptions(group) if isinstance(e, ItasError)]
        if errors:
            raise errors[0] from group
        raise
    return write_outputs(config, store, outcome, out_dir, console if show_progress else None)


def run_search_cli(config_path: str | os.PathLike[str], *, resume: bool = False,
                   out_dir: str | os.PathLike[str] | None = None, progress: bool = True
                   ) -> dict[str, Any]:
    """``itas search CONFIG [--out DIR] [--resume] [--no-progress]``: blocking entry point."""
    config = load_search_config(Path(config_path))
    target = Path(out_dir) if out_dir is not None else DEFAULT_OUT_ROOT / config.name
    return anyio.run(lambda: run_search(config, target, resume=resume,
                                        show_progress=progress))
