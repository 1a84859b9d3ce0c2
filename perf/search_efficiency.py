"""What a user gets from each search strategy: the held-out score of the architecture it
finally names, at equal LLM-call budgets; and how many LLM calls a search makes against
how many it would make without reuse.

    python perf/search_efficiency.py [--json] [--quick] [--seeds 30] [--workers 2]

1. Spaces: ``configs/search/sim_{gsm8k,math500,mixeval_mc}_efficiency.yaml``: three
   benchmarks, three sets of sim model skills, 651 to 762 valid architectures each. The
   models are ranked as the controller ranks them.
2. Exhaustive scoring: every valid point is evaluated on every question of three sets
   (the controller's: 40 trial questions and 60 confirm questions from the search split,
   200 held-out questions) with the real orchestrator and eval API, in process
   (``itas.search.study``), through a request memo that is exact for sim agents; 20
   points are re-scored without the memo to check that (``memo_mismatches`` must be 0).
   Simulated candidate texts are distinct per model and sample. Scores are cached on disk
   ($ITAS_PERF_CACHE, default <tmp>/itas-perf) under a hash of what they depend on.
3. Replays at equal budgets: every strategy (bo, random, greedy) and seed gets the same
   budget of LLM calls for its trials (``--budget-trials`` times the space's mean cost of
   one trial; a trial that would pass it is not run), the single best model's point free
   as in a real search, each observation's variance (BO's GP uses it). The strategy then
   names its best exactly as ``SearchController`` does: the ``finalists`` best by search
   score raced on the confirm questions (their calls are reported apart, as
   ``confirm_calls``; the same rule for every strategy).
4. Held-out regret of a run: the best held-out score of any point in the space minus the
   held-out score of the named architecture (0 = it named the best there is).
   ``heldout_regret_<strategy>``: mean over spaces and seeds, with its standard deviation
   over runs and per space; ``heldout_regret_ratio`` = BO's / random's, with a 95%
   interval from a bootstrap over seeds (paired: a resample takes the same seeds for both)
   and the ratio per space. ``*_naive`` figures name the best by search score alone (no
   confirmation), to show what the confirmation buys. ``heldout_regret_exhaustive`` is
   the floor no strategy can beat on these question sets: every point evaluated on the
   trial questions, then named as above (confirmation included); when it is close to
   random's, the trials' question count, not the strategy, is what limits the pick.
   ``heldout_regret_all_search`` and ``heldout_split_half_regret`` (``noise_floors``)
   show what a pick by score reaches on these question sets with far more calls than
   any budget: naming the best of every point on all 100 search-split questions, and
   naming the best on half the held-out questions and scoring it on the other half (a
   lucky strategy can beat them on one run, not on average).
5. Calls: a real BO search (``SearchController`` in process) on the first space, the sim
   response cache on and empty at the start. ``calls_naive`` = LLM calls its evaluations
   (model ranking + trials) reported, i.e. running every trial's questions without any
   reuse; ``calls_made`` = those the response cache did not answer (trials that share
   layers reuse each other's calls); ``calls_ratio`` = made / naive.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_process

from itas.orchestrator.inprocess import InProcessCaller
from itas.search.config import SearchConfig, load_search_config
from itas.search.controller import SearchController
from itas.search.report import call_accounting
from itas.search.run import load_questions
from itas.search.runners import InProcessRunner
from itas.search.space import Point, point_key
from itas.search.store import TrialStore
from itas.search.study import (
    Scored,
    confirmed_pick,
    objective,
    pool_for,
    question_sets,
    rank_models,
    replay_runs,
    score_space,
    space_for,
    table_key,
    verify_memo,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = tuple(REPO / "configs" / "search" / f"sim_{name}_efficiency.yaml"
                for name in ("gsm8k", "math500", "mixeval_mc"))
CACHE_DIR = Path(os.environ.get("ITAS_PERF_CACHE", Path(tempfile.gettempdir()) / "itas-perf"))
TABLE_VERSION = "2"  # bump when scoring changes
MEMO_CHECK_POINTS = 20
SEEDS = 30
BUDGET_TRIALS = 25
STRATEGIES = ("bo", "random", "greedy")
BOOTSTRAP = 2000
# --quick: small spaces and question sets, fewer seeds; a smoke run, not the claimed figures.
QUICK = {"budget_scale": 0.5, "search": 20, "confirm": 30, "heldout": 80, "seeds": 10,
         "trials": 15}

Table = dict[Point, Scored]
Log = Callable[[str], None]


def quick_config(config: SearchConfig) -> SearchConfig:
    budget = max(4, round(config.budget.calls_per_query * QUICK["budget_scale"]))
    return config.model_copy(update={
        "budget": config.budget.model_copy(update={"calls_per_query": budget}),
        "benchmark": config.benchmark.model_copy(update={
            "search": QUICK["search"], "confirm": QUICK["confirm"],
            "heldout": QUICK["heldout"]}),
        "search": config.search.model_copy(update={"trials": QUICK["trials"]}),
    })


async def scored_table(config: SearchConfig, ranked: list[str], workers: int, log: Log
                       ) -> tuple[Table, dict[str, Any]]:
    """Every valid point's scores, from the disk cache or scored now."""
    space = space_for(config, ranked)
    sets = question_sets(config)
    path = CACHE_DIR / f"table-{table_key(config, ranked, sets, TABLE_VERSION)}.json"
    if path.exists():
        data = json.loads(path.read_text())
        log(f"  scores loaded from {path}")
    else:
        points = list(space.valid_points)
        sizes = "/".join(str(len(v)) for v in sets.values())
        log(f"  scoring {len(points)} architectures x {sizes} questions (search/confirm/"
            f"held-out) on {workers} worker process(es)...")
        started = time.perf_counter()
        scored, requests, distinct = await score_space(config, ranked, points, workers)
        data = {"rows": [s.to_row() for s in scored], "requests": requests,
                "distinct": distinct, "questions": {k: len(v) for k, v in sets.items()},
                "time_s": time.perf_counter() - started}
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
        log(f"  scored in {data['time_s']:.0f} s")
    table = {s.point: s for s in (Scored.from_row(r) for r in data["rows"])}
    info = {"architectures": len(table), "questions": data["questions"],
            "orchestrator_requests": data["requests"], "distinct_requests": data["distinct"],
            "llm_calls": sum(sum(s.calls.values()) for s in table.values()),
            "time_s": round(data["time_s"], 1), "cache_file": str(path)}
    return table, info


