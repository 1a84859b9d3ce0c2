"""What a search leaves behind: leaderboard, convergence plot, JSON summary, best spec.

Call accounting, precisely (``calls`` in the summary):

- ``naive``: LLM calls if every evaluation the search proposed (model ranking, every
  strategy's trials, reused ones included) had run all its questions with no cache and no
  reuse: the sum of the calls each evaluation's queries reported.
- ``made``: calls that reached a provider: the calls of evaluations actually run, minus
  those the response cache answered (``cached_calls``). Reused trials (an architecture
  another strategy had already evaluated) add nothing.
- Points over the budget are never proposed (strategies choose among valid points), so
  they appear in neither figure; the summary reports how many points the budget excluded.
- Held-out re-scoring is counted apart (``heldout_calls``).

Note: the ``sim`` provider bypasses the response cache unless its settings say
``cache: true``; real providers cache by default. Without the cache, ``made`` only
saves the reused trials.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from itas.search.config import SearchConfig
from itas.search.controller import HELDOUT, SearchOutcome
from itas.search.space import SearchSpace
from itas.search.store import Record, TrialStore

SUMMARY_FILE = "summary.json"
PLOT_FILE = "convergence.png"
BEST_SPEC_FILE = "best.yaml"
LEADERBOARD_FILE = "leaderboard.txt"
LEADERBOARD_ROWS = 15


def convergence(store: TrialStore, strategy: str, seed: Record | None = None
                ) -> dict[str, list[Any]]:
    """Best search score so far against evaluations and against calls (naive) spent.

    Reused trials count at the calls they cost when first made, so each strategy is shown
    as if it had run alone. The free single-model observation, if any, is evaluation 0.
    """
    trials = sorted(store.trials(strategy), key=lambda r: r.index or 0)
    evals, calls, best = [], [], []
    spent, top = 0, None
    if seed is not None:
        evals.append(0)
        calls.append(0)
        top = seed.result.score
        best.append(top)
    for record in trials:
        spent += record.result.calls
        top = record.result.score if top is None else max(top, record.result.score)
        evals.append(record.index or 0)
        calls.append(spent)
        best.append(top)
    return {"evaluations": evals, "calls": calls, "best_score": best}


def call_accounting(store: TrialStore) -> dict[str, int]:
    search = [r for r in store.records if r.split == "search"]
    heldout = [r for r in store.records if r.split == HELDOUT]
    return {
        "naive": sum(r.result.calls for r in search),
        "made": sum(r.result.calls_made for r in search if not r.reused),
        "cached": sum(r.result.cached_calls for r in search if not r.reused),
        "reused_trials": sum(1 for r in search if r.reused),
        "heldout_calls": sum(r.result.calls for r in heldout),
        "heldout_calls_made": sum(r.result.calls_made for r in heldout),
    }


def summary(config: SearchConfig, store: TrialStore, outcome: SearchOutcome,
            out_dir: Path) -> dict[str, Any]:
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
    return {
        "name": config.name,
        "benchmark": {"name": config.benchmark.name,
                      "search_questions": outcome.ranking[0].result.n if outcome.ranking
                      else None,
                      "heldout_questions": best_held.result.n if best_held else None},
        "budget_calls_per_query": config.budget.calls_per_query,
        "space": _space_summary(space),
        "ranking": [{"model": r.model, "score": r.result.score} for r in outcome.ranking],
        "judge": space.judge.name,
        "strategies": strategies,
        "best": {**_brief(best), "spec_file": str(out_dir / BEST_SPEC_FILE),
                 "heldout_score": best_held.result.score if best_held else None},
        "best_single_model": None if best_single is None else {
            "model": best_single.model, "heldout_score": best_single.result.score},
        "beats_best_single_on_heldout": (
            None if best_held is None or best_single is None
            else best_held.result.score > best_single.result.score),
        "heldout": [{"key": r.key, "search_score": r.extra.get("search_score"),
                     "heldout_score": r.result.score, "calls_per_query": r.calls_per_query}
                    for r in outcome.heldout],
        "single_models_heldout": [{"model": r.model, "score": r.result.score}
                                  for r in singles],
        "calls": call_accounting(store),
        "time_s": outcome.time_s,
    }


def _seed_record(outcome: SearchOutcome) -> Record | None:
    if outcome.space.single_model_point() is None or not outcome.ranking:
        return None
    return outcome.ranking[0]


def _brief(record: Record) -> dict[str, Any]:
    return {"key": record.key, "strategy": record.strategy, "index": record.index,
            "score": record.result.score, "objective": record.objective,
            "calls_per_query": record.calls_per_query, "reused": record.reused}


def _space_summary(space: SearchSpace) -> dict[str, Any]:
    return {"valid_points": len(space.valid_points),
            "dimensions": {d.name: list(d.values) for d in space.dimensions},
            "models_ranked": [m.name for m in space.ranked_models]}


def leaderboard(store: TrialStore, outcome: SearchOutcome,
                rows: int = LEADERBOARD_ROWS) -> Table:
    """The best distinct architectures by search objective, with held-out scores."""
    heldout = {r.key: r.result.score for r in outcome.heldout}
    firsts: dict[str, Record] = {}
    for record in store.trials():
        if not record.reused:
            firsts.setdefault(record.key, record)
    ranked = sorted(firsts.values(),
                    key=lambda r: (-(r.objective or 0.0), r.calls_per_query or 0))[:rows]
    table = Table(title=f"ITAS leaderboard: {len(firsts)} architectures evaluated")
    for column in ("#", "architecture", "strategy", "search", "held-out", "calls/query",
                   "calls made", "time s"):
        table.add_column(column, justify="left" if column == "architecture" else "right",
                         no_wrap=column in ("architecture", "strategy"))
    for i, record in enumerate(ranked, 1):
        held = heldout.get(record.key)
        table.add_row(str(i), record.key, f"{record.strategy}#{record.index}",
                      f"{record.result.score:.3f}", "" if held is None else f"{held:.3f}",
                      str(record.calls_per_query), str(record.result.calls_made),
                      f"{record.result.time_s:.1f}")
    for single in outcome.single_heldout:
        ranking = next((r for r in outcome.ranking if r.model == single.model), None)
        table.add_row("-", f"{single.model} alone", "baseline",
                      "" if ranking is None else f"{ranking.result.score:.3f}",
                      f"{single.result.score:.3f}", "1", "", "")
    return table


def plot_convergence(curves: dict[str, dict[str, list[float]]], path: Path,
                     title: str) -> Path | None:
    """Best score so far per strategy, against evaluations and against calls; None when
    matplotlib (extra ``plots``) is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (by_evals, by_calls) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, curve in curves.items():
        by_evals.step(curve["evaluations"], curve["best_score"], where="post", label=name)
        by_calls.step(curve["calls"], curve["best_score"], where="post", label=name)
    by_evals.set_xlabel("evaluations")
    by_calls.set_xlabel("LLM calls spent (naive)")
    for axis in (by_evals, by_calls):
        axis.set_ylabel("best search score so far")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(config: SearchConfig, store: TrialStore, outcome: SearchOutcome,
                  out_dir: Path, console: Console | None = None) -> dict[str, Any]:
    """Write best.yaml, summary.json, convergence.png and leaderboard.txt; return the
    summary (with the paths written)."""
    from itas.spec import parse_architecture

    best_arch = parse_architecture(outcome.best.spec, f"trial {outcome.best.key}")
    best_arch.dump(out_dir / BEST_SPEC_FILE)
    data = summary(config, store, outcome, out_dir)
    curves = {name: s["convergence"] for name, s in data["strategies"].items()}
    plot = plot_convergence(curves, out_dir / PLOT_FILE,
                            f"{config.name}: {config.benchmark.name}, budget "
                            f"{config.budget.calls_per_query} calls/query")
    data["files"] = {"best_spec": str(out_dir / BEST_SPEC_FILE),
                     "summary": str(out_dir / SUMMARY_FILE),
                     "plot": None if plot is None else str(plot),
                     "leaderboard": str(out_dir / LEADERBOARD_FILE),
                     "trials": str(store.path)}
    (out_dir / SUMMARY_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    table = leaderboard(store, outcome)
    recorder = Console(record=True, width=120, file=io.StringIO())
    recorder.print(table)
    (out_dir / LEADERBOARD_FILE).write_text(recorder.export_text(), encoding="utf-8")
    if console is not None:
        console.print(table)
    return data

