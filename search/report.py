"""What a search leaves behind: leaderboard, convergence plot, JSON summary, best spec and
the pool that reproduces it.

Every score is reported with its standard error (``±SE``), measured on the questions it
names: ``search`` (the trial questions), ``confirm`` (the finalists' fresh questions, on
which the best was chosen) and ``held-out`` (never used to choose). "Beats the best single
model" is a paired difference on the same held-out questions, with its 95% interval and
the probability that the best architecture is really better (normal approximation and
paired bootstrap), not a bare comparison of two noisy means.

Portable results: ``best.yaml`` is the architecture; ``best.pool.yaml`` is a pool with an
agent for every service it calls, each with the settings the search measured (a sim
model's skill and seed, a real model's base URL and cache...), and ``summary.json``'s
``reproduce`` gives the commands that re-measure the held-out score from those two
files. Services the search reused instead of starting are listed with whether their
settings were checked (``search.deploy``).

Call accounting, precisely (``calls`` in the summary):

- ``naive``: LLM calls if every evaluation the search proposed (model ranking, every
  strategy's trials, reused ones included) had run all its questions with no cache and no
  reuse: the sum of the calls each evaluation's queries reported.
- ``made``: calls that reached a provider: the calls of evaluations actually run, minus
  those the response cache answered (``cached_calls``). Reused trials (an architecture
  another strategy had already evaluated) add nothing.
- Points over the budget are never proposed (strategies choose among valid points), so
  they appear in neither figure; the summary reports how many points the budget excluded.
- Confirmation and held-out re-scoring are counted apart (``confirm_calls``,
  ``heldout_calls``).

Costs: ``cost.usd`` sums what the calls cost; ``cost.known`` is False when some call's
model has no price (``itas.agents.providers.prices``), and tables then show "unknown" or
">= $x" rather than a made-up total.

Note: the ``sim`` provider bypasses the response cache unless its settings say
``cache: true``; real providers cache by default. Without the cache, ``made`` only
saves the reused trials.
"""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from itas.benchmarks.registry import ResolvedBenchmark
from itas.search.config import SearchConfig
from itas.search.controller import (
    CONFIRM,
    HELDOUT,
    SEARCH,
    SearchOutcome,
    by_search_objective,
)
from itas.search.deploy import pool_entries
from itas.search.space import KEY_LEGEND, SearchSpace
from itas.search.stats import PairedDifference
from itas.search.store import Measurement, Record, TrialStore

SUMMARY_FILE = "summary.json"
PLOT_FILE = "convergence.png"
BEST_SPEC_FILE = "best.yaml"
BEST_POOL_FILE = "best.pool.yaml"
BENCHMARK_FILE = "benchmark.yaml"
LEADERBOARD_FILE = "leaderboard.txt"
LEADERBOARD_ROWS = 15
LEADERBOARD_WIDTH = 160


def scored(result: Measurement) -> str:
    return f"{result.score:.3f} ±{result.stderr:.3f}"


def cost_text(usd: float, known: bool) -> str:
    if known:
        return f"${usd:.4f}"
    return "unknown" if usd == 0 else f">= ${usd:.4f}"


def convergence(store: TrialStore, strategy: str, seed: Record | None = None
                ) -> dict[str, list[Any]]:
    """Best search score so far (and that trial's standard error) against evaluations and
    against calls (naive) spent.

    Reused trials count at the calls they cost when first made, so each strategy is shown
    as if it had run alone. The free single-model observation, if any, is evaluation 0.
    """
    trials = sorted(store.trials(strategy), key=lambda r: r.index or 0)
    evals, calls, best, best_se = [], [], [], []
    spent, top = 0, None
    if seed is not None:
        evals.append(0)
        calls.append(0)
        top = seed.result
        best.append(top.score)
        best_se.append(top.stderr)
    for record in trials:
        spent += record.result.calls
        if top is None or record.result.score > top.score:
            top = record.result
        evals.append(record.index or 0)
        calls.append(spent)
        best.append(top.score)
        best_se.append(top.stderr)
    return {"evaluations": evals, "calls": calls, "best_score": best, "best_stderr": best_se}


def call_accounting(store: TrialStore) -> dict[str, int]:
    search = [r for r in store.records if r.split == SEARCH]
    confirm = [r for r in store.records if r.split == CONFIRM]
    heldout = [r for r in store.records if r.split == HELDOUT]
    return {
        "naive": sum(r.result.calls for r in search),
        "made": sum(r.result.calls_made for r in search if not r.reused),
        "cached": sum(r.result.cached_calls for r in search if not r.reused),
        "reused_trials": sum(1 for r in search if r.reused),
        "confirm_calls": sum(r.result.calls for r in confirm),
        "heldout_calls": sum(r.result.calls for r in heldout),
        "heldout_calls_made": sum(r.result.calls_made for r in heldout),
    }


