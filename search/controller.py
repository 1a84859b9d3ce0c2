"""The search loop: rank the models, run each strategy's trials, confirm the finalists,
re-score on held-out questions.

1. Ranking. Every model answers the search split alone (one generator sample); the
   ranking gives "the best k models" its meaning and picks the judge model. The best
   model's run is also the space's single-model point, which every strategy gets as a
   free first observation.
2. Trials. Each strategy (``bo`` first, then the baselines) proposes points, at most
   ``parallel`` in flight; ``bo`` handles the pending ones with ``ConstantLiar`` and is
   told each observation's noise (its score's variance). Results are handed to the
   strategy in the order the points were proposed, not the order they finish, so a seed
   gives the same trials however the evaluations race; a resumed search replays that
   schedule from the store (the strategy must propose the stored points again, and the
   trials that were in flight when it stopped are proposed and run again). A point whose
   architecture any strategy already evaluated is recorded again for this strategy with
   ``reused: true`` and costs nothing. Every finished evaluation is appended to the store
   before the strategy sees it.
3. Confirmation. The best trial on the search questions is partly the luckiest (the
   winner's curse: with many trials, one question of noise decides the top). So the
   ``finalists`` best trials are re-scored on fresh search-split questions
   (``benchmark.confirm``), in ``confirm_rounds`` rounds; after each round a finalist
   whose paired difference to the leader is significantly negative (95%) drops out. The
   best architecture is the leader on the confirm questions alone (untouched by the
   selection), by objective. With ``confirm: 0`` it is the best trial by search score.
4. Held-out. The best architecture and the next finalists (``rescore_top`` in all), and
   every model alone (the single-model baselines), are evaluated on the held-out split.
   Held-out scores are reported, never used to choose; the best architecture is compared
   with the best single model on the same held-out questions (a paired difference with
   its interval and confidence).

Evaluation goes through a ``TrialRunner``: the deployed mesh (``MeshRunner``) or agents in
this process (``InProcessRunner``); the controller does no I/O of its own besides the store.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import anyio
import anyio.abc
import anyio.to_thread

from itas.benchmarks import Question
from itas.errors import ConfigError
from itas.search.config import SearchConfig
from itas.search.space import ModelRef, Point, SearchSpace, point_from_dict, point_key
from itas.search.stats import PairedDifference, mean_and_stderr, paired
from itas.search.store import Kind, Measurement, Record, TrialStore
from itas.search.strategies import Strategy, make_strategy
from itas.spec import Architecture, parse_architecture

log = logging.getLogger("itas.search")

SEARCH, CONFIRM, HELDOUT = "search", "confirm", "heldout"
SINGLE_PREFIX = "single:"
ELIMINATION_Z = 1.96  # a finalist drops out when the leader is this many SEs better
T = TypeVar("T")


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
class Finalist:
    """A finalist's confirmation: its search trial, what the confirm rounds it ran gave
    (merged), and the round it dropped out in (None: it stayed to the end)."""

    trial: Record
    confirm: Measurement
    objective: float
    rounds: int
    dropped_in: int | None = None


@dataclass
class SearchOutcome:
    ranking: list[Record]
    space: SearchSpace
    best: Record
    heldout: list[Record]
    single_heldout: list[Record]
    time_s: float
    finalists: list[Finalist] = field(default_factory=list)
    versus_single: PairedDifference | None = None  # best - best single model, on held-out
    evaluated: list[Record] = field(default_factory=list)  # each architecture's first trial


def order_models(config: SearchConfig, scores: Mapping[str, float]) -> list[ModelRef]:
    """The config's models by single-model score, best first; ties keep config order."""
    models = sorted(enumerate(config.models), key=lambda im: (-scores[im[1].name], im[0]))
    return [ModelRef.of(m) for _, m in models]


def single_spec(model: ModelRef) -> Architecture:
    """A model alone: one generator sample. The ranking and the baselines use it."""
    return parse_architecture({"name": f"single-{model.name}",
                               "layers": [[model.component("generator", samples=1)]]},
                              f"single-model spec for {model.name}")


