"""Call plans and cost bounds of architectures, composed from the technique modules.

Nothing about a technique is decided here: how many requests and calls a component makes for
n candidates, how many candidates it leaves and what its prompts carry are its module's
(``itas.techniques``). This module adds them up:

- ``plan_layer``: one layer's calls for a known number of incoming candidates (the
  orchestrator plans each layer with it once it knows how many arrived);
- ``layer_flows``: least and most candidates into and out of every layer, before anything
  runs (the spec's flow checks use it);
- ``estimate_cost``: upper bounds on calls and tokens per query. ``calls`` counts every call
  a query can make, parse re-asks included (``request_calls * (1 + parse_retries)`` per
  request); ``base_calls`` is what it makes when every output parses. The orchestrator never
  goes beyond ``calls``, and with a budget never beyond the budget (see
  ``itas.orchestrator.budget``).

Token bounds: completions are bounded exactly by each call's ``max_tokens``. Prompts are
bounded from their parts: the technique's own instructions (``INSTRUCTION_TOKENS``), the
conversation (an assumed ``conversation_tokens``, 512 by default; the orchestrator measures
the real one), each candidate by its writer's ``max_tokens``, critiques by the critics'
``max_tokens``, unit tests by the test writers' (plus ``benchmark_test_tokens`` under ``tests:
benchmark``). Text the bound cannot see the writer of is counted at
``CHARS_PER_TOKEN_BOUND`` characters per token, so the bound holds for ordinary text; a
re-ask's prompt adds the output it complains about and ``REASK_TOKENS``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from itas.techniques import technique_of
from itas.techniques.base import ComponentParams, Material

if TYPE_CHECKING:
    from itas.spec import Architecture

CONVERSATION_TOKENS = 512
BENCHMARK_TEST_TOKENS = 512
#: A re-ask message: the problem and the technique's format hint.
REASK_TOKENS = 200

Layer = Sequence[ComponentParams]


@dataclass(frozen=True, slots=True)
class ComponentPlan:
    service: str
    requests: int
    min_calls: int  # fewest, for techniques that stop early
    calls: int  # every output parsing at once
    max_calls: int  # every re-ask included
    executions: int


@dataclass(frozen=True, slots=True)
class LayerPlan:
    """What one layer costs for a known number of incoming candidates, and what it leaves."""

    components: tuple[ComponentPlan, ...]
    candidates_out: tuple[int, int]  # least, most

    @property
    def min_calls(self) -> int:
        return sum(c.min_calls for c in self.components)

    @property
    def calls(self) -> int:
        return sum(c.calls for c in self.components)

    @property
    def max_calls(self) -> int:
        return sum(c.max_calls for c in self.components)

    @property
    def executions(self) -> int:
        return sum(c.executions for c in self.components)


def plan_layer(layer: Layer, n_in: int) -> LayerPlan:
    """The calls of one layer given ``n_in`` incoming candidates, component by component.

    Writers' outputs are concatenated; a layer without writers passes its candidates on.
    Every count grows with ``n_in``, so planning the least and the most incoming candidates
    bounds a layer whose input is only known as a range.
    """
    plans = []
    ranges = []
    for c in layer:
        t = technique_of(c)
        plans.append(ComponentPlan(c.service_name, len(t.shards(c, n_in)), t.min_calls(c, n_in),
                                   t.calls(c, n_in), t.max_calls(c, n_in),
                                   t.executions(c, n_in)))
        if t.produces:
            ranges.append(t.out_range(c, n_in))
    out = (sum(r[0] for r in ranges), sum(r[1] for r in ranges)) if ranges else (n_in, n_in)
    return LayerPlan(tuple(plans), out)


@dataclass(frozen=True, slots=True)
class LayerFlow:
    layer: int  # 1-based
    candidates_in: tuple[int, int]  # least, most
    candidates_out: tuple[int, int]
    calls: tuple[int, int]  # least (fewest candidates, early stops), most (no re-ask)
    max_calls: int  # most candidates, every re-ask
    executions: int  # at most


def layer_flows(layers: Sequence[Layer]) -> Iterator[LayerFlow]:
    """Least/most candidates into and out of each layer, and its calls; no validation."""
    lo = hi = 0
    for index, layer in enumerate(layers, 1):
        least, most = plan_layer(layer, lo), plan_layer(layer, hi)
        out = (least.candidates_out[0], most.candidates_out[1])
        yield LayerFlow(index, (lo, hi), out, (least.min_calls, most.calls), most.max_calls,
                        most.executions)
        lo, hi = out


@dataclass(frozen=True, slots=True)
class TokenBound:
    """Token bounds of one component: its calls when every output parses, and in all."""

    prompt: int  # every output parsing at once
    completion: int
    total: int  # prompt + completion, with the re-asks asked for

    def __add__(self, other: TokenBound) -> TokenBound:
        return TokenBound(self.prompt + other.prompt, self.completion + other.completion,
                          self.total + other.total)


NO_TOKENS = TokenBound(0, 0, 0)


def token_bound(c: ComponentParams, n: int, m: Material, *, reasks: int | None = None
                ) -> TokenBound:
    """Token bound of one component for ``n`` candidates whose material is bounded by ``m``,
    with ``reasks`` re-asks in all (default: every re-ask its parameters allow). A re-ask's
    prompt is the original one plus the output it complains about and ``REASK_TOKENS``."""
    t = technique_of(c)
    calls = t.calls(c, n)
    if not calls:
        return NO_TOKENS
    out = t.max_tokens_per_call(c)
    prompts = t.prompt_tokens(c, n, m)
    per_call = -(-prompts // calls)
    extra = calls * t.reasks(c) if reasks is None else reasks
    return TokenBound(prompts, calls * out,
                      prompts + calls * out + extra * (per_call + out + REASK_TOKENS + out))


def component_tokens(c: ComponentParams, n: int, m: Material, *, reasks: int | None = None
                     ) -> int:
    """``token_bound(...).total``: prompt and completion tokens, re-asks included."""
    return token_bound(c, n, m, reasks=reasks).total


@dataclass(frozen=True, slots=True)
class LayerCost:
    layer: int
    calls: int  # at most, every re-ask included
    base_calls: int  # at most, when every output parses
    min_calls: int
    executions: int  # at most
    tokens: int  # at most, every re-ask included
    prompt_tokens: int  # at most, when every output parses
    completion_tokens: int  # at most, when every output parses
    candidates: tuple[int, int]  # least, most after the layer


@dataclass(frozen=True, slots=True)
class CostEstimate:
    calls_per_query: int  # at most, every re-ask included
    base_calls_per_query: int  # at most, when every output parses
    min_calls_per_query: int
    executions_per_query: int  # at most
    max_tokens_per_query: int  # prompt + completion, at most
    conversation_tokens: int  # the conversation size the token bound assumes
    per_layer: tuple[LayerCost, ...]


@dataclass
class MaterialTracker:
    """Token bounds of what flows between layers: candidates, critiques, tests."""

    candidate: int = 0
    critiques: int = 0
    tests: int = 0

    def material(self, conversation: int) -> Material:
        return Material(conversation, self.candidate, self.critiques, self.tests)

    def after(self, layer: Layer) -> None:
        writers = [c for c in layer if technique_of(c).produces]
        if writers:
            self.candidate = max(technique_of(c).written_tokens(c, self.candidate)
                                 for c in writers)
            if not any(technique_of(c).keeps_candidates for c in writers):
                self.critiques = 0
        self.critiques += sum(technique_of(c).critique_tokens(c) for c in layer)
        self.tests += sum(technique_of(c).test_tokens(c) for c in layer)


def estimate_cost(
    arch: Architecture,
    *,
    conversation_tokens: int = CONVERSATION_TOKENS,
    benchmark_test_tokens: int = BENCHMARK_TEST_TOKENS,
) -> CostEstimate:
    """Upper bounds on calls and tokens per query for any valid spec, before anything runs
    (see the module docstring for what the token bound assumes)."""
    tracker = MaterialTracker(tests=benchmark_test_tokens if arch.tests == "benchmark" else 0)
    per_layer = []
    for flow, layer in zip(layer_flows(arch.layers), arch.layers, strict=True):
        n = flow.candidates_in[1]
        material = tracker.material(conversation_tokens)
        tokens = sum((token_bound(c, n, material) for c in layer), NO_TOKENS)
        per_layer.append(LayerCost(
            flow.layer, flow.max_calls, flow.calls[1], flow.calls[0], flow.executions,
            tokens.total, tokens.prompt, tokens.completion, flow.candidates_out,
        ))  # fmt: skip
        tracker.after(layer)
    return CostEstimate(
        calls_per_query=sum(c.calls for c in per_layer),
        base_calls_per_query=sum(c.base_calls for c in per_layer),
        min_calls_per_query=sum(c.min_calls for c in per_layer),
        executions_per_query=sum(c.executions for c in per_layer),
        max_tokens_per_query=sum(c.tokens for c in per_layer),
        conversation_tokens=conversation_tokens,
        per_layer=tuple(per_layer),
    )


def describe(arch: Architecture, cost: CostEstimate | None = None) -> str:
    """A plain-text summary for ``itas check``: per layer its services, candidates, calls and
    token bound, the totals per query, then the spec's warnings."""
    cost = cost or estimate_cost(arch)
    lines = [f"{arch.name}: {len(arch.layers)} layer(s), final answer: {arch.final}"]
    for layer, row in zip(arch.layers, cost.per_layer, strict=True):
        lo, hi = row.candidates
        lines.append(
            f"  layer {row.layer}: {', '.join(c.service_name for c in layer)}; "
            f"candidates after {lo}..{hi}; calls {row.min_calls}..{row.calls} "
            f"({row.base_calls} if every output parses); tokens <= {row.tokens}"
        )
    lines.append(
        f"  per query: calls {cost.min_calls_per_query}..{cost.calls_per_query} "
        f"({cost.base_calls_per_query} if every output parses, more only for parse re-asks), "
        f"code runs <= {cost.executions_per_query}, tokens <= {cost.max_tokens_per_query} "
        f"(for a conversation of up to {cost.conversation_tokens} tokens)"
    )
    lines += [f"  warning: {w}" for w in arch.warnings]
    return "\n".join(lines)


def summary_dict(arch: Architecture, cost: CostEstimate | None = None) -> dict[str, Any]:
    """``describe`` as data (``itas check --json``)."""
    cost = cost or estimate_cost(arch)
    return {
        "name": arch.name, "final": arch.final,
        "calls": {"min": cost.min_calls_per_query, "max": cost.calls_per_query,
                  "if_every_output_parses": cost.base_calls_per_query},
        "code_runs_max": cost.executions_per_query,
        "tokens_max": cost.max_tokens_per_query,
        "conversation_tokens_assumed": cost.conversation_tokens,
        "layers": [{"layer": r.layer, "calls_max": r.calls, "calls_min": r.min_calls,
                    "base_calls": r.base_calls, "tokens_max": r.tokens,
                    "candidates_after": list(r.candidates)} for r in cost.per_layer],
        "warnings": list(arch.warnings),
    }
