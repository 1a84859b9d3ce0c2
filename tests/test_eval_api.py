"""``evaluate``, the API behind ``itas eval`` and the search, run in-process: the real
orchestrator over real sim agents built by ``InProcessCaller`` (no broker needed for these
properties). Errors are recorded and scored 0, resume reuses exactly the finished questions,
and the figures the search reads add up.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from itas.agents.pool import PoolEntry, load_pool
from itas.benchmarks import load_benchmark
from itas.benchmarks.question import Question, user
from itas.benchmarks.selection import ORACLE, VISIBLE, selection_tests_for
from itas.errors import ConfigError
from itas.evaluation.evaluate import EvalSummary, Tally, evaluate, spec_hash
from itas.orchestrator.inprocess import InProcessCaller
from itas.orchestrator.runner import Budget, Orchestrator
from itas.spec import Architecture, load_architecture
from tests.helpers import DATA_DIR, REPO

pytestmark = pytest.mark.anyio

POOL = load_pool(REPO / "configs" / "pools" / "sim.yaml")
ARCHS = REPO / "configs" / "architectures"
SINGLE = load_architecture(ARCHS / "sim_single.yaml")
NO_BUDGET = Budget()


class CountingRunner:
    """The real orchestrator, counting the queries it is asked (by first message)."""

    def __init__(self, runner: Orchestrator) -> None:
        self.runner = runner
        self.asked: list[str] = []

    async def run(self, arch: Architecture, messages: Sequence[Mapping[str, str]], *,
                  sim: Mapping[str, Any] | None = None, tests: Sequence[str] | None = None,
                  budget: Budget = NO_BUDGET, trace: bool = False) -> dict[str, Any]:
        self.asked.append(messages[0]["content"])
        return await self.runner.run(arch, messages, sim=sim, tests=tests, budget=budget,
                                     trace=trace)


@functools.cache
def _gsm8k(limit: int) -> tuple[Question, ...]:
    return tuple(load_benchmark("gsm8k", limit=limit, data_dir=DATA_DIR))


def gsm8k(limit: int) -> list[Question]:
    return list(_gsm8k(limit))


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_summary_adds_up_and_progress_reports_each_question() -> None:
    questions = gsm8k(12)
    seen: list[tuple[str, int]] = []
    async with InProcessCaller(POOL) as caller:
        summary = await evaluate(SINGLE, questions, Orchestrator(caller), concurrency=4,
                                 progress=lambda record, tally: seen.append(
                                     (record["id"], tally.done)))
    assert isinstance(summary, EvalSummary)
    assert (summary.architecture, summary.benchmark, summary.n) == ("sim_single", "gsm8k", 12)
    assert [r["id"] for r in summary.results] == [q.id for q in questions]  # question order
    assert sorted(done for _, done in seen) == list(range(1, 13))
    assert summary.correct == sum(r["correct"] for r in summary.results)
    assert summary.score == pytest.approx(summary.correct / 12)
    assert summary.calls == 12 and summary.tokens == sum(r["tokens"] for r in summary.results)
    assert summary.latency_s > 0 and summary.errors == 0 and summary.spec_hash == spec_hash(SINGLE)


async def test_failed_questions_are_recorded_and_scored_zero(tmp_path: Path) -> None:
    questions = gsm8k(5)
    medium = load_architecture(ARCHS / "sim_vote.yaml")  # generator@sim:medium: not served
    path = tmp_path / "results.jsonl"
    async with InProcessCaller([e for e in POOL if e.settings.get("model") != "medium"]
                               ) as caller:
        summary = await evaluate(medium, questions, Orchestrator(caller), results_path=path)
    assert (summary.n, summary.errors, summary.score, summary.correct) == (5, 5, 0.0, 0)
    for record in lines(path):
        assert record["score"] == 0.0 and record["answer"] is None
        assert "no_candidates" in record["error"] and "generator@sim:medium" in record["error"]


async def test_a_question_deadline_is_an_error_not_a_hang(tmp_path: Path) -> None:
    slow = [PoolEntry("generator", 1, {"provider": "sim", "model": "strong", "skill": 0.8,
                                       "latency": 5.0})]
    async with InProcessCaller(slow) as caller:
        summary = await evaluate(SINGLE, gsm8k(3), Orchestrator(caller), concurrency=3,
                                 question_timeout_s=0.2)
    assert summary.errors == 3 and all(r["error"] == "TimeoutError" for r in summary.results)
    assert all(0.15 < r["latency_s"] < 2 for r in summary.results)


async def test_resume_runs_only_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    async with InProcessCaller(POOL) as caller:
        first = CountingRunner(Orchestrator(caller))
        before = await evaluate(SINGLE, gsm8k(10), first, results_path=path)
        with path.open("a") as f:  # a write cut short by a kill
            f.write('{"architecture": "sim_single", "spec_ha')
        second = CountingRunner(Orchestrator(caller))
        after = await evaluate(SINGLE, gsm8k(15), second, results_path=path)
    assert len(first.asked) == 10 and len(second.asked) == 5
    assert {q.prompt for q in gsm8k(15)} - {q.prompt for q in gsm8k(10)} == set(second.asked)
    records = lines(path)  # the torn line is gone, nothing is duplicated
    assert len(records) == 15 and len({r["id"] for r in records}) == 15
    assert after.resumed == 10 and after.n == 15
    assert after.results[:0] == [] and {r["id"]: r for r in after.results} | {
        r["id"]: r for r in before.results} == {r["id"]: r for r in after.results}


async def test_a_changed_spec_is_not_resumed(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    hotter = load_architecture({**SINGLE.to_dict(), "layers": [[{
        "technique": "generator", "provider": "sim", "model": "strong", "temperature": 1.0}]]})
    async with InProcessCaller(POOL) as caller:
        await evaluate(SINGLE, gsm8k(4), Orchestrator(caller), results_path=path)
        runner = CountingRunner(Orchestrator(caller))
        summary = await evaluate(hotter, gsm8k(4), runner, results_path=path)
    assert len(runner.asked) == 4 and summary.resumed == 0
    assert len({r["spec_hash"] for r in lines(path)}) == 2


async def test_errors_are_done_unless_retried(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    async with InProcessCaller([]) as empty:
        failed = await evaluate(SINGLE, gsm8k(4), Orchestrator(empty), results_path=path)
    assert failed.errors == 4
    async with InProcessCaller(POOL) as caller:
        kept = await evaluate(SINGLE, gsm8k(4), Orchestrator(caller), results_path=path)
        assert kept.errors == 4 and kept.resumed == 4
        retried = await evaluate(SINGLE, gsm8k(4), Orchestrator(caller), results_path=path,
                                 retry_errors=True)
    assert retried.errors == 0 and retried.resumed == 0
    assert len(lines(path)) == 8  # the later records supersede the failed ones
    async with InProcessCaller([]) as empty:
        reread = await evaluate(SINGLE, gsm8k(4), Orchestrator(empty), results_path=path)
    assert reread.errors == 0 and reread.resumed == 4


async def test_judge_benchmark_without_judge_stops_before_running(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    questions = load_benchmark("mt_bench", limit=2, data_dir=DATA_DIR)
    async with InProcessCaller(POOL) as caller:
        runner = CountingRunner(Orchestrator(caller))
        with pytest.raises(ConfigError, match="scored by an LLM judge"):
            await evaluate(SINGLE, questions, runner, results_path=path)
        with pytest.raises(ConfigError, match="duplicate"):
            await evaluate(SINGLE, gsm8k(2) * 2, runner)
    assert runner.asked == [] and (not path.exists() or path.read_text() == "")


async def test_torn_middle_line_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"not": "a record"}\n')
    async with InProcessCaller(POOL) as caller:
        with pytest.raises(ConfigError, match=r"results.jsonl:1: not a results record"):
            await evaluate(SINGLE, gsm8k(1), Orchestrator(caller), results_path=path)


@pytest.mark.parametrize("mode", [VISIBLE, ORACLE])
async def test_benchmark_tests_reach_the_code_tester(mode: str) -> None:
    """HumanEval/32 and /38 have no top-level assert to unroll; their whole check() goes as
    the oracle test; /38 shows no example, so its visible test is the signature's."""
    wanted = {"HumanEval/32", "HumanEval/38"}
    questions = [q for q in load_benchmark("humaneval", data_dir=DATA_DIR) if q.id in wanted]
    assert all(selection_tests_for(q, mode) for q in questions)  # type: ignore[arg-type]
    asserts = ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]
    mbpp_like = Question(id="1", benchmark="mbpp", messages=user("Write add."), reference=asserts,
                         answer_key={"id": "mbpp/1", "answer": "x", "wrong": []},
                         visible_tests=tuple(asserts))
    assert selection_tests_for(mbpp_like, mode) == asserts  # type: ignore[arg-type]
    exec_arch = load_architecture(ARCHS / "sim_code_exec.yaml")
    async with InProcessCaller(POOL) as caller:
        summary = await evaluate(exec_arch, questions, Orchestrator(caller), concurrency=4,
                                 oracle_tests=mode == ORACLE)
    assert summary.errors == 0, [r["error"] for r in summary.results]
    assert summary.calls == 5 * len(questions)
    assert summary.selection_tests == mode
    assert {r["selection_tests"] for r in summary.results} == {mode}


async def test_the_search_reads_what_it_needs() -> None:
    from itas.search.evaluation import measure

    ticks: list[int] = []
    async with InProcessCaller(POOL) as caller:
        measurement = await measure(SINGLE, gsm8k(6), Orchestrator(caller), concurrency=3,
                                    progress=ticks.append)
    assert ticks == [1] * 6
    assert measurement.n == 6 and measurement.calls == 6 and measurement.errors == 0
    assert measurement.score == pytest.approx(measurement.correct / 6)


def test_tally_is_what_the_progress_bar_shows() -> None:
    tally = Tally(total=3)
    tally.add({"score": 1.0, "calls": 2, "tokens": 10, "cost_usd": 0.5, "error": None})
    tally.add({"score": 0.0, "calls": 1, "tokens": 5, "cost_usd": 0.25, "error": "boom"})
    assert (tally.done, tally.errors, tally.calls, tally.tokens) == (2, 1, 3, 15)
    assert tally.score == 0.5 and tally.cost_usd == 0.75
