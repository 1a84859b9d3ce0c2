"""The search loop: rank the models, run each strategy's trials, re-score the best.

1. Ranking. Every model answers the search split alone (one generator sample); the
   ranking gives "the best k models" its meaning and picks the judge model. The best
   model's run is also the space's single-model point, which every strategy gets as a
   free first observation.
2. Trials. Each strategy (``bo`` first, then the baselines) proposes points, at most
   ``parallel`` in flight; ``bo`` handles the pending ones with ``ConstantLiar``. A point
   whose architecture any strategy already evaluated is recorded again for this strategy
   with ``reused: true`` and costs nothing. Every finished evaluation is appended to the
   store before the strategy sees it, so a killed search resumes where it stopped.
3. Re-scoring. The ``rescore_top`` best trials by search objective, and every model
   alone (the single-model baselines), are evaluated on the held-out split. The best
   architecture is the best by search objective; its held-out score is reported, not
   used to choose it.

Evaluation goes through a ``TrialRunner``: the deployed mesh (``MeshRunner``) or agents in
this process (``InProcessRunner``); the controller does no I/O of its own besides the store.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.abc
import anyio.to_thread

from itas.benchmarks import Question
from itas.search.config import SearchConfig
from itas.search.space import ModelRef, Point, SearchSpace, point_from_dict, point_key
from itas.search.store import Kind, Measurement, Record, TrialStore
from itas.search.strategies import Strategy, make_strategy
from itas.spec import Architecture, parse_architecture

log = logging.getLogger("itas.search")

SEARCH, HELDOUT = "search", "heldout"
SINGLE_PREFIX = "single:"


class TrialRunner(Protocol):
    """Evaluates architectures on questions; prepares what they need first."""

    async def prepare(self, archs: Sequence[Architecture]) -> None: ...

    async def measure(self, arch: Architecture, questions: Sequence[Question]) -> Measurement: ...


class Reporter(Protocol):
    """Where progress goes (a rich progress display, or nothing)."""

    def phase(self, name: str, total: int) -> None: ...
    def advance(self, record: Record, best: float | None) -> None: ...


class _Silent:
    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, record: Record, best: float | None) -> None:
        pass


@dataclass
class SearchOutcome:
    ranking: list[Record]
    space: SearchSpace
    best: Record
    heldout: list[Record]
    single_heldout: list[Record]
    time_s: float


def order_models(config: SearchConfig, scores: Mapping[str, float]) -> list[ModelRef]:
    """The config's models by single-model score, best first; ties keep config order."""
    models = sorted(enumerate(config.models), key=lambda im: (-scores[im[1].name], im[0]))
    return [ModelRef.of(m) for _, m in models]


def single_spec(model: ModelRef) -> Architecture:
    """A model alone: one generator sample. The ranking and the baselines use it."""
    return parse_architecture({"name": f"single-{model.name}",
                               "layers": [[model.component("generator", samples=1)]]},
                              f"single-model spec for {model.name}")


