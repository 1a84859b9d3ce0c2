"""The search under noise, without sockets: trials reproducible however evaluations race,
a resume that re-runs what was in flight, finalists raced on fresh questions so the pick
beats the luckiest trial, paired statistics that mean what they say, and a GP told about
the noise."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itas.benchmarks import Question, load_benchmark
from itas.orchestrator.inprocess import InProcessCaller
from itas.search.config import parse_search_config
from itas.search.controller import SearchController, merge, outclassed, rounds_of
from itas.search.runners import InProcessRunner
from itas.search.space import point_key
from itas.search.stats import mean_and_stderr, paired
from itas.search.store import Measurement, Record, TrialStore
from itas.search.strategies import GP_ALPHA, MAX_ALPHA, BayesianSearch
from itas.search.study import pool_for
from itas.spec import Architecture
from tests.helpers import DATA_DIR
from tests.test_search_run import search_config
from tests.test_search_space import config as space_config
from tests.test_search_space import space_of

pytestmark = pytest.mark.anyio


class Jittery:
    """An in-process runner whose evaluations finish in a seeded random order; ``stop_at``
    cancels the whole search when that many evaluations have started (a kill while
    others are in flight)."""

    def __init__(self, inner: InProcessRunner, seed: int, stop_at: int | None = None,
                 scope: anyio.CancelScope | None = None) -> None:
        self.inner, self.rng = inner, random.Random(seed)
        self.stop_at, self.scope = stop_at, scope
        self.started: list[str] = []

    async def prepare(self, archs: Sequence[Architecture]) -> None:
        await self.inner.prepare(archs)

    async def measure(self, arch: Architecture, questions: Sequence[Question]) -> Measurement:
        self.started.append(arch.name)
        if self.stop_at is not None and self.scope is not None \
                and len(self.started) >= self.stop_at:
            self.scope.cancel()
        await anyio.sleep(self.rng.uniform(0, 0.02))
        return await self.inner.measure(arch, questions)


def questions() -> tuple[list[Question], list[Question]]:
    return (load_benchmark("gsm8k", split="search", limit=6, data_dir=DATA_DIR),
            load_benchmark("gsm8k", split="heldout", limit=6, data_dir=DATA_DIR))


def schedule(store: TrialStore) -> list[tuple[str | None, int | None, str, bool]]:
    return [(r.strategy, r.index, r.key, r.reused) for r in store.trials()]


async def run_search_in_process(config: Any, out: Path, seed: int, *, resume: bool = False,
                                stop_at: int | None = None) -> tuple[TrialStore, Jittery]:
    search, heldout = questions()
    store = TrialStore.open(out, {"test": 1}, resume=resume)
    async with InProcessCaller(pool_for(config)) as caller:
        with anyio.CancelScope() as scope:
            runner = Jittery(InProcessRunner(caller, concurrency=4), seed, stop_at, scope)
            await SearchController(config, store, runner, search, heldout).search()
    return store, runner


async def test_parallel_trials_are_the_same_however_evaluations_race(tmp_path: Path) -> None:
    config = parse_search_config(search_config(search={
        "trials": 7, "initial_random": 2, "parallel": 3, "strategies": ["bo", "random", "greedy"],
        "seed": 5}), "tiny.yaml")
    first, _ = await run_search_in_process(config, tmp_path / "a", seed=1)
    second, _ = await run_search_in_process(config, tmp_path / "b", seed=2)
    assert schedule(first) == schedule(second)
    assert [r.result.score for r in first.trials()] == [r.result.score for r in second.trials()]
    assert len(first.trials("bo")) == 7


@pytest.mark.parametrize("stop_at", [4, 6])
async def test_resume_reruns_the_trials_in_flight_and_ends_as_if_never_stopped(
        tmp_path: Path, stop_at: int) -> None:
    config = parse_search_config(search_config(search={
        "trials": 6, "initial_random": 2, "parallel": 2, "strategies": ["bo", "random"],
        "baseline_trials": 4, "seed": 2}), "tiny.yaml")
    whole, _ = await run_search_in_process(config, tmp_path / "whole", seed=3)
    cut, killed = await run_search_in_process(config, tmp_path / "cut", seed=4,
                                              stop_at=stop_at)
    done = {str(r.spec.get("name")) for r in cut.records}
    in_flight = [name for name in killed.started if name not in done]
    assert in_flight, "the stop left nothing in flight"
    resumed, runner = await run_search_in_process(config, tmp_path / "cut", seed=5,
                                                  resume=True)
    assert schedule(resumed) == schedule(whole)
    assert set(in_flight) <= set(runner.started), "a trial in flight was not run again"
    assert not done & set(runner.started), "a finished evaluation ran twice"


# -- the finalists' race ------------------------------------------------------------------


class Bernoulli:
    """Scores an architecture's questions as coin flips of its true accuracy, seeded by
    (architecture, question): every evaluation of the same pair agrees, as with sim."""

    def __init__(self, truth: dict[str, float], seed: int) -> None:
        self.truth, self.seed = truth, seed
        self.measured: list[tuple[str, int]] = []

    async def prepare(self, archs: Sequence[Architecture]) -> None:
        pass

    async def measure(self, arch: Architecture, questions: Sequence[Question]) -> Measurement:
        self.measured.append((arch.name, len(questions)))
        scores = {q.id: float(random.Random(f"{self.seed}/{arch.name}/{q.id}").random()
                              < self.truth[arch.name]) for q in questions}
        mean, se = mean_and_stderr(list(scores.values()))
        return Measurement(mean, len(scores), int(sum(scores.values())), 0, len(scores), 0,
                           0, 0.0, 0.0, 0.0, stderr=se, scores=scores)


def fake_questions(prefix: str, n: int) -> list[Question]:
    return [Question(f"{prefix}{i}", "fake", [{"role": "user", "content": "?"}])
            for i in range(n)]


async def test_the_race_beats_the_luckiest_trial(tmp_path: Path) -> None:
    """Many close architectures, one clearly best on truth but not always on 20 search
    questions: over seeded setups, the confirmed pick's true score beats the naive pick's,
    and an architecture that drops out is behind the leader by 2 SE on the questions."""
    space = space_of(space_config())
    points = list(space.valid_points)[:12]
    config = parse_search_config(search_config(
        benchmark={"name": "gsm8k", "data_dir": str(DATA_DIR), "search": 20, "confirm": 90,
                   "heldout": 6},
        search={"trials": 1, "finalists": 5, "confirm_rounds": 3, "strategies": ["bo"]}),
        "tiny.yaml")
    naive_total = picked_total = 0.0
    for seed in range(30):
        rng = random.Random(seed)
        truth = {point_key(p): 0.6 + 0.05 * rng.random() for p in points}
        best = point_key(rng.choice(points))
        truth[best] = 0.78
        runner = Bernoulli(truth, seed)
        store = TrialStore.open(tmp_path / f"s{seed}", {"seed": seed}, resume=False)
        controller = SearchController(config, store, runner, fake_questions("s", 20), [],
                                      confirm_questions=fake_questions("c", 90))
        for p in points:
            m = await runner.measure(space.architecture(p), controller.questions["search"])
            controller.known[point_key(p)] = Record(
                "trial", point_key(p), space.spec(p), "search", m, strategy="bo",
                point=p._asdict(), objective=m.score, calls_per_query=1)
        naive = controller.leaders(1)[0].key
        finalists = await controller.confirm()
        if not finalists:
            continue
        picked = finalists[0].trial.key
        naive_total += truth[naive]
        picked_total += truth[picked]
        confirmed = store.confirmations()
        for f in finalists:
            assert f.rounds == sum(1 for (k, _) in confirmed if k == f.trial.key)
            if f.dropped_in is None:
                continue
            upto = range(1, f.dropped_in + 1)
            mine = merge([confirmed[(f.trial.key, r)].result for r in upto])
            # Some finalist still in the race then was 1.96 SE ahead on those questions.
            ahead = [paired(merge([confirmed[(o.trial.key, r)].result for r in upto]).scores,
                            mine.scores, resamples=0)
                     for o in finalists if o is not f and o.rounds >= f.dropped_in]
            assert any(d.mean - 1.96 * d.stderr > 0 for d in ahead)
        # Every round's questions are fresh: no search question in a confirm record.
        assert all(not set(r.result.scores) & {f"s{i}" for i in range(20)}
                   for r in confirmed.values())
    assert picked_total > naive_total + 0.3, (picked_total, naive_total)


def test_rounds_cut_evenly_and_outclassed_needs_significance() -> None:
    for n in range(40):
        for count in range(1, 6):
            rounds = rounds_of(list(range(n)), count)
            assert [x for r in rounds for x in r] == list(range(n))
            assert all(rounds) and (max(map(len, rounds)) - min(map(len, rounds)) <= 1
                                    if rounds else n == 0)
    same = {f"q{i}": float(i % 2) for i in range(40)}
    worse = {f"q{i}": 0.0 for i in range(40)}
    assert outclassed("a", ["b", "c"], {"a": same, "b": dict(same), "c": worse}) == ["c"]


# -- paired statistics -------------------------------------------------------------------

scores = st.dictionaries(st.sampled_from([f"q{i}" for i in range(30)]),
                         st.sampled_from([0.0, 0.5, 1.0]), min_size=1)


@settings(max_examples=150, deadline=None)
@given(scores, scores)
def test_paired_difference_is_antisymmetric_and_zero_on_itself(a: dict[str, float],
                                                               b: dict[str, float]) -> None:
    ab, ba = paired(a, b, resamples=200), paired(b, a, resamples=200)
    assert math.isclose(ab.mean, -ba.mean, abs_tol=1e-12) and ab.n == ba.n
    assert math.isclose(ab.p_better + ba.p_better, 1.0, abs_tol=1e-9)
    assert math.isclose(ab.bootstrap_p_better + ba.bootstrap_p_better, 1.0, abs_tol=1e-9)
    itself = paired(a, a, resamples=50)
    assert itself.mean == 0 and itself.p_better == 0.5 and not itself.significant


def test_the_95_interval_covers_the_true_difference_about_95_times_in_100() -> None:
    rng = random.Random(42)
    covered = 0
    trials = 400
    for _ in range(trials):
        p, q = rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.8)
        a = {f"q{i}": float(rng.random() < p) for i in range(150)}
        b = {f"q{i}": float(rng.random() < q) for i in range(150)}
        diff = paired(a, b, resamples=0)
        covered += diff.low <= p - q <= diff.high
    assert 0.91 * trials <= covered <= 0.99 * trials, covered


# -- the GP is told about the noise -------------------------------------------------------


def test_noise_alpha_is_the_variance_ratio_and_scale_free() -> None:
    space = space_of(space_config())
    points = list(space.valid_points)[:8]
    rng = random.Random(0)
    values = [rng.uniform(0.4, 0.9) for _ in points]

    def alpha(scale: float, variance: float) -> float:
        bo = BayesianSearch(space, 0, initial_random=2)
        for p, v in zip(points, values, strict=True):
            bo.observe(p, v * scale, variance * scale * scale)
        return bo.noise_alpha()

    spread = sum((v - sum(values) / len(values)) ** 2 for v in values) / len(values)
    assert math.isclose(alpha(1.0, 0.004), 0.004 / spread, rel_tol=1e-9)
    assert math.isclose(alpha(10.0, 0.004), alpha(1.0, 0.004), rel_tol=1e-9)
    assert alpha(1.0, 0.0) == GP_ALPHA and alpha(1.0, 100.0) == MAX_ALPHA
    with pytest.raises(Exception, match="variance must be >= 0"):
        BayesianSearch(space, 0).observe(points[0], 0.5, -1.0)