def merge(measurements: Sequence[Measurement]) -> Measurement:
    """One measurement of the union of the questions of several (disjoint question sets)."""
    scores: dict[str, float] = {}
    for m in measurements:
        scores.update(m.scores)
    mean, stderr = mean_and_stderr(list(scores.values()))
    n = sum(m.n for m in measurements)
    return Measurement(
        score=mean, n=n, correct=sum(m.correct for m in measurements),
        errors=sum(m.errors for m in measurements), calls=sum(m.calls for m in measurements),
        cached_calls=sum(m.cached_calls for m in measurements),
        tokens=sum(m.tokens for m in measurements),
        cost_usd=sum(m.cost_usd for m in measurements),
        latency_s=sum(m.latency_s * m.n for m in measurements) / n if n else 0.0,
        time_s=sum(m.time_s for m in measurements), stderr=stderr, scores=scores,
        cost_known=all(m.cost_known for m in measurements))


def rounds_of(items: Sequence[T], count: int) -> list[list[T]]:
    """``items`` cut into ``count`` consecutive rounds of near-equal size (none empty)."""
    count = max(1, min(count, len(items)))
    size, extra = divmod(len(items), count)
    out: list[list[T]] = []
    start = 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return [r for r in out if r]


@dataclass
class _Slot:
    """One proposed trial, in proposal order: run, reused, or replayed from the store."""

    point: Point
    index: int
    result: Measurement | None = None
    reused: bool = False
    stored: Record | None = None
    done: anyio.Event = field(default_factory=anyio.Event)