class SearchController:
    def __init__(self, config: SearchConfig, store: TrialStore, runner: TrialRunner,
                 search_questions: Sequence[Question], heldout_questions: Sequence[Question],
                 reporter: Reporter | None = None) -> None:
        self.config = config
        self.store = store
        self.runner = runner
        self.questions = {SEARCH: list(search_questions), HELDOUT: list(heldout_questions)}
        self.reporter = reporter or _Silent()
        self.known: dict[str, Record] = store.evaluated(SEARCH)

    def objective(self, score: float, calls_per_query: int) -> float:
        budget = self.config.budget.calls_per_query
        return score - self.config.objective.cost_weight * calls_per_query / budget

    async def run(self) -> SearchOutcome:
        """The whole search: ranking, every strategy's trials, held-out re-scoring."""
        started = time.perf_counter()
        ranking, space = await self.search()
        best = self.leaders(1)[0]
        heldout = await self.rescore(space)
        singles = await self.rescore_singles(space.ranked_models)
        return SearchOutcome(ranking, space, best, heldout, singles,
                             time.perf_counter() - started)

    async def search(self) -> tuple[list[Record], SearchSpace]:
        """Rank the models, then run every strategy's trials on the search split."""
        ranking = await self.rank_models()
        space = SearchSpace.from_config(self.config, [self._ref(r.model or "") for r in ranking])
        seeds = self._seed_observations(space, ranking[0])
        for name in self.config.search.strategies:
            await self.run_strategy(name, space, seeds)
        return ranking, space

    # -- 1. ranking --------------------------------------------------------------------

    def _ref(self, name: str) -> ModelRef:
        model = next(m for m in self.config.models if m.name == name)
        return ModelRef.of(model)

    async def rank_models(self) -> list[Record]:
        """Every model alone on the search split, best first (ties: config order)."""
        done = {r.model: r for r in self.store.of_kind("ranking") if r.model}
        todo = [self._ref(m.name) for m in self.config.models if m.name not in done]
        self.reporter.phase("ranking models", len(self.config.models))
        for record in done.values():
            self.reporter.advance(record, None)

        measured = await self._measure_singles(
            "ranking", SEARCH, todo, lambda record: self.reporter.advance(record, None))
        done.update((r.model, r) for r in measured if r.model)
        ranked = order_models(self.config, {name: r.result.score for name, r in done.items()})
        return [done[m.name] for m in ranked]

    def _seed_observations(self, space: SearchSpace, best_single: Record
                           ) -> dict[Point, float]:
        """The single-model point, already measured by the ranking, when the space has it."""
        point = space.single_model_point()
        if point is None:
            return {}
        key = point_key(point)
        self.known.setdefault(key, Record(
            "trial", key, space.spec(point), SEARCH, best_single.result, strategy="ranking",
            point=point._asdict(), calls_per_query=1,
            objective=self.objective(best_single.result.score, 1)))
        return {point: self.objective(best_single.result.score, 1)}

    # -- 2. trials ---------------------------------------------------------------------

    async def run_strategy(self, name: str, space: SearchSpace,
                           seeds: dict[Point, float]) -> None:
        settings = self.config.search
        options = {}
        if name == "bo":
            acq = settings.acquisition
            options = {"initial_random": settings.initial_random,
                       "acquisition_kind": acq.kind, "kappa": acq.kappa, "xi": acq.xi}
        strategy = make_strategy(name, space, settings.seed, **options)
        for point, value in seeds.items():
            strategy.observe(point, value)
        past = sorted(self.store.trials(name), key=lambda r: r.index or 0)
        for record in past:
            strategy.observe(point_from_dict(record.point or {}), record.objective or 0.0)
        target = settings.trials_for(name)
        self.reporter.phase(f"strategy {name}", target)
        best = max((r.objective or 0.0 for r in past), default=None)
        for record in past:
            self.reporter.advance(record, best)
        count = len(past)
        inflight = 0
        send, receive = anyio.create_memory_object_stream[tuple[Point, Measurement]]()
        async with anyio.create_task_group() as tg, send, receive:
            while count < target:
                while inflight < settings.parallel and count + inflight < target:
                    points = await anyio.to_thread.run_sync(strategy.suggest, 1)
                    if not points:
                        break
                    point = points[0]
                    key = point_key(point)
                    if key in self.known:  # evaluated before, by another strategy
                        count += 1
                        best = self._finish(strategy, name, count, point,
                                            self.known[key].result, True, best, space)
                        continue
                    arch = space.architecture(point)
                    await self.runner.prepare([arch])
                    tg.start_soon(self._evaluate, point, arch, send.clone())
                    inflight += 1
                if inflight == 0:
                    if count < target:
                        log.warning("%s: the space has no more points (%d trials)", name, count)
                    break
                point, result = await receive.receive()
                inflight -= 1
                count += 1
                best = self._finish(strategy, name, count, point, result, False, best, space)

    async def _evaluate(self, point: Point, arch: Architecture,
                        send: anyio.abc.ObjectSendStream[tuple[Point, Measurement]]) -> None:
        async with send:
            result = await self.runner.measure(arch, self.questions[SEARCH])
            await send.send((point, result))

    def _finish(self, strategy: Strategy, name: str, index: int, point: Point,
                result: Measurement, reused: bool, best: float | None, space: SearchSpace
                ) -> float:
        """Store a finished trial, then let the strategy see it."""
        calls = space.calls_per_query(point)
        objective = self.objective(result.score, calls)
        record = Record("trial", point_key(point), space.spec(point), SEARCH, result,
                        strategy=name, index=index, point=point._asdict(), objective=objective,
                        calls_per_query=calls, reused=reused)
        self.store.append(record)
        self.known.setdefault(record.key, record)
        strategy.observe(point, objective)
        best = objective if best is None else max(best, objective)
        self.reporter.advance(record, best)
        return best

    # -- 3. re-scoring -----------------------------------------------------------------

    def leaders(self, n: int) -> list[Record]:
        """The ``n`` best distinct architectures on the search split, by objective, then
        fewer calls, then first found."""
        ranked = sorted(self.known.values(),
                        key=lambda r: (-(r.objective or 0.0), r.calls_per_query or 0))
        return ranked[:n]

    async def rescore(self, space: SearchSpace) -> list[Record]:
        leaders = self.leaders(self.config.search.rescore_top)
        done = {r.key: r for r in self.store.of_kind("heldout")}
        todo = [r for r in leaders if r.key not in done]
        self.reporter.phase("held-out re-scoring", len(leaders))

        async def one(leader: Record) -> None:
            arch = parse_architecture(leader.spec, f"trial {leader.key}")
            result = await self.runner.measure(arch, self.questions[HELDOUT])
            record = Record("heldout", leader.key, leader.spec, HELDOUT, result,
                            point=leader.point, calls_per_query=leader.calls_per_query,
                            objective=self.objective(result.score, leader.calls_per_query or 0),
                            extra={"search_score": leader.result.score,
                                   "search_objective": leader.objective})
            self.store.append(record)
            done[leader.key] = record
            self.reporter.advance(record, None)

        if todo:
            archs = [parse_architecture(r.spec, f"trial {r.key}") for r in todo]
            await self.runner.prepare(archs)
            await _bounded(self.config.search.parallel, [functools.partial(one, r) for r in todo])
        return [done[r.key] for r in leaders]

    async def rescore_singles(self, refs: Sequence[ModelRef]) -> list[Record]:
        """Every model alone on the held-out split: the baselines the search must beat."""
        done = {r.key: r for r in self.store.of_kind("heldout")}
        todo = [m for m in refs if SINGLE_PREFIX + m.name not in done]

        done.update((r.key, r) for r in await self._measure_singles("heldout", HELDOUT, todo))
        return [done[SINGLE_PREFIX + m.name] for m in refs]

    async def _measure_singles(self, kind: Kind, split: str, models: Sequence[ModelRef],
                               on_record: Callable[[Record], object] = lambda _: None
                               ) -> list[Record]:
        """Each model alone on ``split``, persisted as ``kind`` records: the ranking and
        the held-out baselines are the same measurement on different questions."""
        records: list[Record] = []

        async def one(model: ModelRef) -> None:
            arch = single_spec(model)
            result = await self.runner.measure(arch, self.questions[split])
            record = Record(kind, SINGLE_PREFIX + model.name, arch.to_dict(), split, result,
                            model=model.name, calls_per_query=1)
            self.store.append(record)
            records.append(record)
            on_record(record)

        if models:
            await self.runner.prepare([single_spec(m) for m in models])
            await _bounded(self.config.search.parallel,
                           [functools.partial(one, m) for m in models])
        return records


async def _bounded(limit: int, thunks: Sequence[Callable[[], Awaitable[object]]]) -> None:
    """Run the coroutine thunks, at most ``limit`` at once."""
    limiter = anyio.CapacityLimiter(limit)

    async def run(thunk: Callable[[], Awaitable[object]]) -> None:
        async with limiter:
            await thunk()

    async with anyio.create_task_group() as tg:
        for thunk in thunks:
            tg.start_soon(run, thunk)
