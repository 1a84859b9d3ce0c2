"""Per technique, driven from its one module: the spec, the plan, the orchestrator and the agent
agree on how many requests it sends, how many calls it makes and how many candidates it
leaves, for random parameters and candidate counts.

The agents are the real technique agents, in process, on simulated models; every provider call
is counted where it is made (``tests.test_bounds``).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from itas.orchestrator import budget as B
from itas.orchestrator.inprocess import InProcessCaller
from itas.orchestrator.runner import Orchestrator
from itas.plan import plan_layer
from itas.spec import parse_architecture
from itas.techniques import SPEC_TECHNIQUES
from itas.techniques.base import Shard, Technique
from itas.techniques.contract import Candidate, TechniqueReply
from tests.test_bounds import KEY, QUERY, agents_for

pytestmark = pytest.mark.anyio

TRIALS = 12


def params_for(name: str, rng: random.Random, n: int) -> dict[str, Any]:
    """Random valid fields of one technique for ``n`` incoming candidates."""
    llm = {"provider": "sim", "model": rng.choice(["strong", "weak"]),
           "parse_retries": rng.randint(0, 2)}
    k = rng.randint(1, max(1, n))
    choices: dict[str, dict[str, Any]] = {
        "generator": {**llm, "samples": rng.randint(1, 4)},
        "critic": {**llm, "batched": rng.random() < 0.5},
        "ranker": {**llm, "top_k": k, "mode": rng.choice(["listwise", "pairwise"])},
        "fuser": {**llm, "n_outputs": rng.randint(1, 3)},
        "verifier": {**llm, "two_step": rng.random() < 0.5,
                     **rng.choice([{}, {"top_k": k}, {"first_k": k}])},
        "unit_test_generator": {**llm, "num_tests": rng.randint(1, 3)},
        "unit_test_evaluator": {**llm, **rng.choice([{}, {"top_k": k}, {"first_k": k}])},
        "majority_vote": {"top_k": rng.randint(1, 2)},
        "code_tester": {"top_k": k, "timeout_s": 5.0},
    }
    return {"technique": name, **choices[name]}


def upstream(n: int) -> list[dict[str, Any]]:
    layers: list[dict[str, Any]] = [{"technique": "unit_test_generator", "provider": "sim",
                                     "model": "strong"}]
    if n:
        layers.insert(0, {"technique": "generator", "provider": "sim", "model": "medium",
                          "samples": n})
    return layers


@pytest.mark.parametrize("name", list(SPEC_TECHNIQUES))
async def test_spec_plan_orchestrator_and_agent_agree(name: str) -> None:
    t: Technique[Any] = SPEC_TECHNIQUES[name]
    rng = random.Random(name)
    trials = 3 if t.runs_code else TRIALS
    for trial in range(trials):
        n = rng.randint(1, 5)
        fields = params_for(name, rng, n)
        spec = {"name": f"{name}-{trial}", "final": "first",
                "layers": [upstream(n), [fields]]}
        if name == "code_tester":
            spec["tests"] = "benchmark"
            spec["layers"] = [upstream(n)[:1]] + [[fields]]
        arch = parse_architecture(spec)
        component = arch.layers[-1][0]
        plan = plan_layer(arch.layers[-1], n).components[0]
        # the spec's component and the module agree on the plan
        assert plan.calls == t.calls(component, n) == sum(
            t.request_calls(component, len(s.candidates)) for s in t.shards(component, n))
        assert plan.max_calls == t.max_calls(component, n)
        assert plan.min_calls <= plan.calls <= plan.max_calls
        counter = [0]
        agents = agents_for(arch, rng, counter, garble=0.0, fail=0.0)
        async with InProcessCaller(agents=agents) as caller:
            result = await Orchestrator(caller).run(
                arch, QUERY, sim=KEY, tests=["assert True"] if arch.tests else None,
                budget=B.Budget(), trace=True)
        layer = result["trace"]["layers"][-1]
        [traced] = layer["components"]
        # the orchestrator sent exactly the module's shards; the agent stayed within bounds
        assert traced["requests"] == plan.requests == len(t.shards(component, n))
        assert plan.min_calls <= traced["usage"]["calls"] <= plan.calls  # nothing garbled
        assert traced["calls_allowed"] == plan.max_calls
        lo, hi = t.out_range(component, n) if t.produces else (n, n)
        assert lo <= len(layer["candidates"]) <= hi, (fields, n, layer["candidates"])
        assert not traced["failed"], traced["failed"]


@pytest.mark.parametrize("name", list(SPEC_TECHNIQUES))
def test_merge_never_leaves_more_than_the_plan_whatever_the_replies(name: str) -> None:
    """Hostile mixes of failed and partial replies: the merge stays within out_range's most."""
    t: Technique[Any] = SPEC_TECHNIQUES[name]
    rng = random.Random(f"merge-{name}")
    for _ in range(200):
        n = rng.randint(0 if not t.needs_candidates else 1, 6)
        fields = params_for(name, rng, n)
        component = t.params_model.model_validate(fields)
        incoming = [Candidate(f"c{i}", f"text {i % 2}") for i in range(n)]
        results: list[tuple[Shard, TechniqueReply | None]] = []
        for k, shard in enumerate(t.shards(component, n)):
            if rng.random() < 0.3:
                results.append((shard, None))
                continue
            judged = [Candidate(incoming[i].id, "", rank=None, verdict=rng.random() < 0.5,
                                tests_passed=rng.randint(0, 2), tests_total=2,
                                answer=rng.choice(["1", "2"]))
                      for i in shard.candidates]
            if t.name == "ranker":
                for position, c in enumerate(judged, 1):
                    c.rank = position
            written = [Candidate(f"new{k}", "fresh")] if t.reply_shape == "writes_one" else []
            results.append((shard, TechniqueReply(written or judged,
                                                  ["t1"] if t.makes_tests else None)))
        merged = t.merge(component, incoming, results)
        most = t.out_range(component, n)[1] if t.produces else n
        assert len(merged.candidates) <= most, (fields, n, merged)
        assert all(c.id in {x.id for x in incoming} | {f"new{k}" for k in range(10)}
                   for c in merged.candidates)
