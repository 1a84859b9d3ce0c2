"""Search-efficiency studies: score a whole space in process, then replay strategies on it.

``perf/search_efficiency.py`` asks what a user gets: the held-out score of the
architecture each strategy finally names, at equal LLM-call budgets. That needs the score
of every point on every question, computed once, for three question sets (see
``itas.search.run.load_questions``): the trial questions, the confirm questions the
finalists are re-scored on, and the held-out questions; strategies then only look
scores up, and a replay picks exactly as ``SearchController`` does (finalists raced on the
confirm questions), so its pick can be scored on held-out questions it never saw.

Scoring every point runs the real thing, minus the broker: the orchestrator over agents
built in this process (``InProcessCaller``), evaluated with the eval API, exactly as a
search trial is. What makes thousands of architectures affordable is ``MemoCaller``: it
answers a request it has already seen (same service, byte-identical msgpack body) from
memory. That is exact for simulated agents, which are deterministic functions of the
request (``itas.agents.providers.sim``: every decision is seeded by a hash of the request's
contents); ``verify_memo`` re-scores a sample of points without it and reports mismatches.
Architectures that share their first layers send identical requests for them (simulated
texts are distinct per model and sample, so nothing else is shared), so the memo also
shows how much a response cache saves across a search.

The heavy loops run in worker processes (``anyio.to_process``); their entry points take
and return plain data.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_process
import msgpack

from itas.agents.pool import PoolEntry
from itas.benchmarks import Question
from itas.client import OnPartial, Reply
from itas.orchestrator.inprocess import InProcessCaller
from itas.orchestrator.runner import Caller
from itas.search.config import SearchConfig
from itas.search.controller import order_models, outclassed, rounds_of, single_spec
from itas.search.run import load_questions
from itas.search.runners import InProcessRunner
from itas.search.space import ModelRef, Point, SearchSpace
from itas.search.stats import mean_and_stderr
from itas.search.strategies import make_strategy

CONCURRENCY = 16  # questions in flight per architecture (all in process)
SETS = ("search", "confirm", "heldout")


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

    async def call(self, service: str, body: Any, *, timeout: float | None = None,
                   on_partial: OnPartial | None = None) -> Reply:
        self.requests += 1
        key = hashlib.blake2b(msgpack.packb([service, body]), digest_size=16).digest()
        reply = self._memo.get(key)
        if reply is None:
            self.distinct += 1
            reply = await self.inner.call(service, body, timeout=timeout,
                                          on_partial=on_partial)
            if self.remember:
                self._memo[key] = reply
        return reply


@dataclass(frozen=True, slots=True)
class Scored:
    """One point: every question's score and the LLM calls, per question set."""

    point: Point
    scores: dict[str, list[float]]  # set -> scores in the set's question order
    calls: dict[str, int]  # set -> LLM calls the evaluation's queries reported
    calls_per_query: int  # static bound

    def mean(self, name: str) -> float:
        values = self.scores[name]
        return math.fsum(values) / len(values) if values else 0.0

    def to_row(self) -> list[Any]:
        return [list(self.point), self.scores, self.calls, self.calls_per_query]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Scored:
        return cls(Point(*row[0]), dict(row[1]), dict(row[2]), int(row[3]))


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


def question_sets(config: SearchConfig) -> dict[str, list[Question]]:
    loaded = load_questions(config)
    return {"search": loaded.search, "confirm": loaded.confirm, "heldout": loaded.heldout}


def search_questions(config: SearchConfig) -> list[Question]:
    return load_questions(config).search


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
                       sets: Mapping[str, Sequence[Question]], *, memo: bool = True
                       ) -> tuple[list[Scored], int, int]:
    """Score points on every question set; returns the scores, requests sent, distinct
    requests."""
    async with InProcessCaller(pool_for(config)) as inner:
        caller = MemoCaller(inner, remember=memo)
        runner = InProcessRunner(caller, concurrency=CONCURRENCY)
        scored = []
        for point in points:
            arch = space.architecture(point)
            scores, calls = {}, {}
            for name, questions in sets.items():
                result = await runner.measure(arch, questions)
                scores[name] = [result.scores[q.id] for q in questions]
                calls[name] = result.calls
            scored.append(Scored(point, scores, calls, space.calls_per_query(point)))
    return scored, caller.requests, caller.distinct


def score_chunk(config_data: dict[str, Any], ranked: list[str], points: list[list[int]],
                memo: bool = True, only: list[str] | None = None) -> dict[str, Any]:
    """Worker-process entry: score ``points`` (plain lists) of the config's space on the
    question sets (``only``: those named)."""
    config = SearchConfig.model_validate(config_data)
    space = space_for(config, ranked)
    sets = {k: v for k, v in question_sets(config).items() if only is None or k in only}
    scored, requests, distinct = anyio.run(
        lambda: score_points(config, space, [Point(*p) for p in points], sets, memo=memo))
    return {"rows": [s.to_row() for s in scored], "requests": requests, "distinct": distinct}


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
    scored = [Scored.from_row(row) for result in results for row in result["rows"]]
    return (scored, sum(r["requests"] for r in results), sum(r["distinct"] for r in results))