class SearchController:
    def __init__(self, config: SearchConfig, store: TrialStore, runner: TrialRunner,
                 search_questions: Sequence[Question], heldout_questions: Sequence[Question],
                 reporter: Reporter | None = None,
                 confirm_questions: Sequence[Question] = ()) -> None:
        self.config = config
        self.store = store
        self.runner = runner
        self.questions = {SEARCH: list(search_questions), CONFIRM: list(confirm_questions),
                          HELDOUT: list(heldout_questions)}
        self.reporter = reporter or _Silent()
        self.known: dict[str, Record] = store.evaluated(SEARCH)

    def objective(self, score: float, calls_per_query: int) -> float:
        budget = self.config.budget.calls_per_query
        return score - self.config.objective.cost_weight * calls_per_query / budget

    async def run(self) -> SearchOutcome:
        """The whole search: ranking, every strategy's trials, confirmation, held-out."""
        started = time.perf_counter()
        ranking, space = await self.search()
        finalists = await self.confirm()
        best = finalists[0].trial if finalists else self.leaders(1)[0]
        heldout = await self.rescore(finalists)
        singles = await self.rescore_singles(space.ranked_models)
        return SearchOutcome(ranking, space, best, heldout, singles,
                             time.perf_counter() - started, finalists,
                             versus_single(heldout[0], singles) if heldout else None,
                             list(self.known.values()))

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
                           ) -> dict[Point, Measurement]:
        """The single-model point, already measured by the ranking, when the space has it."""
        point = space.single_model_point()
        if point is None:
            return {}
        key = point_key(point)
        self.known.setdefault(key, Record(
            "trial", key, space.spec(point), SEARCH, best_single.result, strategy="ranking",
            point=point._asdict(), calls_per_query=1,
            objective=self.objective(best_single.result.score, 1)))
        return {point: best_single.result}

    # -- 2. trials ---------------------------------------------------------------------

    def _strategy(self, name: str, space: SearchSpace) -> Strategy:
        settings = self.config.search
        options = {}
        if name == "bo":
            acq = settings.acquisition
            options = {"initial_random": settings.initial_random,
                       "acquisition_kind": acq.kind, "kappa": acq.kappa, "xi": acq.xi}
        return make_strategy(name, space, settings.seed, **options)

    async def run_strategy(self, name: str, space: SearchSpace,
                           seeds: Mapping[Point, Measurement]) -> None:
        """The strategy's trials, at most ``parallel`` in flight, results handed back in
        proposal order (see the module docstring); stored trials are replayed."""
        settings = self.config.search
        strategy = self._strategy(name, space)
        for point, result in seeds.items():
            strategy.observe(point, self.objective(result.score, 1), result.variance)
        stored = {r.index: r for r in self.store.trials(name) if r.index is not None}
        target = settings.trials_for(name)
        self.reporter.phase(f"strategy {name}", target)
        best: float | None = None
        slots: deque[_Slot] = deque()
        proposed = 0
        async with anyio.create_task_group() as tg:
            while True:
                while len(slots) < settings.parallel and proposed < target:
                    points = await anyio.to_thread.run_sync(strategy.suggest, 1)
                    if not points:
                        break
                    proposed += 1
                    slot = _Slot(points[0], proposed)
                    await self._start(slot, stored.get(proposed), name, space, tg)
                    slots.append(slot)
                if not slots:
                    if proposed < target:
                        log.warning("%s: the space has no more points (%d trials)", name,
                                    proposed)
                    break
                slot = slots.popleft()
                await slot.done.wait()
                best = self._finish(strategy, name, slot, best, space)

    async def _start(self, slot: _Slot, stored: Record | None, strategy: str,
                     space: SearchSpace, tg: anyio.abc.TaskGroup) -> None:
        if stored is not None:
            if point_from_dict(stored.point or {}) != slot.point:
                raise ConfigError(
                    f"resume: strategy {strategy} now proposes {point_key(slot.point)} as "
                    f"trial {slot.index}, where the store has {stored.key}; the optimizer "
                    "behaves differently than when the search started (another library "
                    "version?); continue in a new output folder")
            slot.stored = stored
            slot.done.set()
            return
        key = point_key(slot.point)
        if key in self.known:  # evaluated before, by another strategy
            slot.result, slot.reused = self.known[key].result, True
            slot.done.set()
            return
        arch = space.architecture(slot.point)
        await self.runner.prepare([arch])
        tg.start_soon(self._evaluate, slot, arch)

    async def _evaluate(self, slot: _Slot, arch: Architecture) -> None:
        slot.result = await self.runner.measure(arch, self.questions[SEARCH])
        slot.done.set()

    def _finish(self, strategy: Strategy, name: str, slot: _Slot, best: float | None,
                space: SearchSpace) -> float:
        """Store a finished trial (unless replayed), then let the strategy see it."""
        record = slot.stored
        if record is None:
            if slot.result is None:
                raise RuntimeError(f"trial {slot.index} finished without a result")
            calls = space.calls_per_query(slot.point)
            record = Record("trial", point_key(slot.point), space.spec(slot.point), SEARCH,
                            slot.result, strategy=name, index=slot.index,
                            point=slot.point._asdict(),
                            objective=self.objective(slot.result.score, calls),
                            calls_per_query=calls, reused=slot.reused)
            self.store.append(record)
        self.known.setdefault(record.key, record)
        objective = record.objective or 0.0
        strategy.observe(slot.point, objective, record.result.variance)
        best = objective if best is None else max(best, objective)
        self.reporter.advance(record, best)
        return best

    def leaders(self, n: int) -> list[Record]:
        """The ``n`` best distinct architectures on the search split, by objective, then
        fewer calls, then key (never the order records were found in, which differs
        between a search and its resumption)."""
        ranked = sorted(self.known.values(),
                        key=lambda r: (-(r.objective or 0.0), r.calls_per_query or 0, r.key))
        return ranked[:n]

    # -- 3. confirmation ---------------------------------------------------------------

    async def confirm(self) -> list[Finalist]:
        """Race the finalists on the confirm questions (module docstring); best first, then
        those that stayed, then those that dropped out, latest first. [] without confirm
        questions or with a single candidate."""
        questions = self.questions[CONFIRM]
        trials = self.leaders(self.config.search.finalists)
        if not questions or len(trials) < 2:
            return []
        rounds = rounds_of(questions, self.config.search.confirm_rounds)
        stored = self.store.confirmations()
        parts: dict[str, list[Measurement]] = {t.key: [] for t in trials}
        dropped: dict[str, int] = {}
        alive = list(trials)
        self.reporter.phase("confirming finalists", len(trials) * len(rounds))
        for number, batch in enumerate(rounds, 1):
            todo = [t for t in alive if (t.key, number) not in stored]
            for t in alive:
                if (t.key, number) in stored:
                    parts[t.key].append(stored[(t.key, number)].result)
                    self.reporter.advance(stored[(t.key, number)], None)
            measured = await self._measure_trials("confirm", CONFIRM, todo, batch,
                                                  {"round": number})
            for record in measured:
                parts[record.key].append(record.result)
            merged = {t.key: merge(parts[t.key]) for t in alive}
            order = self._confirm_order(alive, merged)
            for key in outclassed(order[0].key, [t.key for t in order[1:]],
                                  {t.key: merged[t.key].scores for t in alive}):
                dropped[key] = number
            alive = [t for t in alive if t.key not in dropped]
            if len(alive) == 1:
                break
        merged = {t.key: merge(parts[t.key]) for t in trials}
        stayed = self._confirm_order(alive, merged)
        out = self._confirm_order([t for t in trials if t.key in dropped], merged)
        out.sort(key=lambda t: -dropped[t.key])  # stable: latest drop-outs first
        return [Finalist(t, merged[t.key],
                         self.objective(merged[t.key].score, t.calls_per_query or 0),
                         len(parts[t.key]), dropped.get(t.key)) for t in stayed + out]

    def _confirm_order(self, trials: Sequence[Record], merged: Mapping[str, Measurement]
                       ) -> list[Record]:
        """By objective on the confirm questions, then fewer calls, then key."""
        return sorted(trials, key=lambda t: (
            -self.objective(merged[t.key].score, t.calls_per_query or 0),
            t.calls_per_query or 0, t.key))

    # -- 4. held-out -------------------------------------------------------------------

    async def rescore(self, finalists: Sequence[Finalist] = ()) -> list[Record]:
        """The best architecture and the next ones (finalists in their confirmed order, then
        leaders by search objective), ``rescore_top`` in all, on the held-out split."""
        order = [f.trial for f in finalists]
        order += [r for r in self.leaders(self.config.search.rescore_top + len(order))
                  if r.key not in {t.key for t in order}]
        leaders = order[:self.config.search.rescore_top]
        done = {r.key: r for r in self.store.of_kind("heldout")}
        todo = [r for r in leaders if r.key not in done]
        self.reporter.phase("held-out re-scoring", len(leaders))
        confirmed = {f.trial.key: f for f in finalists}
        for record in await self._measure_trials("heldout", HELDOUT, todo,
                                                 self.questions[HELDOUT], {}):
            done[record.key] = record
        for record in leaders:
            if record.key in confirmed:
                done[record.key].extra.setdefault(
                    "confirm_score", confirmed[record.key].confirm.score)
        return [done[r.key] for r in leaders]

    async def _measure_trials(self, kind: Kind, split: str, trials: Sequence[Record],
                              questions: Sequence[Question], extra: Mapping[str, int]
                              ) -> list[Record]:
        """``trials`` (search records) on ``questions``, persisted as ``kind`` records, in
        the order given."""
        results: dict[str, Record] = {}

        async def one(trial: Record) -> None:
            arch = parse_architecture(trial.spec, f"trial {trial.key}")
            result = await self.runner.measure(arch, questions)
            record = Record(kind, trial.key, trial.spec, split, result, point=trial.point,
                            calls_per_query=trial.calls_per_query,
                            objective=self.objective(result.score, trial.calls_per_query or 0),
                            extra={"search_score": trial.result.score,
                                   "search_objective": trial.objective, **extra})
            self.store.append(record)
            results[trial.key] = record
            self.reporter.advance(record, None)

        if trials:
            archs = [parse_architecture(t.spec, f"trial {t.key}") for t in trials]
            await self.runner.prepare(archs)
            await _bounded(self.config.search.parallel,
                           [functools.partial(one, t) for t in trials])
        return [results[t.key] for t in trials]

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