async def replay(config: SearchConfig, ranked: list[str], table: Table, strategy: str,
                 seeds: Sequence[int], budget: int, free: Point | None, confirm_ids: list[str],
                 workers: int) -> list[dict[str, Any]]:
    """Seeded budgeted runs of ``strategy`` over worker processes, in seed order."""
    rows = [s.to_row() for s in table.values()]
    chunks = [list(seeds)[i::workers] for i in range(workers)]
    found: dict[int, dict[str, Any]] = {}
    limiter = anyio.CapacityLimiter(workers)

    async def run(chunk: list[int]) -> None:
        results = await anyio.to_process.run_sync(
            replay_runs, config.model_dump(mode="json"), ranked, rows, strategy, chunk,
            budget, None if free is None else list(free), confirm_ids, limiter=limiter)
        found.update(zip(chunk, results, strict=True))

    async with anyio.create_task_group() as tg:
        for chunk in chunks:
            if chunk:
                tg.start_soon(run, chunk)
    return [found[seed] for seed in seeds]


def _spread(values: Sequence[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "sd": sd, "stderr": sd / math.sqrt(len(values)),
            "min": min(values), "max": max(values)}


def ratio_interval(bo: Sequence[Sequence[float]], rnd: Sequence[Sequence[float]],
                   seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of mean(bo) / mean(random) over all spaces, resampling seeds
    within each space (the same seeds for both: paired)."""
    rng = random.Random(seed)
    ratios = []
    for _ in range(BOOTSTRAP):
        top = bottom = 0.0
        for b, r in zip(bo, rnd, strict=True):
            picks = [rng.randrange(len(b)) for _ in b]
            top += sum(b[i] for i in picks)
            bottom += sum(r[i] for i in picks)
        ratios.append(top / bottom if bottom else math.inf)
    ratios.sort()
    return ratios[int(0.025 * BOOTSTRAP)], ratios[int(0.975 * BOOTSTRAP) - 1]


async def study_space(path: Path, args: argparse.Namespace, log: Log) -> dict[str, Any]:
    config = load_search_config(path)
    if any(m.provider != "sim" for m in config.models):
        raise SystemExit(f"{path}: search_efficiency scores spaces of sim models only")
    if args.quick:
        config = quick_config(config)
    log(f"space {config.name} ({config.benchmark.name}, budget "
        f"{config.budget.calls_per_query} calls/query)")
    loaded = load_questions(config)
    ranked = [m.name for m in await rank_models(config, loaded.search)]
    table, exhaustive = await scored_table(config, ranked, args.workers, log)
    exhaustive["memo_checked"] = MEMO_CHECK_POINTS
    exhaustive["memo_mismatches"] = await verify_memo(config, ranked, table, MEMO_CHECK_POINTS)
    heldout = {p: s.mean("heldout") for p, s in table.items()}
    best_point = max(heldout, key=lambda p: (heldout[p], -table[p].calls_per_query))
    best_heldout = heldout[best_point]
    mean_trial_calls = statistics.fmean(s.calls["search"] for s in table.values())
    budget = round(args.budget_trials * mean_trial_calls)
    single = space_for(config, ranked).single_model_point()
    confirm_ids = [q.id for q in loaded.confirm]
    seeds = range(args.seeds)
    result: dict[str, Any] = {
        "config": str(path), "benchmark": config.benchmark.name,
        "skills": {m.name: m.settings.get("skill") for m in config.models},
        "valid_architectures": len(table), "budget_calls_per_query":
            config.budget.calls_per_query, "models_ranked": ranked,
        "trial_call_budget": budget, "mean_trial_calls": round(mean_trial_calls, 1),
        "heldout_best": {"key": point_key(best_point), "score": best_heldout},
        "single_model_heldout": None if single is None else heldout[single],
        "exhaustive": exhaustive, "strategies": {},
    }
    everything = sorted(table, key=lambda p: (
        -objective(config, table[p].mean("search"), table[p].calls_per_query),
        table[p].calls_per_query))
    exhaustive_pick, _ = confirmed_pick(config, table, everything[:config.search.finalists],
                                        confirm_ids)
    result["heldout_regret_exhaustive"] = best_heldout - heldout[exhaustive_pick]
    result["heldout_regret_exhaustive_naive"] = best_heldout - heldout[everything[0]]
    log(f"  floor: every point evaluated, regret {result['heldout_regret_exhaustive']:.4f} "
        f"(naive pick {result['heldout_regret_exhaustive_naive']:.4f})")
    result.update(noise_floors(config, table))
    log(f"  floor: every point on all {len(table[best_point].scores['search']) + len(confirm_ids)}"
        f" search-split questions, regret {result['heldout_regret_all_search']:.4f}; "
        f"held-out half A's best on half B {result['heldout_split_half_regret']:.4f}")
    for strategy in STRATEGIES:
        started = time.perf_counter()
        runs = await replay(config, ranked, table, strategy, seeds, budget, single,
                            confirm_ids, args.workers)
        picked = [heldout[Point(*r["picked"])] for r in runs]
        naive = [heldout[Point(*r["naive"])] for r in runs]
        result["strategies"][strategy] = {
            "heldout_score": _spread(picked),
            "heldout_regret": _spread([best_heldout - h for h in picked]),
            "heldout_regret_naive": _spread([best_heldout - h for h in naive]),
            "regret_per_seed": [round(best_heldout - h, 4) for h in picked],
            "trials": _spread([r["trials"] for r in runs]),
            "calls_spent": _spread([r["spent"] for r in runs]),
            "confirm_calls": _spread([r["confirm_calls"] for r in runs]),
            "time_s": round(time.perf_counter() - started, 1),
        }
        s = result["strategies"][strategy]
        log(f"  {strategy:6s} held-out {s['heldout_score']['mean']:.3f} ± "
            f"{s['heldout_score']['sd']:.3f}, regret {s['heldout_regret']['mean']:.4f} "
            f"(naive pick {s['heldout_regret_naive']['mean']:.4f}), "
            f"{s['trials']['mean']:.1f} trials, {s['time_s']:.0f} s")
    bo, rnd = (result["strategies"][k]["heldout_regret"]["mean"] for k in ("bo", "random"))
    result["heldout_regret_ratio"] = bo / rnd if rnd else None
    return result


def noise_floors(config: SearchConfig, table: Table) -> dict[str, float]:
    """Two figures that show how much of a held-out regret is the questions' noise.

    ``heldout_regret_all_search``: every point scored on every search-split question
    (trial and confirm together), the best by that objective named: a strategy that
    spent the whole space's calls and more. ``heldout_split_half_regret``: the held-out
    questions cut in two halves (even and odd positions); the best point on half A,
    against the best on half B, scored on half B. Even a pick made on as many held-out
    questions as half B holds loses that much on B, to the questions' noise alone.
    """
    def pick(scores: Callable[[Scored], Sequence[float]]) -> Point:
        return min(table, key=lambda p: (
            -objective(config, statistics.fmean(scores(table[p])), table[p].calls_per_query),
            table[p].calls_per_query, p))

    heldout = {p: s.mean("heldout") for p, s in table.items()}
    named = pick(lambda s: s.scores["search"] + s.scores["confirm"])
    half_a = pick(lambda s: s.scores["heldout"][0::2])
    on_b = {p: statistics.fmean(s.scores["heldout"][1::2]) for p, s in table.items()}
    return {"heldout_regret_all_search": max(heldout.values()) - heldout[named],
            "heldout_split_half_regret": max(on_b.values()) - on_b[half_a]}


async def search_calls(config: SearchConfig, log: Log) -> dict[str, Any]:
    """A real in-process BO search with the response cache on (fresh): its call figures."""
    bo_only = config.model_copy(update={"search": config.search.model_copy(
        update={"strategies": ("bo",), "parallel": 1})})
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ITAS_CACHE_DIR"] = str(Path(tmp) / "cache")  # read by the agents below
        loaded = load_questions(bo_only)
        store = TrialStore.open(Path(tmp) / "run", bo_only.fingerprint(loaded.digests()),
                                resume=False)
        log(f"calls: a BO search of {bo_only.search.trials} trials on {bo_only.name} with "
            "the response cache...")
        started = time.perf_counter()
        async with InProcessCaller(pool_for(bo_only, cache=True)) as caller:
            runner = InProcessRunner(caller, concurrency=bo_only.evaluation.concurrency)
            await SearchController(bo_only, store, runner, loaded.search, []).search()
        calls = call_accounting(store)
        return {"space": bo_only.name, "trials": len(store.trials("bo")),
                "calls_naive": calls["naive"], "calls_made": calls["made"],
                "cached": calls["cached"], "time_s": round(time.perf_counter() - started, 1)}


def overall(spaces: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for strategy in STRATEGIES:
        per_run = [r for s in spaces for r in s["strategies"][strategy]["regret_per_seed"]]
        out[f"heldout_regret_{strategy}"] = statistics.fmean(per_run)
        out[f"heldout_regret_{strategy}_sd"] = statistics.stdev(per_run)
        out[f"heldout_regret_{strategy}_naive"] = statistics.fmean(
            s["strategies"][strategy]["heldout_regret_naive"]["mean"] for s in spaces)
    bo = [s["strategies"]["bo"]["regret_per_seed"] for s in spaces]
    rnd = [s["strategies"]["random"]["regret_per_seed"] for s in spaces]
    random_mean = out["heldout_regret_random"]
    out["heldout_regret_ratio"] = out["heldout_regret_bo"] / random_mean if random_mean else None
    out["heldout_regret_ratio_ci95"] = list(ratio_interval(bo, rnd))
    out["heldout_regret_ratio_per_space"] = {s["benchmark"]: s["heldout_regret_ratio"]
                                             for s in spaces}
    for floor in ("heldout_regret_exhaustive", "heldout_regret_all_search",
                  "heldout_split_half_regret"):
        out[floor] = statistics.fmean(s[floor] for s in spaces)
    naive_random = out["heldout_regret_random_naive"]
    out["heldout_regret_ratio_naive"] = (out["heldout_regret_bo_naive"] / naive_random
                                         if naive_random else None)
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    log: Log = ((lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json
                else (lambda msg: print(msg, flush=True)))
    spaces = [await study_space(path, args, log) for path in args.config]
    first = load_search_config(args.config[0])
    calls = await search_calls(quick_config(first) if args.quick else first, log)
    return {
        "seeds": args.seeds, "quick": args.quick, "budget_trials": args.budget_trials,
        **overall(spaces),
        "target_heldout_regret_ratio": 0.5,
        "calls_naive": calls["calls_naive"], "calls_made": calls["calls_made"],
        "calls_ratio": calls["calls_made"] / calls["calls_naive"],
        "search_for_calls": calls,
        "memo_mismatches": sum(s["exhaustive"]["memo_mismatches"] for s in spaces),
        "spaces": spaces,
        "time_s": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="small spaces, few seeds")
    parser.add_argument("--config", type=Path, action="append", default=None,
                        help="a space (repeat; default: the three shipped ones)")
    parser.add_argument("--seeds", type=int, default=None, help=f"runs per strategy and "
                        f"space (default {SEEDS})")
    parser.add_argument("--budget-trials", type=float, default=BUDGET_TRIALS,
                        help="call budget, in mean trials of the space")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    arguments = parser.parse_args()
    arguments.config = arguments.config or list(CONFIGS)
    if arguments.seeds is None:
        arguments.seeds = QUICK["seeds"] if arguments.quick else SEEDS
    result = anyio.run(main, arguments)
    if arguments.json:
        print(json.dumps(result, indent=2))
    else:
        for name, value in result.items():
            if name != "spaces":
                print(f"{name}: {value}")
