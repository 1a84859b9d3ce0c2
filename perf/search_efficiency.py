"""How many evaluations BO needs to find the best architecture, against random search;
and how many LLM calls a search makes against how many it would make without reuse.

    python perf/search_efficiency.py [--json] [--quick] [--seeds 10] [--workers 2]

1. Space: ``configs/search/sim_gsm8k_efficiency.yaml`` (three sim models, 40 GSM8K
   search-split questions, every technique, budget 16 calls/query: 2,466 valid
   architectures). The models are ranked as the controller ranks them.
2. Exhaustive scoring: every valid point is evaluated on the search questions with the
   real orchestrator and eval API, in process (``itas.search.study``), through a request
   memo that is exact for sim agents; 20 points are re-scored without the memo to check
   that (``memo_mismatches`` must be 0). Scores are cached on disk
   ($ITAS_PERF_CACHE, default <tmp>/itas-perf) under a hash of what they depend on.
3. Optimum: the point with the highest search objective (score - cost_weight * calls /
   budget: accuracy first, ties to the cheaper architecture). "Finds it" = the first
   evaluation of that exact point: epsilon 0 on the objective (``n_optimal`` says how
   many points share the maximum; all would count).
4. Replays on the looked-up objective; both strategies first get the single best model's
   point for free, as in a real search. ``bo_evals``: mean over ``--seeds`` BO runs of
   the evaluations until the optimum is evaluated (a run still without it after
   ``--bo-cap`` counts as the cap; ``bo_found`` says how many found it). ``random_evals``:
   the same for random search over ``--random-seeds`` runs (cheap, so many: a 10-seed mean
   of random search varies by about +-20%); ``random_evals_same_seeds`` is its mean over
   the BO seeds and ``random_expected_evals`` the exact expectation (N+1)/(k+1) for N
   eligible points and k optimal ones. ``ratio`` = bo_evals / random_evals.
5. Calls: a real BO search (``SearchController`` in process, ``trials`` from the config),
   the sim response cache on and empty at the start. ``calls_naive`` = LLM calls its
   evaluations (model ranking + trials) reported, i.e. running every trial's questions
   without any reuse; ``calls_made`` = those the response cache did not answer (trials
   that share layers reuse each other's calls). BO never proposes a point over budget or
   one it has seen, so those save nothing here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_process

from itas.orchestrator.inprocess import InProcessCaller
from itas.search.config import SearchConfig, load_search_config
from itas.search.controller import SearchController
from itas.search.report import call_accounting
from itas.search.runners import InProcessRunner
from itas.search.space import Point, point_key
from itas.search.store import TrialStore
from itas.search.study import (
    Scored,
    pool_for,
    rank_models,
    replay_runs,
    score_space,
    search_questions,
    space_for,
    table_key,
    verify_memo,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "search" / "sim_gsm8k_efficiency.yaml"
CACHE_DIR = Path(os.environ.get("ITAS_PERF_CACHE", Path(tempfile.gettempdir()) / "itas-perf"))
TABLE_VERSION = "1"  # bump when scoring changes
MEMO_CHECK_POINTS = 20
SEEDS = 10
RANDOM_SEEDS = 1000
BO_CAP = 600
# --quick: a smoke run on a small space (651 points, 20 questions); not the claimed figures.
QUICK = {"budget": 8, "questions": 20, "seeds": 4, "random_seeds": 200, "trials": 15}

Table = dict[Point, Scored]


def quick_config(config: SearchConfig) -> SearchConfig:
    return config.model_copy(update={
        "budget": config.budget.model_copy(update={"calls_per_query": QUICK["budget"]}),
        "benchmark": config.benchmark.model_copy(update={"search": QUICK["questions"]}),
        "search": config.search.model_copy(update={"trials": QUICK["trials"]}),
    })


async def scored_table(config: SearchConfig, ranked: list[str], workers: int,
                       log: Callable[[str], None]) -> tuple[Table, dict[str, Any]]:
    """Every valid point's score, from the disk cache or scored now."""
    space = space_for(config, ranked)
    questions = search_questions(config)
    path = CACHE_DIR / f"table-{table_key(config, ranked, questions, TABLE_VERSION)}.json"
    if path.exists():
        data = json.loads(path.read_text())
        log(f"scores loaded from {path}")
    else:
        points = list(space.valid_points)
        log(f"scoring {len(points)} architectures x {len(questions)} questions on {workers} "
            "worker process(es)...")
        started = time.perf_counter()
        scored, requests, distinct = await score_space(config, ranked, points, workers)
        data = {"rows": [[list(s.point), s.score, s.calls, s.calls_per_query] for s in scored],
                "requests": requests, "distinct": distinct, "questions": len(questions),
                "time_s": time.perf_counter() - started}
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    table = {Point(*row[0]): Scored(Point(*row[0]), *row[1:]) for row in data["rows"]}
    info = {"architectures": len(table), "questions": data["questions"],
            "orchestrator_requests": data["requests"], "distinct_requests": data["distinct"],
            "llm_calls": sum(s.calls for s in table.values()),
            "time_s": round(data["time_s"], 1), "cache_file": str(path)}
    return table, info


