"""The controller without sockets: agents in process. Strategies share evaluations, a
rerun on the same store evaluates nothing again, and calls are accounted honestly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from itas.benchmarks import Question, load_benchmark
from itas.orchestrator.inprocess import InProcessCaller
from itas.search.config import parse_search_config
from itas.search.controller import SearchController
from itas.search.report import call_accounting, convergence
from itas.search.runners import InProcessRunner
from itas.search.store import Measurement, TrialStore
from itas.search.study import pool_for
from itas.spec import Architecture
from tests.helpers import DATA_DIR
from tests.test_search_run import search_config


class CountingRunner:
    """Counts the evaluations that reach the real runner."""

    def __init__(self, inner: InProcessRunner) -> None:
        self.inner = inner
        self.evaluated: list[str] = []

    async def prepare(self, archs: Sequence[Architecture]) -> None:
        await self.inner.prepare(archs)

    async def measure(self, arch: Architecture, questions: Sequence[Question]) -> Measurement:
        self.evaluated.append(arch.name)
        return await self.inner.measure(arch, questions)


@pytest.fixture
def questions() -> tuple[list[Question], list[Question]]:
    search = load_benchmark("gsm8k", split="search", limit=6, data_dir=DATA_DIR)
    heldout = load_benchmark("gsm8k", split="heldout", limit=6, data_dir=DATA_DIR)
    return search, heldout


@pytest.mark.anyio
async def test_strategies_share_evaluations_and_a_rerun_evaluates_nothing(
        tmp_path: Path, questions: tuple[list[Question], list[Question]]) -> None:
    data = search_config(search={"trials": 8, "initial_random": 3, "parallel": 3,
                                 "strategies": ["bo", "random", "greedy"], "rescore_top": 2})
    config = parse_search_config(data, "tiny.yaml")
    async with InProcessCaller(pool_for(config)) as caller:
        runner = CountingRunner(InProcessRunner(caller, concurrency=4))
        store = TrialStore.open(tmp_path, config.fingerprint(), resume=False)
        outcome = await SearchController(config, store, runner, *questions).run()
        space_size = len(outcome.space.valid_points)
        trials = store.trials()
        assert len(trials) == 3 * min(8, space_size - 1)
        reused = [r for r in trials if r.reused]
        assert reused, "baselines proposed nothing BO had already evaluated"
        evaluated = [r.key for r in trials if not r.reused]
        assert len(evaluated) == len(set(evaluated))
        first_run = list(runner.evaluated)
        # ranking (2) + distinct trials + held-out leaders (2) + single models (2)
        assert len(first_run) == 2 + len(evaluated) + 2 + 2

        again = TrialStore.open(tmp_path, config.fingerprint(), resume=True)
        rerun = await SearchController(config, again, runner, *questions).run()
        assert runner.evaluated == first_run  # nothing evaluated a second time
        assert rerun.best.key == outcome.best.key

    calls = call_accounting(store)
    search_records = [r for r in store.records if r.split == "search"]
    assert calls["naive"] == sum(r.result.calls for r in search_records)
    assert calls["made"] == sum(r.result.calls for r in search_records if not r.reused)
    assert calls["reused_trials"] == len(reused)
    curve = convergence(store, "random", outcome.ranking[0])
    assert curve["evaluations"][0] == 0 and len(curve["evaluations"]) == len(
        store.trials("random")) + 1
