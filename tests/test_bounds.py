"""Bounds that hold: random valid specs, run with injected faults, never make more calls than
their plan says, never spend more than their budget, and never end other than with an answer
or a clear error.

Every spec is built from a seed (printed in the failure message, so a failure replays with
``ITAS_BOUNDS_SEED=<seed>``). The agents are the real technique agents, in process, on
simulated models whose provider is wrapped to garble outputs (empty, or text no parser
reads) and to fail calls at random; every provider call is counted where it happens.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from itas.agents.providers import Completion, Provider, SimTask, Usage, make_provider
from itas.agents.technique_agent import TechniqueAgent
from itas.errors import AgentError, ConfigError, ProviderError
from itas.orchestrator import budget as B
from itas.orchestrator.inprocess import InProcessCaller
from itas.orchestrator.runner import Orchestrator
from itas.plan import estimate_cost, layer_flows
from itas.spec import Architecture, parse_architecture
from itas.techniques import technique

pytestmark = pytest.mark.anyio

SPECS = int(os.environ.get("ITAS_BOUNDS_SPECS", "500"))
MODELS = {"strong": 0.8, "medium": 0.6, "weak": 0.4}
KEY = {"id": "bounds/1", "answer": "The answer is 42.", "final": "42",
       "wrong": ["The answer is 41.", "The answer is 40."], "difficulty": 0.4,
       "tests": ["the answer is 42", "it shows its steps"]}
QUERY = [{"role": "user", "content": "What is 6 x 7?"}]


class FaultyProvider(Provider):
    """A simulated model that garbles or fails some calls; counts every call it is asked."""

    name = "sim"

    def __init__(self, inner: Provider, rng: random.Random, counter: list[int], *,
                 garble: float, fail: float) -> None:
        self.inner, self.rng, self.counter = inner, rng, counter
        self.garble, self.fail = garble, fail

    async def complete(self, messages: Sequence[dict[str, str]], *, model: str,
                       temperature: float = 0.7, max_tokens: int = 512, sample_index: int = 0,
                       sim: SimTask | None = None) -> Completion:
        self.counter[0] += 1
        roll = self.rng.random()
        if roll < self.fail:
            raise ProviderError("sim", "injected failure")
        if roll < self.fail + self.garble:
            text = self.rng.choice(["", "I would rather not say.", "[[", "Ranking: [9] > [9]"])
            return Completion(text, Usage(10, 5))
        return await self.inner.complete(messages, model=model, temperature=temperature,
                                         max_tokens=max_tokens, sample_index=sample_index,
                                         sim=sim)


def random_spec(rng: random.Random) -> dict[str, Any]:
    """A spec that is usually valid; the caller keeps the ones that validate."""
    def llm(kind: str, **fields: Any) -> dict[str, Any]:
        return {"technique": kind, "provider": "sim", "model": rng.choice(list(MODELS)),
                "parse_retries": rng.randint(0, 3), "max_tokens": rng.choice([64, 512]),
                **fields}

    layers: list[list[dict[str, Any]]] = [
        [llm("generator", samples=rng.randint(1, 4)) for _ in range(rng.randint(1, 3))]]
    if rng.random() < 0.3:
        layers[0].append(llm("unit_test_generator", num_tests=rng.randint(1, 4)))
    tests = rng.random() < 0.2
    for _ in range(rng.randint(0, 4)):
        kind = rng.choice(["critic", "ranker", "fuser", "verifier", "unit_test_evaluator",
                           "majority_vote"])
        if kind == "critic":
            layers.append([llm("critic", batched=rng.random() < 0.5)])
        elif kind == "ranker":
            layers.append([llm("ranker", top_k=rng.randint(1, 4),
                               mode=rng.choice(["listwise", "pairwise"]))])
        elif kind == "fuser":
            layers.append([llm("fuser", n_outputs=rng.randint(1, 3),
                               length=rng.choice([None, "longest", 20]))])
        elif kind == "verifier":
            layers.append([llm("verifier", top_k=rng.choice([None, 1, 2]),
                               first_k=rng.choice([None, 1, 2]),
                               two_step=rng.random() < 0.5)])
        elif kind == "unit_test_evaluator":
            layers.append([llm("unit_test_evaluator", top_k=rng.choice([None, 1, 2]),
                               first_k=rng.choice([None, 1]))])
        else:
            layers.append([{"technique": "majority_vote", "top_k": rng.randint(1, 2)}])
    for layer in layers:
        for component in layer:
            if component.get("length") is None:
                component.pop("length", None)
            for key in ("top_k", "first_k"):
                if component.get(key) is None:
                    component.pop(key, None)
    spec: dict[str, Any] = {"name": "random", "final": rng.choice(["first", "single"]),
                            "layers": layers}
    if tests:
        spec["tests"] = "benchmark"
    return spec


def valid_specs(seed: int, count: int) -> list[tuple[int, Architecture]]:
    """``count`` valid specs from seeds ``seed``, ``seed + 1``, ... (invalid ones skipped), or
    the one spec of ``ITAS_BOUNDS_SEED`` when it is set (a replay)."""
    replay = os.environ.get("ITAS_BOUNDS_SEED")
    if replay is not None:
        seed, count = int(replay), 1
    out: list[tuple[int, Architecture]] = []
    spec_seed = seed
    while len(out) < count:
        try:
            out.append((spec_seed, parse_architecture(random_spec(random.Random(spec_seed)))))
        except ConfigError:
            pass
        spec_seed += 1
    return out


def agents_for(arch: Architecture, rng: random.Random, counter: list[int], *,
               garble: float, fail: float) -> list[TechniqueAgent]:
    agents: dict[str, TechniqueAgent] = {}
    for _, _, c in arch.components():
        if c.service_name in agents:
            continue
        t = technique(c.technique)
        if not t.uses_llm:
            agents[c.service_name] = TechniqueAgent(t, {})
            continue
        settings = {"skill": MODELS[c.model or "medium"], "seed": rng.randint(0, 9)}
        inner = make_provider("sim", settings)
        agents[c.service_name] = TechniqueAgent(
            t, {"provider": "sim", "model": c.model},
            provider=FaultyProvider(inner, rng, counter, garble=garble, fail=fail))
    return list(agents.values())


async def run_one(seed: int, arch: Architecture, *, budget: B.Budget) -> None:
    rng = random.Random(seed)
    counter = [0]
    garble, fail = rng.choice([(0.0, 0.0), (0.3, 0.0), (0.2, 0.1), (0.6, 0.2)])
    agents = agents_for(arch, rng, counter, garble=garble, fail=fail)
    cost = estimate_cost(arch)
    where = f"seed {seed} (replay: ITAS_BOUNDS_SEED={seed}), budget {budget}, spec {arch.to_dict()}"
    async with InProcessCaller(agents=agents) as caller:
        try:
            result = await Orchestrator(caller).run(
                arch, QUERY, sim=KEY, tests=KEY["tests"] if arch.tests else None,
                budget=budget, trace=True)
        except AgentError as exc:
            assert exc.code in ("no_candidates", "budget_exceeded"), (where, exc)
            result = None
    made = counter[0]
    assert made <= cost.calls_per_query, (made, cost.calls_per_query, where)
    if budget.calls is not None:
        assert made <= budget.calls, (made, where)
    if result is None:
        return
    assert result["calls_spent"] <= (budget.calls or cost.calls_per_query), where
    assert result["usage"]["calls"] <= made, where
    flows = list(layer_flows(arch.layers))
    for flow, layer in zip(flows, result["trace"]["layers"], strict=False):
        assert len(layer["candidates"]) <= flow.candidates_out[1], (flow, where)
    if result["stopped"] is None and arch.final == "single":
        assert len(result["candidates"]) == 1, where
    assert result["answer"] == result["candidates"][0]["text"], where


async def test_calls_never_exceed_the_plan_over_random_specs_with_faults() -> None:
    specs = valid_specs(0, SPECS)
    assert len(specs) >= (1 if "ITAS_BOUNDS_SEED" in os.environ else 500)
    for seed, arch in specs:
        await run_one(seed, arch, budget=B.Budget())


async def test_calls_never_exceed_a_budget_over_random_specs_with_faults() -> None:
    for seed, arch in valid_specs(10_000, SPECS // 2):
        calls = random.Random(seed).randint(1, max(1, estimate_cost(arch).calls_per_query))
        await run_one(seed, arch, budget=B.Budget(calls=calls))


@pytest.mark.parametrize("seed", range(40))
async def test_a_budget_decides_before_spending_whether_it_can_answer(seed: int) -> None:
    """A budget below what the architecture needs to reach a valid answer fails with no call
    made; one that reaches a valid stop answers there, marked stopped."""
    rng = random.Random(seed)
    [(spec_seed, arch)] = valid_specs(20_000 + seed * 1000, 1)
    cost = estimate_cost(arch)
    calls = rng.randint(0, max(0, cost.base_calls_per_query - 1)) or 1
    counter = [0]
    agents = agents_for(arch, rng, counter, garble=0.0, fail=0.0)
    async with InProcessCaller(agents=agents) as caller:
        try:
            result = await Orchestrator(caller).run(
                arch, QUERY, sim=KEY, tests=KEY["tests"] if arch.tests else None,
                budget=B.Budget(calls=calls))
        except AgentError as exc:
            assert exc.code in ("budget_exceeded", "no_candidates"), exc
            if exc.code == "budget_exceeded" and "before any call" in exc.message:
                assert counter[0] == 0, (spec_seed, exc.message)
            return
    assert counter[0] <= calls
    if result["stopped"] is not None:
        assert result["candidates"], spec_seed


def test_split_spreads_re_asks_evenly_within_caps() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        caps = [rng.randint(0, 6) for _ in range(rng.randint(0, 12))]
        extra = rng.randint(0, 40)
        out = B.split(extra, caps)
        assert all(0 <= o <= c for o, c in zip(out, caps, strict=True))
        assert sum(out) == min(extra, sum(caps))
        unsaturated = [o for o, c in zip(out, caps, strict=True) if o < c]
        if unsaturated:
            assert max(out) - min(unsaturated) <= 1 or max(unsaturated) - min(unsaturated) <= 1


def test_the_harness_itself_counts_calls() -> None:
    async def main() -> int:
        arch = parse_architecture({"name": "g", "layers": [[
            {"technique": "generator", "provider": "sim", "model": "strong", "samples": 3}]],
            "final": "first"})
        counter = [0]
        agents = agents_for(arch, random.Random(0), counter, garble=0.0, fail=0.0)
        async with InProcessCaller(agents=agents) as caller:
            await Orchestrator(caller).run(arch, QUERY, sim=KEY)
        return counter[0]

    assert anyio.run(main) == 3