def _cost(store: TrialStore) -> dict[str, Any]:
    run = [r for r in store.records if not r.reused]
    return {"usd": sum(r.result.cost_usd for r in run),
            "known": all(r.result.cost_known for r in run)}


def versus_statement(diff: PairedDifference | None, best: str, single: str | None) -> str:
    if diff is None or single is None:
        return "the best architecture is a single model; nothing to compare"
    verdict = ("beats" if diff.low > 0 else "is worse than" if diff.high < 0
               else "is not distinguishable from")
    return (f"{best} {verdict} {single} alone on held-out: {diff.mean:+.3f} ± "
            f"{diff.stderr:.3f} (95% CI [{diff.low:+.3f}, {diff.high:+.3f}], "
            f"P(better) {diff.p_better:.2f}, bootstrap {diff.bootstrap_p_better:.2f}, "
            f"{diff.n} paired questions)")


def reproduce(config: SearchConfig, benchmark: ResolvedBenchmark, out_dir: Path,
              heldout: Record | None) -> dict[str, Any]:
    """The commands that re-measure the best architecture's held-out score from the files
    the search wrote, and the score they should give (paths made absolute, so the commands
    work from any folder)."""
    out_dir = out_dir.resolve()
    bench = config.benchmark
    if benchmark.definition is not None:
        definition = benchmark.definition.model_dump(mode="json", exclude_defaults=True)
        (out_dir / BENCHMARK_FILE).write_text(yaml.safe_dump(definition, sort_keys=False))
        target = str(out_dir / BENCHMARK_FILE)
    else:
        target = benchmark.name
    evaluate = ["itas", "eval", "--arch", str(out_dir / BEST_SPEC_FILE), "--benchmark", target,
                "--split", HELDOUT, "--limit", str(bench.heldout), "--seed", str(bench.seed),
                "--broker", "tcp://127.0.0.1:5555"]
    if bench.data_dir and benchmark.definition is None:
        evaluate += ["--data-dir", bench.data_dir]
    if bench.oracle_tests:
        evaluate.append("--oracle-tests")
    return {
        "pool": str(out_dir / BEST_POOL_FILE),
        "commands": [shlex.join(["itas", "up", "--pool", str(out_dir / BEST_POOL_FILE)]),
                     shlex.join(evaluate)],
        "expected_heldout_score": None if heldout is None else heldout.result.score,
        "heldout_questions": None if heldout is None else heldout.result.n,
    }


