"""Call plans and static cost estimates for architectures.

The orchestrator budgets a layer with ``plan_layer`` once it knows how many candidates
arrived; before anything runs, ``layer_flows`` bounds the candidates and calls of every layer
and ``estimate_cost`` bounds calls and tokens per query. The per-technique arithmetic lives on
the component specs (``itas.spec``); this module only composes it, so it imports no spec
class and the spec module can use it for validation.

Calls per component, for n incoming candidates: generator ``samples``; critic, verifier and
unit_test_evaluator one per candidate; ranker listwise 1, pairwise one per unordered pair,
n*(n-1)/2; fuser ``n_outputs``; unit_test_generator 1; majority_vote and code_tester no LLM
call (code_tester runs each candidate once against the tests).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from itas.spec import Architecture

# Tokens of one prompt besides the material it reads (system text, instructions, the
# conversation), and of a benchmark's test set: upper-bound guesses, overridable per estimate.
PROMPT_OVERHEAD_TOKENS = 512
BENCHMARK_TEST_TOKENS = 512


@dataclass(frozen=True, slots=True)
class Material:
    """Token bounds of what a prompt can carry: overhead, one candidate, its critiques, tests."""

    overhead: int
    candidate: int
    critiques: int
    tests: int

    @property
    def annotated(self) -> int:
        """One candidate shown with its critiques."""
        return self.candidate + self.critiques


class Plannable(Protocol):
    """What planning needs from a component spec (every ``itas.spec`` component has it)."""

    @property
    def produces(self) -> bool: ...
    @property
    def keeps_candidates(self) -> bool: ...
    @property
    def service_name(self) -> str: ...
    def calls(self, n: int) -> int: ...
    def executions(self, n: int) -> int: ...
    def out_range(self, n: int) -> tuple[int, int]: ...
    def prompt_tokens(self, n: int, m: Material) -> int: ...
    def completion_tokens(self, n: int) -> int: ...
    def written_tokens(self, incoming: int) -> int: ...
    def critique_tokens(self) -> int: ...
    def test_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ComponentPlan:
    service: str
    calls: int
    executions: int


@dataclass(frozen=True, slots=True)
class LayerPlan:
    """What one layer costs for a known number of incoming candidates, and what it leaves."""

    components: tuple[ComponentPlan, ...]
    candidates_out: tuple[int, int]  # least, most

    @property
    def calls(self) -> int:
        return sum(c.calls for c in self.components)

    @property
    def executions(self) -> int:
        return sum(c.executions for c in self.components)


def plan_layer(layer: Sequence[Plannable], n_in: int) -> LayerPlan:
    """The calls of one layer given ``n_in`` incoming candidates, component by component.

    Producers' outputs are concatenated; a layer without producers passes its candidates on.
    Every count grows with ``n_in``, so planning the least and the most incoming candidates
    bounds a layer whose input is only known as a range.
    """
    plans = tuple(ComponentPlan(c.service_name, c.calls(n_in), c.executions(n_in)) for c in layer)
    ranges = [c.out_range(n_in) for c in layer if c.produces]
    out = (sum(r[0] for r in ranges), sum(r[1] for r in ranges)) if ranges else (n_in, n_in)
    return LayerPlan(plans, out)


@dataclass(frozen=True, slots=True)
class LayerFlow:
    layer: int  # 1-based
    candidates_in: tuple[int, int]  # least, most
    candidates_out: tuple[int, int]
    calls: tuple[int, int]
    executions: int  # at most


def layer_flows(layers: Sequence[Sequence[Plannable]]) -> Iterator[LayerFlow]:
    """Least/most candidates into and out of each layer, and its calls; no validation."""
    lo = hi = 0
    for index, layer in enumerate(layers, 1):
        least, most = plan_layer(layer, lo), plan_layer(layer, hi)
        out = (least.candidates_out[0], most.candidates_out[1])
        yield LayerFlow(index, (lo, hi), out, (least.calls, most.calls), most.executions)
        lo, hi = out


@dataclass(frozen=True, slots=True)
class LayerCost:
    layer: int
    calls: int  # at most
    min_calls: int
    executions: int  # at most
    prompt_tokens: int  # at most
    completion_tokens: int  # at most
    candidates: tuple[int, int]  # least, most after the layer


@dataclass(frozen=True, slots=True)
class CostEstimate:
    calls_per_query: int  # at most
    min_calls_per_query: int
    executions_per_query: int  # at most
    max_tokens_per_query: int  # prompt + completion, at most
    per_layer: tuple[LayerCost, ...]


def estimate_cost(
    arch: Architecture,
    *,
    prompt_overhead_tokens: int = PROMPT_OVERHEAD_TOKENS,
    benchmark_test_tokens: int = BENCHMARK_TEST_TOKENS,
) -> CostEstimate:
    """Upper bounds on calls and tokens per query for any valid spec, before anything runs.

    Completion: every call writes its ``max_tokens``. Prompt growth: a prompt holds
    ``prompt_overhead_tokens`` plus the material it reads, each piece bounded by what wrote it:
    a candidate by the max_tokens of the generator or fuser that wrote it, its critiques by the
    critics' max_tokens (critiques ride on candidates that rankers and verifiers keep, and
    vanish when a layer writes fresh ones), the test set by the unit_test_generators'
    max_tokens plus ``benchmark_test_tokens`` under ``tests: benchmark``. Generators and
    unit_test_generators read the conversation only; critics, verifiers and unit-test
    evaluators one candidate a call; listwise rankers and fusers all incoming candidates;
    pairwise rankers two.
    """
    candidate = critiques = 0
    tests = benchmark_test_tokens if arch.tests == "benchmark" else 0
    per_layer = []
    for flow, layer in zip(layer_flows(arch.layers), arch.layers, strict=True):
        n = flow.candidates_in[1]
        material = Material(prompt_overhead_tokens, candidate, critiques, tests)
        per_layer.append(LayerCost(
            flow.layer, flow.calls[1], flow.calls[0], flow.executions,
            sum(c.prompt_tokens(n, material) for c in layer),
            sum(c.completion_tokens(n) for c in layer),
            flow.candidates_out,
        ))  # fmt: skip
        producers = [c for c in layer if c.produces]
        if producers:
            candidate = max(c.written_tokens(candidate) for c in producers)
            if not any(c.keeps_candidates for c in producers):
                critiques = 0
        critiques += sum(c.critique_tokens() for c in layer)
        tests += sum(c.test_tokens() for c in layer)
    return CostEstimate(
        calls_per_query=sum(c.calls for c in per_layer),
        min_calls_per_query=sum(c.min_calls for c in per_layer),
        executions_per_query=sum(c.executions for c in per_layer),
        max_tokens_per_query=sum(c.prompt_tokens + c.completion_tokens for c in per_layer),
        per_layer=tuple(per_layer),
    )


def describe(arch: Architecture, cost: CostEstimate | None = None) -> str:
    """A plain-text summary for ``itas check``: per layer its services, candidates, calls and
    token bound, then the totals per query."""
    cost = cost or estimate_cost(arch)
    lines = [f"{arch.name}: {len(arch.layers)} layer(s), final answer: {arch.final}"]
    for layer, row in zip(arch.layers, cost.per_layer, strict=True):
        lo, hi = row.candidates
        lines.append(
            f"  layer {row.layer}: {', '.join(c.service_name for c in layer)}; "
            f"candidates after {lo}..{hi}; calls {row.min_calls}..{row.calls}; "
            f"tokens <= {row.prompt_tokens + row.completion_tokens}"
        )
    lines.append(
        f"  per query: calls {cost.min_calls_per_query}..{cost.calls_per_query}, "
        f"code runs <= {cost.executions_per_query}, tokens <= {cost.max_tokens_per_query}"
    )
    return "\n".join(lines)
