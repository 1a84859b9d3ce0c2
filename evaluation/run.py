"""``itas eval``: architectures scored on a benchmark through a running mesh, with outputs.

The command connects to a broker (where ``itas up --pool ...`` runs the agents
and an orchestrator), checks that every service it will call has a worker (so
a missing agent is one clear error, not a timeout per question), then
evaluates each architecture in turn with ``evaluate`` over ``ViaBroker``. The
benchmark is a built-in name or one of the user's own (a YAML definition, or a JSONL/JSON
file plus fields; see ``itas.benchmarks.custom``). The output directory holds
``run.json`` (the fingerprint of what is measured: benchmark, split, seed, the questions'
digest, the architectures, the selection tests, the judge; see ``manifest``),
``results.jsonl`` (per question, the resume log shared by all architectures),
``baseline.jsonl`` (pairwise benchmarks: the baseline architecture's answers),
``summary.json`` (rewritten after each architecture) and, with several architectures,
``comparison.png``. Rerunning with the same ``--out`` resumes: only questions without a
record run; a rerun that would measure anything else (another benchmark, data, split,
seed, set of architectures, judge, selection tests) is refused with what differs.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console

from itas.benchmarks.question import Question, questions_digest
from itas.benchmarks.registry import ResolvedBenchmark, resolve_benchmark
from itas.benchmarks.scoring import scorer_for
from itas.benchmarks.selection import ORACLE, VISIBLE
from itas.benchmarks.splits import select
from itas.client import AsyncClient
from itas.deploy import simulated, simulated_service
from itas.errors import ConfigError, ItasError
from itas.evaluation.evaluate import (
    DEFAULT_CONCURRENCY,
    EvalSummary,
    arch_label,
    collect_answers,
    evaluate,
    needs_missing_judge,
)
from itas.evaluation.judging import ServiceJudge, is_pairwise, judge_service, rating_scale
from itas.evaluation.manifest import read_manifest, refuse_if_different, write_manifest
from itas.evaluation.official import (
    file_digest,
    load_baseline_answers,
    load_judge_prompts,
    load_reference_answers,
    with_references,
)
from itas.evaluation.report import (
    ProgressBoard,
    comparison_chart,
    console_for,
    print_report,
)
from itas.orchestrator.runner import DEFAULT_CALL_TIMEOUT_S, ViaBroker
from itas.query import ORCHESTRATOR_SERVICE
from itas.spec import Architecture, load_architecture
from itas.stack import resolve_config

RUNS_DIR = Path("runs")
RESULTS_FILE = "results.jsonl"
BASELINE_FILE = "baseline.jsonl"
SUMMARY_FILE = "summary.json"
CHART_FILE = "comparison.png"
MANIFEST_FILE = "run.json"
MANIFEST_KIND = "itas-eval/1"
STATUS_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class EvalOptions:
    archs: Sequence[str]  # files or packaged names
    benchmark: str  # a built-in name, a YAML definition or a JSONL/JSON data file
    benchmark_fields: Mapping[str, Any] | None = None  # definition fields for a data file
    oracle_tests: bool = False  # selection sees the grading tests (labelled everywhere)
    split: str | None = None
    limit: int | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    broker: str = "tcp://127.0.0.1:5555"
    out: Path | None = None
    judge: str | None = None
    baseline: str | None = None
    data_dir: Path | None = None
    seed: int = 0
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    retry_errors: bool = False
    curve: Any = None
    judge_prompts: Path | None = None  # FastChat judge_prompts.jsonl, Arena-Hard config
    reference_answers: Path | None = None  # FastChat reference answers (MT-Bench)
    baseline_answers: Path | None = None  # Arena-Hard model_answer file of the baseline
    sim: bool = False  # dry run: every model (judge included) simulated, names say so


def default_out_dir() -> Path:
    return RUNS_DIR / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"


def load_archs(values: Sequence[str], *, sim: bool = False) -> list[Architecture]:
    """The ``--arch`` architectures; with ``sim``, each on simulated models of the same names
    (``itas.deploy.simulated``: the name ends ``[simulated]`` in every output)."""
    if not values:
        raise ConfigError("give at least one --arch FILE")
    archs = [load_architecture(resolve_config("architectures", v)) for v in values]
    if sim:
        archs = [simulated(a) for a in archs]
    names = [a.name for a in archs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ConfigError(f"two --arch files are both named {dup!r}; rename one so the "
                          "results and the comparison can tell them apart")
    return archs


def _digest(path: Path | None) -> str | None:
    return None if path is None else file_digest(path)


def _needs_baseline(questions: Sequence[Question]) -> bool:
    return any(is_pairwise(q.benchmark) and not isinstance(q.reference, str)
               for q in questions)


async def _check_services(client: AsyncClient, broker: str, services: Sequence[str]) -> None:
    try:
        status = await client.status(timeout=STATUS_TIMEOUT_S)
    except ItasError as e:
        raise ConfigError(f"no broker answered at {broker} ({e}); start the mesh with "
                          "`itas up --pool ...` or pass --broker") from e
    live = status.get("services", {})
    missing = [s for s in dict.fromkeys(services) if live.get(s, {}).get("workers", 0) == 0]
    if missing:
        raise ConfigError(f"no worker serves {', '.join(missing)} at {broker}; start agents "
                          "for them (`itas agents --arch FILE --broker ...` starts every agent "
                          "an architecture needs), or dry-run on simulated models with --sim")


def fingerprint(benchmark: ResolvedBenchmark, options: EvalOptions,
                questions: Sequence[Question], archs: Sequence[Architecture],
                judge_name: str | None, baseline: Architecture | None) -> dict[str, Any]:
    """What the results in an output folder measure (see the module docstring)."""
    return {
        "kind": MANIFEST_KIND, "benchmark": benchmark.identity(), "split": options.split,
        "seed": options.seed, "limit": options.limit,
        "questions": {"n": len(questions), "digest": questions_digest(questions)},
        "architectures": sorted(arch_label(a) for a in archs),
        "selection_tests": ORACLE if options.oracle_tests else VISIBLE,
        "judge": judge_name, "baseline": None if baseline is None else arch_label(baseline),
        "judge_prompts": _digest(options.judge_prompts),
        "baseline_answers": _digest(options.baseline_answers),
    }


def claim_out_dir(out: Path, current: Mapping[str, Any]) -> None:
    """Make ``out`` this run's folder, or refuse when it holds another run's results."""
    out.mkdir(parents=True, exist_ok=True)
    stored = read_manifest(out / MANIFEST_FILE)
    if stored is None:
        leftovers = [f for f in (RESULTS_FILE, BASELINE_FILE, SUMMARY_FILE) if (out / f).exists()]
        if leftovers:
            raise ConfigError(f"{out}: holds {', '.join(leftovers)} without a run fingerprint "
                              f"({MANIFEST_FILE}); it cannot be resumed safely; choose another "
                              "--out or delete the folder")
        write_manifest(out / MANIFEST_FILE, current)
        return
    refuse_if_different(f"--out {out}", stored, current,
                        "choose another --out (or delete the folder) to measure this run")


def _write_summary(path: Path, options: EvalOptions, benchmark: ResolvedBenchmark,
                   current: Mapping[str, Any], summaries: Sequence[EvalSummary],
                   scale: int | None) -> None:
    archs = []
    for s in summaries:
        entry = s.to_dict()
        if scale:
            entry["rating"] = {"scale": f"1-{scale}", "mean": s.score * scale,
                               "stderr": s.stderr * scale}
        archs.append(entry)
    data = {
        "benchmark": benchmark.name, "benchmark_identity": benchmark.identity(),
        "split": options.split, "limit": options.limit, "seed": options.seed,
        "questions": current["questions"], "selection_tests": current["selection_tests"],
        "judge": options.judge, "baseline": options.baseline, "architectures": archs,
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


async def run_eval(options: EvalOptions, console: Console | None = None) -> list[EvalSummary]:
    """Everything ``itas eval`` does; returns one summary per architecture."""
    console = console or console_for(sys.stdout)
    archs = load_archs(options.archs, sim=options.sim)
    benchmark = resolve_benchmark(options.benchmark, options.benchmark_fields)
    questions = select(benchmark.read(options.data_dir), options.split, options.limit,
                       options.seed)
    if options.reference_answers is not None:  # in the questions, so in their digest
        questions = with_references(questions, load_reference_answers(options.reference_answers))
    prompts = (load_judge_prompts(options.judge_prompts) if options.judge_prompts is not None
               else None)
    baseline_answers = (load_baseline_answers(options.baseline_answers)
                        if options.baseline_answers is not None else None)
    if not questions:
        raise ConfigError(f"benchmark {benchmark.name!r} (split {options.split}) has no "
                          "questions to evaluate")
    judge_name = judge_service(options.judge) if options.judge else None
    baseline = (load_architecture(resolve_config("architectures", options.baseline))
                if options.baseline else None)
    if options.sim:
        judge_name = judge_name and simulated_service(judge_name)
        baseline = baseline and simulated(baseline)
    scorer = scorer_for(questions[0].benchmark, kind=questions[0].scorer)
    scale = rating_scale(scorer, questions)
    if judge_name is None and needs_missing_judge(scorer, questions):
        raise ConfigError(f"{benchmark.name} is scored by an LLM judge; pass --judge "
                          "PROVIDER:MODEL (a judge agent for it must run, e.g. the pool "
                          "configs/pools/sim_judge.yaml serves judge@sim:strong)")
    if baseline is None and baseline_answers is None and _needs_baseline(questions):
        raise ConfigError(f"{benchmark.name} is judged against a baseline answer; pass "
                          "--baseline ARCH (its answers are the baseline) or "
                          "--baseline-answers FILE (e.g. Arena-Hard's gpt-4-0314.jsonl)")
    if (prompts is not None or baseline_answers is not None) and judge_name is None:
        raise ConfigError("--judge-prompts and --baseline-answers go with --judge "
                          "PROVIDER:MODEL")
    out = options.out or default_out_dir()
    current = fingerprint(benchmark, options, questions, archs, judge_name, baseline)
    claim_out_dir(out, current)
    services = [ORCHESTRATOR_SERVICE, *(s for a in archs for s in a.services)]
    if baseline is not None:
        services += baseline.services
    if judge_name:
        services.append(judge_name)
    title = benchmark.name + (f" ({options.split})" if options.split else "")
    if options.oracle_tests:
        title += ", ORACLE selection tests (pass@k, not pass@1)"
    summaries: list[EvalSummary] = []
    async with AsyncClient(options.broker, curve=options.curve,
                           timeout=options.timeout_s) as client:
        await _check_services(client, options.broker, services)
        runner = ViaBroker(client, timeout=options.timeout_s)
        judge = ServiceJudge(client, judge_name, timeout=options.timeout_s, prompts=prompts,
                             baselines=baseline_answers) if judge_name else None
        console.print(f"itas eval: {len(questions)} question(s) of {title}, "
                      f"{len(archs)} architecture(s), up to {options.concurrency} in flight; "
                      f"results in {out}", highlight=False)
        with ProgressBoard() as board:
            if baseline is not None and judge is not None:
                judge.baselines = await collect_answers(
                    baseline, questions, runner, concurrency=options.concurrency,
                    results_path=out / BASELINE_FILE, progress=board)
            for arch in archs:
                summaries.append(await evaluate(
                    arch, questions, runner, concurrency=options.concurrency,
                    results_path=out / RESULTS_FILE, progress=board, judge=judge,
                    retry_errors=options.retry_errors, oracle_tests=options.oracle_tests))
                _write_summary(out / SUMMARY_FILE, options, benchmark, current, summaries,
                               scale)
    print_report(summaries, f"itas eval: {title}", console, rating_scale=scale)
    (out / CHART_FILE).unlink(missing_ok=True)  # never leave a chart of another run
    if len(summaries) > 1:
        if importlib.util.find_spec("matplotlib") is None:
            console.print("comparison chart skipped: matplotlib is not installed "
                          "(pip install 'itas[plots]')")
        else:
            chart = await anyio.to_thread.run_sync(
                comparison_chart, summaries, out / CHART_FILE, title)
            console.print(f"comparison chart: {chart}", highlight=False)
    console.print(f"results: {out / RESULTS_FILE}; summary: {out / SUMMARY_FILE}",
                  highlight=False)
    return summaries