async def replay(config: SearchConfig, ranked: list[str], objective: dict[Point, float],
                 targets: list[Point], free: dict[Point, float], strategy: str,
                 seeds: range, cap: int, workers: int) -> list[int | None]:
    """Seeded runs of ``strategy`` split over worker processes, results in seed order."""
    args = (config.model_dump(mode="json"), ranked,
            [[list(p), v] for p, v in objective.items()], [list(p) for p in targets],
            strategy)
    free_rows = [[list(p), v] for p, v in free.items()]
    chunks = [list(seeds)[i::workers] for i in range(workers)]
    found: dict[int, int | None] = {}
    limiter = anyio.CapacityLimiter(workers)

    async def run(chunk: list[int]) -> None:
        results = await anyio.to_process.run_sync(replay_runs, *args, chunk, cap, free_rows,
                                                   limiter=limiter)
        found.update(zip(chunk, results, strict=True))

    async with anyio.create_task_group() as tg:
        for chunk in chunks:
            if chunk:
                tg.start_soon(run, chunk)
    return [found[seed] for seed in seeds]


async def search_calls(config: SearchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """A real in-process BO search with the response cache on (fresh): its call figures."""
    bo_only = config.model_copy(update={"search": config.search.model_copy(
        update={"strategies": ("bo",), "parallel": 1})})
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ITAS_CACHE_DIR"] = str(Path(tmp) / "cache")  # read by the agents below
        store = TrialStore.open(Path(tmp) / "run", bo_only.fingerprint(), resume=False)
        log(f"running a BO search of {bo_only.search.trials} trials with the response cache...")
        started = time.perf_counter()
        async with InProcessCaller(pool_for(bo_only, cache=True)) as caller:
            runner = InProcessRunner(caller, concurrency=bo_only.evaluation.concurrency)
            await SearchController(bo_only, store, runner, search_questions(bo_only), []
                                   ).search()
        calls = call_accounting(store)
        return {"trials": len(store.trials("bo")), "calls_naive": calls["naive"],
                "calls_made": calls["made"], "cached": calls["cached"],
                "time_s": round(time.perf_counter() - started, 1)}


def _mean(runs: list[int | None], cap: int) -> float:
    return statistics.mean(cap if r is None else r for r in runs)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    log: Callable[[str], None] = (
        (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else print)
    config = load_search_config(args.config)
    if any(m.provider != "sim" for m in config.models):
        raise SystemExit("search_efficiency scores spaces of sim models only")
    if args.quick:
        config = quick_config(config)
    ranked = [m.name for m in await rank_models(config, search_questions(config))]
    table, exhaustive = await scored_table(config, ranked, args.workers, log)
    exhaustive["memo_checked"] = MEMO_CHECK_POINTS
    exhaustive["memo_mismatches"] = await verify_memo(config, ranked, table, MEMO_CHECK_POINTS)

    budget, weight = config.budget.calls_per_query, config.objective.cost_weight
    objective = {p: s.score - weight * s.calls_per_query / budget for p, s in table.items()}
    best = max(objective.values())
    optimal = sorted(p for p, v in objective.items() if v == best)
    single = space_for(config, ranked).single_model_point()
    free = {} if single is None else {single: objective[single]}
    log(f"optimum {point_key(optimal[0])} (score {table[optimal[0]].score:.3f}); replaying BO "
        f"over {args.seeds} seeds and random search over {args.random_seeds}...")
    replay_started = time.perf_counter()
    bo = await replay(config, ranked, objective, optimal, free, "bo", range(args.seeds),
                      args.bo_cap, args.workers)
    rnd = await replay(config, ranked, objective, optimal, free, "random",
                       range(args.random_seeds), len(table), args.workers)
    replay_s = time.perf_counter() - replay_started
    bo_evals, random_evals = _mean(bo, args.bo_cap), _mean(rnd, len(table))
    eligible = len(table) - len(free)
    calls = await search_calls(config, log)
    return {
        "space": {"config": str(args.config), "valid_architectures": len(table),
                  "budget_calls_per_query": budget, "questions": exhaustive["questions"],
                  "models_ranked": ranked, "quick": args.quick},
        "optimum": {"key": point_key(optimal[0]), "score": table[optimal[0]].score,
                    "objective": best, "calls_per_query": table[optimal[0]].calls_per_query},
        "n_optimal": len(optimal),
        "finds_it": "first evaluation of a point with the highest objective (epsilon 0)",
        "seeds": args.seeds,
        "bo_evals": bo_evals,
        "random_evals": random_evals,
        "ratio": bo_evals / random_evals,
        "bo_found": sum(1 for b in bo if b is not None),
        "bo_cap": args.bo_cap,
        "bo_evals_per_seed": bo,
        "random_seeds": args.random_seeds,
        "random_evals_same_seeds": _mean(rnd[:args.seeds], len(table)),
        "random_expected_evals": (eligible + 1) / (len(optimal) + 1),
        "calls_naive": calls["calls_naive"],
        "calls_made": calls["calls_made"],
        "calls_ratio": calls["calls_made"] / calls["calls_naive"],
        "search_for_calls": calls,
        "exhaustive": exhaustive,
        "replay_time_s": round(replay_s, 1),
        "time_s": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="small space, few seeds")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--seeds", type=int, default=None, help=f"BO runs (default {SEEDS})")
    parser.add_argument("--random-seeds", type=int, default=None,
                        help=f"random-search runs (default {RANDOM_SEEDS})")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--bo-cap", type=int, default=BO_CAP)
    arguments = parser.parse_args()
    if arguments.seeds is None:
        arguments.seeds = QUICK["seeds"] if arguments.quick else SEEDS
    if arguments.random_seeds is None:
        arguments.random_seeds = QUICK["random_seeds"] if arguments.quick else RANDOM_SEEDS
    arguments.random_seeds = max(arguments.random_seeds, arguments.seeds)
    result = anyio.run(main, arguments)
    if arguments.json:
        print(json.dumps(result, indent=2))
    else:
        for name, value in result.items():
            print(f"{name}: {value}")
