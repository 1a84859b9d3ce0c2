"""Architectures answered end to end: client -> broker -> orchestrator -> technique agents."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from itas.agents.pool import load_pool
from itas.client import AsyncClient
from itas.errors import RemoteError
from itas.plan import estimate_cost, layer_flows
from itas.spec import load_architecture
from itas.stack import service_names
from tests.helpers import FAST_HEARTBEAT, REPO, Processes, wait_for_workers

pytestmark = pytest.mark.anyio

SIM_POOL = REPO / "configs" / "pools" / "sim.yaml"
SIM_ARCHITECTURES = sorted(
    [*REPO.glob("configs/architectures/sim_*.yaml"), *REPO.glob("configs/archon/*_sim.json")])
KEY = {"id": "demo/1", "answer": "The answer is 42.", "wrong": ["The answer is 41.",
                                                               "The answer is 420."],
       "difficulty": 0.2, "tests": ["assert solve() == 42"]}


@pytest.fixture(scope="module")
def sim_stack() -> Iterator[str]:
    procs = Processes()
    try:
        broker = procs.broker()
        procs.spawn("agents", "--pool", str(SIM_POOL), "--broker", broker.endpoint)
        procs.agent(broker.endpoint, "orchestrator", {"call_timeout_s": 4})
        for service in ("orchestrator", *service_names(load_pool(SIM_POOL))):
            wait_for_workers(broker.endpoint, service, 1)
        yield broker.endpoint
    finally:
        procs.stop_all()


def client_for(endpoint: str) -> AsyncClient:
    return AsyncClient(endpoint, heartbeat_interval=FAST_HEARTBEAT, timeout=60)


@pytest.mark.parametrize("path", SIM_ARCHITECTURES, ids=lambda p: p.name)
async def test_every_sim_architecture_answers_with_the_planned_flow(sim_stack: str,
                                                                    path: Path) -> None:
    arch = load_architecture(path)
    async with client_for(sim_stack) as client:
        answer = await client.ask("What is six times seven?", architecture=path, trace=True,
                                  sim=KEY, tests=KEY["tests"] if arch.tests else None)
    assert answer.text
    layers = answer.trace["layers"]
    assert len(layers) == len(arch.layers)
    for flow, layer in zip(layer_flows(arch.layers), layers, strict=True):
        low, high = flow.candidates_out
        assert low <= len(layer["candidates"]) <= high, (path.name, flow, layer["candidates"])
        assert all(not c["failed"] for c in layer["components"]), layer["components"]
    cost = estimate_cost(arch)
    assert cost.min_calls_per_query <= answer.usage["calls"] <= cost.calls_per_query


async def test_gcrf_trace_keeps_critiques_on_their_candidates(sim_stack: str) -> None:
    async with client_for(sim_stack) as client:
        answer = await client.ask("What is six times seven?",
                                  architecture=REPO / "configs/architectures/sim_gcrf.yaml",
                                  trace=True, sim=KEY)
    generated, critiqued, ranked, fused = answer.trace["layers"]
    assert [len(l["candidates"]) for l in answer.trace["layers"]] == [6, 6, 3, 1]
    by_id = {c["id"]: c["text"] for c in generated["candidates"]}
    assert {c["id"] for c in critiqued["candidates"]} == set(by_id)
    for candidate in critiqued["candidates"]:
        assert candidate["text"] == by_id[candidate["id"]] and candidate["critique"]
    assert {c["id"] for c in ranked["candidates"]} <= set(by_id)
    assert [c["requests"] for c in generated["components"]] == [2, 2, 2]
    assert critiqued["components"][0]["requests"] == 6
    assert answer.usage["calls"] == 14
    assert fused["candidates"][0]["text"] == answer.text


async def test_a_budget_that_cannot_reach_an_answer_fails_before_any_call(sim_stack: str
                                                                          ) -> None:
    async with client_for(sim_stack) as client:
        with pytest.raises(RemoteError) as failure:
            await client.ask("q", architecture=REPO / "configs/architectures/sim_gcrf.yaml",
                             budget={"calls": 10}, sim=KEY)
        before = (await client.status())["counters"]["dispatched"]
    assert failure.value.code == "budget_exceeded"
    assert "does not reach layer 2, which needs up to 6 more calls" in failure.value.message
    assert "stopped before any call" in failure.value.message
    async with client_for(sim_stack) as client:
        assert (await client.status())["counters"]["dispatched"] == before


async def test_a_budget_that_reaches_a_valid_answer_stops_there(sim_stack: str) -> None:
    arch = {"name": "gr_first", "final": "first", "layers": [
        [{"technique": "generator", "provider": "sim", "model": "strong", "samples": 3}],
        [{"technique": "critic", "provider": "sim", "model": "medium"}],
        [{"technique": "ranker", "provider": "sim", "model": "strong", "top_k": 1}]]}
    async with client_for(sim_stack) as client:
        answer = await client.ask("q", architecture=arch, budget={"calls": 4}, sim=KEY)
    assert answer.stopped is not None and answer.stopped["layer"] == 2
    assert answer.calls_spent == 3 and answer.usage["calls"] == 3


async def test_bad_queries_get_errors_naming_the_field(sim_stack: str) -> None:
    async with client_for(sim_stack) as client:
        with pytest.raises(RemoteError, match="query.messages"):
            await client.request("orchestrator", {"messages": [], "architecture": {}})
        bad_arch = {"name": "x", "layers": [[{"technique": "ranker", "provider": "sim",
                                              "model": "strong", "top_k": 1}]]}
        with pytest.raises(RemoteError, match="layer 1, component 1 \\(ranker\\)"):
            await client.request("orchestrator", {"prompt": "q", "architecture": bad_arch})
        assert (await client.status())["services"]["orchestrator"]["workers"] == 1


async def test_benchmark_tests_are_required_when_the_spec_says_so(sim_stack: str) -> None:
    async with client_for(sim_stack) as client:
        with pytest.raises(RemoteError, match="'tests: benchmark'"):
            await client.ask("q", architecture=REPO / "configs/architectures/sim_code_exec.yaml",
                             sim=KEY)


async def test_a_failed_branch_is_recorded_and_the_layer_goes_on(sim_stack: str) -> None:
    arch = {"name": "half_missing", "final": "first", "layers": [[
        {"technique": "generator", "provider": "sim", "model": "strong", "samples": 2},
        {"technique": "generator", "provider": "sim", "model": "nobody-serves-this"},
    ], [{"technique": "ranker", "provider": "sim", "model": "strong", "top_k": 1}]]}
    async with client_for(sim_stack) as client:
        answer = await client.ask("q", architecture=arch, trace=True, sim=KEY)
    first = answer.trace["layers"][0]
    missing = first["components"][1]
    assert len(first["candidates"]) == 2
    assert missing["failed"] and "nobody-serves-this" in missing["failed"][0]
    assert answer.text


async def test_a_layer_left_empty_is_a_clear_error(sim_stack: str) -> None:
    arch = {"name": "all_missing", "layers": [[
        {"technique": "generator", "provider": "sim", "model": "ghost"}]]}
    async with client_for(sim_stack) as client:
        with pytest.raises(RemoteError) as failure:
            await client.ask("q", architecture=arch)
    assert failure.value.code == "no_candidates"
    assert "layer 1 (generator@sim:ghost) left no candidates" in failure.value.message


async def test_agent_killed_mid_query_the_replica_finishes_and_the_trace_shows_it(
        procs: Processes, tmp_path: Path) -> None:
    slow = {"provider": "sim", "model": "slow", "skill": 0.8, "credit": 4,
            "latency": {"mean_s": 1.0, "jitter_s": 0.0}}
    pool = tmp_path / "pool.yaml"
    pool.write_text(json.dumps({"agents": [
        {"kind": "generator", "replicas": 2, "settings": slow},
        {"kind": "ranker", "settings": {**slow, "latency": {"mean_s": 0.01, "jitter_s": 0}}},
    ]}))
    broker = procs.broker()
    procs.agent(broker.endpoint, "orchestrator")
    generators = [procs.agent(broker.endpoint, "generator", slow) for _ in range(2)]
    procs.agent(broker.endpoint, "ranker", {**slow, "latency": {"mean_s": 0.01,
                                                                 "jitter_s": 0}})
    wait_for_workers(broker.endpoint, "generator@sim:slow", 2)
    wait_for_workers(broker.endpoint, "ranker@sim:slow", 1)
    wait_for_workers(broker.endpoint, "orchestrator", 1)
    arch = {"name": "g4r", "layers": [
        [{"technique": "generator", "provider": "sim", "model": "slow", "samples": 4}],
        [{"technique": "ranker", "provider": "sim", "model": "slow", "top_k": 1}]]}
    async with client_for(broker.endpoint) as client, anyio.create_task_group() as tg:
        answers = []

        async def ask() -> None:
            answers.append(await client.ask("q", architecture=arch, trace=True, sim=KEY))

        tg.start_soon(ask)
        await anyio.sleep(0.4)  # the 4 samples are in flight, 2 on each replica
        generators[0].send_signal(signal.SIGKILL)
    [answer] = answers
    generation = answer.trace["layers"][0]
    assert len(generation["candidates"]) == 4
    assert generation["components"][0]["retried"] == 2
    assert not generation["components"][0]["failed"]


async def test_generated_unit_tests_reach_every_later_prompt_that_shows_them(sim_stack: str
                                                                             ) -> None:
    """Archon's way: tests an earlier layer wrote are appended to the query of every later
    generator, critic and ranker; ``tests_in_prompt: false`` leaves them out (the
    unit_test_evaluator's default: its prompt lists them on their own)."""
    arch = {"name": "tests_in_prompts", "final": "first", "layers": [
        [{"technique": "unit_test_generator", "provider": "sim", "model": "strong"}],
        [{"technique": "generator", "provider": "sim", "model": "medium", "samples": 2},
         {"technique": "generator", "provider": "sim", "model": "weak",
          "tests_in_prompt": False}],
        [{"technique": "critic", "provider": "sim", "model": "medium"}],
        [{"technique": "unit_test_evaluator", "provider": "sim", "model": "strong",
          "top_k": 2}],
        [{"technique": "ranker", "provider": "sim", "model": "strong", "top_k": 1}]]}
    async with client_for(sim_stack) as client:
        answer = await client.ask("What is six times seven?", architecture=arch, trace=True,
                                  sim=KEY)
    layers = answer.trace["layers"]
    tests = layers[0]["tests"]
    assert tests == KEY["tests"]  # the sim writes the answer key's tests

    def prompts(layer: int, component: int) -> list[str]:
        shown = layers[layer]["components"][component]["prompts"]
        assert shown, (layer, component)
        return [m["content"] for prompt in shown for m in prompt if m["role"] == "user"]

    marker = "Your response should pass the following unit tests:\n- assert solve() == 42"
    assert all(marker in p for p in prompts(1, 0))  # generator with tests_in_prompt
    assert not any(marker in p for p in prompts(1, 1))  # generator without
    assert all(marker in p for p in prompts(2, 0))  # critic
    assert not any(marker in p for p in prompts(3, 0))  # evaluator: listed on their own
    assert all("assert solve() == 42" in p for p in prompts(3, 0))
    assert all(marker in p for p in prompts(4, 0))  # ranker
