"""Search-efficiency studies: score a whole space in process, then replay strategies on it.

``perf/search_efficiency.py`` asks how many evaluations BO needs to find the best
architecture of a space, against random search. That needs the score of every point,
computed once; strategies then only look scores up.

Scoring every point runs the real thing, minus the broker: the orchestrator over agents
built in this process (``InProcessCaller``), evaluated with the eval API, exactly as a
search trial is. What makes thousands of architectures affordable is ``MemoCaller``: it
answers a request it has already seen (same service, byte-identical msgpack body) from
memory. That is exact for simulated agents, which are deterministic functions of the
request (``itas.agents.providers.sim``: every decision is seeded by a hash of the request's
contents); ``verify_memo`` re-scores a sample of points without it and reports mismatches.
Architectures that share their first layers send identical requests for them, so the
memo also shows how much a response cache saves across a search.

The heavy loops run in worker processes (``anyio.to_process``); their entry points take
and return plain data.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_process
import msgpack

from itas.agents.pool import PoolEntry
from itas.benchmarks import SEARCH, Question, load_benchmark
from itas.client import Reply
from itas.orchestrator.inprocess import InProcessCaller
from itas.orchestrator.runner import Caller
from itas.search.config import SearchConfig
from itas.search.controller import order_models, single_spec
from itas.search.runners import InProcessRunner
from itas.search.space import ModelRef, Point, SearchSpace
from itas.search.strategies import Strategy, make_strategy

CONCURRENCY = 16  # questions in flight per architecture (all in process)


class MemoCaller:
    """A caller that remembers replies by request; see the module docstring for when that
    is exact. ``requests`` counts every call, ``distinct`` the ones that reached an agent;
    with ``remember=False`` it only counts (every request reaches an agent)."""

    def __init__(self, inner: Caller, *, remember: bool = True) -> None:
        self.inner = inner
        self.remember = remember
        self._memo: dict[bytes, Reply] = {}
        self.requests = 0
        self.distinct = 0

    async def call(self, service: str, body: Any, *, timeout: float | None = None) -> Reply:
        self.requests += 1
        key = hashlib.blake2b(msgpack.packb([service, body]), digest_size=16).digest()
        reply = self._memo.get(key)
        if reply is None:
            self.distinct += 1
            reply = await self.inner.call(service, body, timeout=timeout)
            if self.remember:
                self._memo[key] = reply
        return reply


@dataclass(frozen=True, slots=True)
class Scored:
    point: Point
    score: float
    calls: int  # LLM calls the evaluation's queries reported (no memo, no cache)
    calls_per_query: int  # static bound


def pool_for(config: SearchConfig, *, cache: bool = False) -> list[PoolEntry]:
    """An agent for every technique the space may use on every model, with the response
    cache on or off and no simulated latency (this is about calls, not time)."""
    techniques = ["generator", *config.techniques]
    entries = [PoolEntry("majority_vote", 1, {})] if "majority_vote" in techniques else []
    for model in config.models:
        settings = {**model.settings, "provider": model.provider, "model": model.model,
                    "cache": cache}
        if model.provider == "sim":
            settings["latency"] = 0.0
        entries += [PoolEntry(t, 1, settings) for t in techniques if t != "majority_vote"]
    return entries


def search_questions(config: SearchConfig) -> list[Question]:
    bench = config.benchmark
    return load_benchmark(bench.name, split=SEARCH, limit=bench.search, seed=bench.seed,
                          data_dir=bench.data_dir)


async def rank_models(config: SearchConfig, questions: Sequence[Question]) -> list[ModelRef]:
    """The controller's ranking (each model alone on the search split), in process."""
    async with InProcessCaller(pool_for(config)) as caller:
        runner = InProcessRunner(caller, concurrency=CONCURRENCY)
        scores = {}
        for model in config.models:
            ref = ModelRef.of(model)
            scores[model.name] = (await runner.measure(single_spec(ref), questions)).score
    return order_models(config, scores)


def space_for(config: SearchConfig, ranked: Sequence[str]) -> SearchSpace:
    by_name = {m.name: ModelRef.of(m) for m in config.models}
    return SearchSpace.from_config(config, [by_name[name] for name in ranked])