def outclassed(leader: str, others: Sequence[str], scores: Mapping[str, Mapping[str, float]]
               ) -> list[str]:
    """The ``others`` whose paired difference to ``leader`` on the questions so far is
    significantly negative (the leader ``ELIMINATION_Z`` standard errors better)."""
    out = []
    for key in others:
        diff = paired(scores[leader], scores[key], resamples=0)
        if diff.mean - ELIMINATION_Z * diff.stderr > 0:
            out.append(key)
    return out


def versus_single(best: Record, singles: Sequence[Record]) -> PairedDifference | None:
    """The best architecture minus the best single model on held-out, paired by question;
    None without a single-model baseline or when the best is a single model itself."""
    if not singles:
        return None
    top = max(singles, key=lambda r: r.result.score)
    if best.spec.get("layers") == top.spec.get("layers"):
        return None
    return paired(best.result.scores, top.result.scores)


async def _bounded(limit: int, thunks: Sequence[Callable[[], Awaitable[object]]]) -> None:
    """Run the coroutine thunks, at most ``limit`` at once."""
    limiter = anyio.CapacityLimiter(limit)

    async def run(thunk: Callable[[], Awaitable[object]]) -> None:
        async with limiter:
            await thunk()

    async with anyio.create_task_group() as tg:
        for thunk in thunks:
            tg.start_soon(run, thunk)