def summary(config: SearchConfig, store: TrialStore, outcome: SearchOutcome,
            out_dir: Path, benchmark: ResolvedBenchmark | None = None,
            reused_services: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    space = outcome.space
    heldout = {r.key: r for r in outcome.heldout}
    best = outcome.best
    singles = outcome.single_heldout
    best_single = max(singles, key=lambda r: r.result.score) if singles else None
    seed = _seed_record(outcome)
    strategies = {}
    for name in config.search.strategies:
        trials = store.trials(name)
        if not trials:
            continue
        top = max(trials, key=lambda r: (r.objective or 0.0, -(r.index or 0)))
        strategies[name] = {
            "trials": len(trials),
            "evaluated": sum(1 for r in trials if not r.reused),
            "best": _brief(top),
            "first_reached_best_at": min(r.index or 0 for r in trials
                                         if r.objective == top.objective),
            "convergence": convergence(store, name, seed),
        }
    best_held = heldout.get(best.key)
    finalist = next((f for f in outcome.finalists if f.trial.key == best.key), None)
    diff = outcome.versus_single
    resolved = benchmark or ResolvedBenchmark(config.benchmark.name)
    return {
        "name": config.name,
        "benchmark": {"name": resolved.name, "identity": resolved.identity(),
                      "seed": config.benchmark.seed,
                      "selection_tests": "oracle" if config.benchmark.oracle_tests
                      else "visible",
                      "search_questions": outcome.ranking[0].result.n if outcome.ranking
                      else None,
                      "confirm_questions": max((f.confirm.n for f in outcome.finalists),
                                               default=0),
                      "heldout_questions": best_held.result.n if best_held else None},
        "budget_calls_per_query": config.budget.calls_per_query,
        "space": _space_summary(space),
        "models": [m.model_dump(mode="json") for m in config.models],
        "ranking": [{"model": r.model, "score": r.result.score, "stderr": r.result.stderr}
                    for r in outcome.ranking],
        "judge": space.judge.name,
        "strategies": strategies,
        "finalists": [{"key": f.trial.key, "search_score": f.trial.result.score,
                       "search_stderr": f.trial.result.stderr,
                       "confirm_score": f.confirm.score, "confirm_stderr": f.confirm.stderr,
                       "confirm_questions": f.confirm.n, "confirm_objective": f.objective,
                       "dropped_in_round": f.dropped_in} for f in outcome.finalists],
        "best": {**_brief(best), "chosen_on": CONFIRM if finalist else SEARCH,
                 "confirm_score": finalist.confirm.score if finalist else None,
                 "confirm_stderr": finalist.confirm.stderr if finalist else None,
                 "spec_file": str(out_dir / BEST_SPEC_FILE),
                 "pool_file": str(out_dir / BEST_POOL_FILE),
                 "heldout_score": best_held.result.score if best_held else None,
                 "heldout_stderr": best_held.result.stderr if best_held else None},
        "best_single_model": None if best_single is None else {
            "model": best_single.model, "heldout_score": best_single.result.score,
            "heldout_stderr": best_single.result.stderr},
        "versus_best_single_on_heldout": {
            **(diff.to_dict() if diff else {}),
            "statement": versus_statement(diff, best.key,
                                          best_single.model if best_single and diff else None)},
        "heldout": [{"key": r.key, "search_score": r.extra.get("search_score"),
                     "confirm_score": r.extra.get("confirm_score"),
                     "heldout_score": r.result.score, "heldout_stderr": r.result.stderr,
                     "calls_per_query": r.calls_per_query}
                    for r in outcome.heldout],
        "single_models_heldout": [{"model": r.model, "score": r.result.score,
                                   "stderr": r.result.stderr} for r in singles],
        "reused_services": reused_services or [],
        "reproduce": reproduce(config, resolved, out_dir, best_held),
        "calls": call_accounting(store),
        "cost": _cost(store),
        "time_s": outcome.time_s,
    }


def _seed_record(outcome: SearchOutcome) -> Record | None:
    if outcome.space.single_model_point() is None or not outcome.ranking:
        return None
    return outcome.ranking[0]


def _brief(record: Record) -> dict[str, Any]:
    return {"key": record.key, "strategy": record.strategy, "index": record.index,
            "score": record.result.score, "stderr": record.result.stderr,
            "objective": record.objective, "calls_per_query": record.calls_per_query,
            "reused": record.reused}


def _space_summary(space: SearchSpace) -> dict[str, Any]:
    return {"valid_points": len(space.valid_points),
            "dimensions": {d.name: list(d.values) for d in space.dimensions},
            "models_ranked": [m.name for m in space.ranked_models]}


def leaderboard(store: TrialStore, outcome: SearchOutcome,
                rows: int = LEADERBOARD_ROWS) -> Table:
    """The best distinct architectures by search objective, with confirm and held-out
    scores (each ± its standard error); the chosen best is marked."""
    heldout = {r.key: r.result for r in outcome.heldout}
    confirmed = {f.trial.key: f.confirm for f in outcome.finalists}
    firsts: dict[str, Record] = {r.key: r for r in outcome.evaluated}
    for record in store.trials():
        if not record.reused:
            firsts.setdefault(record.key, record)
    # In the order the best was chosen: the finalists as the confirm questions ranked them
    # (the best first), then the rest by search objective, ties to fewer calls per query,
    # then by key (``SearchController.leaders``'s order), so row 1 is best.yaml.
    finalists = [firsts[f.trial.key] for f in outcome.finalists if f.trial.key in firsts]
    if outcome.best.key in firsts and outcome.best.key not in {r.key for r in finalists}:
        finalists.insert(0, firsts[outcome.best.key])
    chosen = {r.key for r in finalists}
    ranked = (finalists + [r for r in by_search_objective(firsts.values())
                           if r.key not in chosen])[:max(rows, len(finalists))]
    table = Table(title=f"ITAS leaderboard: {len(firsts)} architectures evaluated "
                        "(scores ± standard error)",
                  caption=("order: " + ("finalists by confirm score, then the rest "
                                        if finalists[1:] else "")
                           + "by search objective; ties go to fewer calls per query, then "
                             "by key\n" + KEY_LEGEND))
    for column in ("#", "architecture", "strategy", "search", "confirm", "held-out",
                   "calls/query", "calls made", "cost", "time s"):
        table.add_column(column, justify="left" if column == "architecture" else "right",
                         no_wrap=True)
    for i, record in enumerate(ranked, 1):
        held, confirm = heldout.get(record.key), confirmed.get(record.key)
        mark = " (best)" if record.key == outcome.best.key else ""
        found_by = (f"{record.strategy}#{record.index}" if record.index is not None
                    else str(record.strategy))
        table.add_row(str(i), record.key + mark, found_by,
                      scored(record.result), "" if confirm is None else scored(confirm),
                      "" if held is None else scored(held), str(record.calls_per_query),
                      str(record.result.calls_made),
                      cost_text(record.result.cost_usd, record.result.cost_known),
                      f"{record.result.time_s:.1f}")
    for single in outcome.single_heldout:
        ranking = next((r for r in outcome.ranking if r.model == single.model), None)
        table.add_row("-", f"{single.model} alone", "baseline",
                      "" if ranking is None else scored(ranking.result), "",
                      scored(single.result), "1", "", "", "")
    return table


def plot_convergence(curves: dict[str, dict[str, list[float]]], path: Path,
                     title: str) -> Path | None:
    """Best score so far per strategy, with a ±1 SE band, against evaluations and against
    calls; None when matplotlib (extra ``plots``) is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (by_evals, by_calls) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, curve in curves.items():
        se = curve.get("best_stderr") or [0.0] * len(curve["best_score"])
        low = [b - e for b, e in zip(curve["best_score"], se, strict=True)]
        high = [b + e for b, e in zip(curve["best_score"], se, strict=True)]
        for axis, xs in ((by_evals, curve["evaluations"]), (by_calls, curve["calls"])):
            line = axis.step(xs, curve["best_score"], where="post", label=name)[0]
            axis.fill_between(xs, low, high, step="post", alpha=0.2, color=line.get_color())
    by_evals.set_xlabel("evaluations")
    by_calls.set_xlabel("LLM calls spent (naive)")
    for axis in (by_evals, by_calls):
        axis.set_ylabel("best search score so far (±1 SE)")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_best_pool(config: SearchConfig, spec: dict[str, Any], path: Path) -> Path:
    """A pool file serving every service of ``spec`` with the search's model settings."""
    from itas.spec import parse_architecture

    arch = parse_architecture(spec, "best architecture")
    entries = pool_entries(arch.services, config.models, replicas=1)
    agents = [{"kind": e.kind, "replicas": e.replicas, "settings": dict(e.settings)}
              for e in entries]
    header = (f"# The agents that serve {arch.name} with the settings search {config.name!r} "
              "measured it with.\n# Reproduce its held-out score: see summary.json "
              "'reproduce'.\n")
    path.write_text(header + yaml.safe_dump({"agents": agents}, sort_keys=False))
    return path


def write_outputs(config: SearchConfig, store: TrialStore, outcome: SearchOutcome,
                  out_dir: Path, console: Console | None = None, *,
                  benchmark: ResolvedBenchmark | None = None,
                  reused_services: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write best.yaml, best.pool.yaml, summary.json, convergence.png and leaderboard.txt;
    return the summary (with the paths written)."""
    from itas.spec import parse_architecture

    best_arch = parse_architecture(outcome.best.spec, f"trial {outcome.best.key}")
    best_arch.dump(out_dir / BEST_SPEC_FILE)
    write_best_pool(config, outcome.best.spec, out_dir / BEST_POOL_FILE)
    data = summary(config, store, outcome, out_dir, benchmark, reused_services)
    curves = {name: s["convergence"] for name, s in data["strategies"].items()}
    plot = plot_convergence(curves, out_dir / PLOT_FILE,
                            f"{config.name}: {data['benchmark']['name']}, budget "
                            f"{config.budget.calls_per_query} calls/query")
    data["key_legend"] = KEY_LEGEND
    data["files"] = {"best_spec": str(out_dir / BEST_SPEC_FILE),
                     "best_pool": str(out_dir / BEST_POOL_FILE),
                     "summary": str(out_dir / SUMMARY_FILE),
                     "plot": None if plot is None else str(plot),
                     "leaderboard": str(out_dir / LEADERBOARD_FILE),
                     "trials": str(store.path)}
    (out_dir / SUMMARY_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    table = leaderboard(store, outcome)
    recorder = Console(record=True, width=LEADERBOARD_WIDTH, file=io.StringIO())
    recorder.print(table)
    recorder.print(data["versus_best_single_on_heldout"]["statement"])
    (out_dir / LEADERBOARD_FILE).write_text(recorder.export_text(), encoding="utf-8")
    if console is not None:
        console.print(table)
        console.print(data["versus_best_single_on_heldout"]["statement"], highlight=False)
        if data["benchmark"]["selection_tests"] == "oracle":
            console.print("ORACLE: selection saw the grading tests; scores are an oracle "
                          "pass@k, not a pass@1", highlight=False)
    return data