async def score_points(config: SearchConfig, space: SearchSpace, points: Iterable[Point],
                       questions: Sequence[Question], *, memo: bool = True
                       ) -> tuple[list[Scored], int, int]:
    """Score points on the questions; returns the scores, requests sent, distinct requests."""
    async with InProcessCaller(pool_for(config)) as inner:
        caller = MemoCaller(inner, remember=memo)
        runner = InProcessRunner(caller, concurrency=CONCURRENCY)
        scored = []
        for point in points:
            result = await runner.measure(space.architecture(point), questions)
            scored.append(Scored(point, result.score, result.calls,
                                 space.calls_per_query(point)))
    return scored, caller.requests, caller.distinct


def score_chunk(config_data: dict[str, Any], ranked: list[str], points: list[list[int]],
                memo: bool = True) -> dict[str, Any]:
    """Worker-process entry: score ``points`` (plain lists) of the config's space."""
    config = SearchConfig.model_validate(config_data)
    space = space_for(config, ranked)
    questions = search_questions(config)
    scored, requests, distinct = anyio.run(
        lambda: score_points(config, space, [Point(*p) for p in points], questions, memo=memo))
    return {"scored": [[list(s.point), s.score, s.calls, s.calls_per_query] for s in scored],
            "requests": requests, "distinct": distinct}


async def score_space(config: SearchConfig, ranked: Sequence[str], points: Sequence[Point],
                      workers: int) -> tuple[list[Scored], int, int]:
    """Score every point, split over ``workers`` processes."""
    chunks = [[list(p) for p in points[i::workers]] for i in range(workers)]
    results: list[dict[str, Any]] = [{} for _ in chunks]
    data = config.model_dump(mode="json")
    limiter = anyio.CapacityLimiter(workers)

    async def run(i: int, chunk: list[list[int]]) -> None:
        results[i] = await anyio.to_process.run_sync(score_chunk, data, list(ranked), chunk,
                                                     limiter=limiter)

    async with anyio.create_task_group() as tg:
        for i, chunk in enumerate(chunks):
            tg.start_soon(run, i, chunk)
    scored = [Scored(Point(*row[0]), row[1], row[2], row[3])
              for result in results for row in result["scored"]]
    return (scored, sum(r["requests"] for r in results), sum(r["distinct"] for r in results))


async def verify_memo(config: SearchConfig, ranked: Sequence[str],
                      table: Mapping[Point, Scored], sample: int, seed: int = 0) -> int:
    """Re-score ``sample`` points without the memo (in a worker process); the number whose
    score differs."""
    points = random.Random(seed).sample(sorted(table), min(sample, len(table)))
    fresh = await anyio.to_process.run_sync(score_chunk, config.model_dump(mode="json"),
                                            list(ranked), [list(p) for p in points], False)
    return sum(1 for row in fresh["scored"] if row[1] != table[Point(*row[0])].score)


def evaluations_to_reach(strategy: Strategy, values: Mapping[Point, float],
                         targets: set[Point], *, cap: int,
                         free: Mapping[Point, float] | None = None) -> int | None:
    """Evaluations a strategy makes (one at a time) until it evaluates a target point;
    None if it has not after ``cap``. ``free`` observations come first and do not count."""
    for point, value in (free or {}).items():
        strategy.observe(point, value)
    for n in range(1, cap + 1):
        suggested = strategy.suggest(1)
        if not suggested:
            return None
        point = suggested[0]
        strategy.observe(point, values[point])
        if point in targets:
            return n
    return None


def replay_runs(config_data: dict[str, Any], ranked: list[str], values: list[list[Any]],
                targets: list[list[int]], strategy: str, seeds: list[int], cap: int,
                free: list[list[Any]]) -> list[int | None]:
    """Worker-process entry: seeded strategy runs over looked-up objective values; for each
    seed, the evaluations until a target was evaluated (None: not within ``cap``)."""
    config = SearchConfig.model_validate(config_data)
    space = space_for(config, ranked)
    options: dict[str, Any] = {}
    if strategy == "bo":
        acq = config.search.acquisition
        options = {"initial_random": config.search.initial_random,
                   "acquisition_kind": acq.kind, "kappa": acq.kappa, "xi": acq.xi}
    lookup = {Point(*p): v for p, v in values}
    goal = {Point(*p) for p in targets}
    given = {Point(*p): v for p, v in free}
    return [evaluations_to_reach(make_strategy(strategy, space, seed, **options), lookup, goal,
                                 cap=cap, free=given) for seed in seeds]


def table_key(config: SearchConfig, ranked: Sequence[str], questions: Sequence[Question],
              version: str) -> str:
    """A cache key for a scored space: what the scores depend on."""
    blob = json.dumps({"config": config.result_fields(), "ranked": list(ranked),
                       "questions": [q.id for q in questions], "version": version},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