async def verify_memo(config: SearchConfig, ranked: Sequence[str],
                      table: Mapping[Point, Scored], sample: int, seed: int = 0) -> int:
    """Re-score ``sample`` points on the search questions without the memo (in a worker
    process); the number whose scores differ."""
    points = random.Random(seed).sample(sorted(table), min(sample, len(table)))
    fresh = await anyio.to_process.run_sync(score_chunk, config.model_dump(mode="json"),
                                            list(ranked), [list(p) for p in points], False,
                                            ["search"])
    return sum(1 for row in fresh["rows"]
               if row[1]["search"] != table[Point(*row[0])].scores["search"])


# -- replays ---------------------------------------------------------------------------


def objective(config: SearchConfig, score: float, calls_per_query: int) -> float:
    budget = config.budget.calls_per_query
    return score - config.objective.cost_weight * calls_per_query / budget


def confirmed_pick(config: SearchConfig, table: Mapping[Point, Scored],
                   finalists: Sequence[Point], ids: Sequence[str]) -> tuple[Point, int]:
    """The controller's race (``SearchController.confirm``) on looked-up confirm scores:
    the winner and about the calls it cost (a point's confirm calls spread evenly over
    its questions)."""
    if len(finalists) < 2 or not ids:
        return finalists[0], 0
    per_question = {p: dict(zip(ids, table[p].scores["confirm"], strict=True))
                    for p in finalists}
    order = {p: i for i, p in enumerate(finalists)}
    alive, seen, calls = list(finalists), [], 0
    per_call = {p: table[p].calls["confirm"] / len(ids) for p in finalists}
    for batch in rounds_of(list(ids), config.search.confirm_rounds):
        seen += batch
        calls += round(sum(per_call[p] for p in alive) * len(batch))
        scores = {p: {q: per_question[p][q] for q in seen} for p in alive}

        def rank(p: Point, scores: Mapping[Point, Mapping[str, float]] = scores
                 ) -> tuple[float, int, int]:
            mean = math.fsum(scores[p].values()) / len(scores[p])
            return (-objective(config, mean, table[p].calls_per_query),
                    table[p].calls_per_query, order[p])

        alive.sort(key=rank)
        dropped = set(outclassed(str(alive[0]), [str(p) for p in alive[1:]],
                                 {str(p): scores[p] for p in alive}))
        alive = [p for p in alive if str(p) not in dropped]
        if len(alive) == 1:
            break
    return alive[0], calls


def budgeted_run(config: SearchConfig, space: SearchSpace, table: Mapping[Point, Scored],
                 strategy_name: str, seed: int, budget_calls: int, free: Point | None,
                 confirm_ids: Sequence[str]) -> dict[str, Any]:
    """One seeded strategy run that spends at most ``budget_calls`` LLM calls on trials
    (a trial that would pass the budget is not run), then names its best as the controller
    does. Returns the picks (by search score alone, and after confirmation) and what was
    spent."""
    options: dict[str, Any] = {}
    if strategy_name == "bo":
        acq = config.search.acquisition
        options = {"initial_random": config.search.initial_random,
                   "acquisition_kind": acq.kind, "kappa": acq.kappa, "xi": acq.xi}
    strategy = make_strategy(strategy_name, space, seed, **options)

    def value(p: Point) -> tuple[float, float]:
        mean, se = mean_and_stderr(table[p].scores["search"])
        return objective(config, mean, table[p].calls_per_query), se * se

    observed: list[Point] = []
    if free is not None:
        strategy.observe(free, *value(free))
        observed.append(free)
    spent = 0
    while True:
        suggested = strategy.suggest(1)
        if not suggested:
            break
        point = suggested[0]
        cost = table[point].calls["search"]
        if spent + cost > budget_calls:
            break
        spent += cost
        strategy.observe(point, *value(point))
        observed.append(point)
    ranked = sorted(observed, key=lambda p: (-value(p)[0], table[p].calls_per_query))
    naive = ranked[0]
    picked, confirm_calls = confirmed_pick(config, table, ranked[:config.search.finalists],
                                           confirm_ids)
    return {"trials": len(observed) - (free is not None), "spent": spent,
            "naive": list(naive), "picked": list(picked), "confirm_calls": confirm_calls}


def replay_runs(config_data: dict[str, Any], ranked: list[str], rows: list[list[Any]],
                strategy: str, seeds: list[int], budget_calls: int, free: list[int] | None,
                confirm_ids: list[str]) -> list[dict[str, Any]]:
    """Worker-process entry: ``budgeted_run`` for each seed."""
    config = SearchConfig.model_validate(config_data)
    space = space_for(config, ranked)
    table = {s.point: s for s in (Scored.from_row(r) for r in rows)}
    start = None if free is None else Point(*free)
    return [budgeted_run(config, space, table, strategy, seed, budget_calls, start,
                         confirm_ids) for seed in seeds]


def table_key(config: SearchConfig, ranked: Sequence[str],
              sets: Mapping[str, Sequence[Question]], version: str) -> str:
    """A cache key for a scored space: what the scores depend on."""
    blob = json.dumps({"config": config.result_fields(), "ranked": list(ranked),
                       "questions": {k: [q.id for q in v] for k, v in sets.items()},
                       "version": version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
