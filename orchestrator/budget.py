"""A query's budget, and the rules that make it a cap (pure; the runner applies them).

Calls. Every request a layer sends carries ``max_calls``: its calls before any re-ask plus a
share of the re-asks the budget can pay for, and the agent never makes more (see
``itas.techniques.base.Job``). Before each layer the orchestrator forecasts, from the
candidates in hand, the calls every remaining layer needs when each output parses, in the
worst case (``plan_layer`` at the most candidates that can reach it):

1. If the whole forecast fits what remains, the layer runs, and the remainder beyond the
   forecast pays for re-asks, shared between the remaining layers in proportion to their
   calls (this layer's share split over its requests).
2. If it does not fit, the query will stop after the last layer the budget surely reaches.
   That is allowed only where the architecture can answer there: with ``final: first``
   when at least one candidate is left, with ``final: single`` when exactly one is. If it
   can, the layers up to there run (no re-asks) and the answer is the first candidate then,
   marked ``stopped`` with the layer and the reason; if it cannot, the query fails with
   ``budget_exceeded`` at once, before the layer spends anything. So the first layer's check
   decides before any spending whether a query can answer within its budget.

A request that fails counts its whole ``max_calls`` as spent (its calls are not known); a
reply counts the calls it reports. So the calls a query makes never exceed its budget.

Tokens. Completions are bounded by ``max_tokens`` and prompts by their parts
(``itas.plan.component_tokens``), measured from the real conversation and candidates. Before
each layer its bound (re-asks included where the token budget allows them) must fit what
remains of the token budget; when it does not, the same stop-or-fail rule applies. A query's
token use therefore stays within its budget as far as the bound holds (see ``itas.plan`` for
what it assumes about text the orchestrator has not seen yet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from itas.errors import AgentError
from itas.plan import Layer, plan_layer
from itas.protocol import ErrorCode

#: Calls a query may make when it names no budget (a query may ask for more, up to the spec
#: limit ``itas.spec.MAX_CALLS_PER_QUERY``).
DEFAULT_QUERY_CALLS = 5_000


@dataclass(frozen=True, slots=True)
class Budget:
    """Per-query limits; None means no limit beyond the defaults."""

    calls: int | None = None
    tokens: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Budget:
        """From a request's ``budget`` field; AgentError names a bad value."""
        data = data or {}
        if not isinstance(data, Mapping):
            raise AgentError(ErrorCode.BAD_REQUEST, "query.budget: expected a map")
        unknown = sorted(str(k) for k in data if k not in ("calls", "tokens"))
        if unknown:
            raise AgentError(ErrorCode.BAD_REQUEST, f"query.budget: unknown field(s) {unknown}; "
                                                    "known: calls, tokens")
        for key in ("calls", "tokens"):
            value = data.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise AgentError(ErrorCode.BAD_REQUEST,
                                 f"query.budget.{key}: expected a positive integer, got {value!r}")
        return cls(data.get("calls"), data.get("tokens"))

    def with_defaults(self) -> Budget:
        return Budget(self.calls if self.calls is not None else DEFAULT_QUERY_CALLS, self.tokens)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in (("calls", self.calls), ("tokens", self.tokens)) if v is not None}


def forecast(layers: Sequence[Layer], n: int) -> list[int]:
    """Calls each of ``layers`` makes when every output parses, in the worst case, given ``n``
    candidates before the first of them."""
    calls = []
    lo = hi = n
    for layer in layers:
        most = plan_layer(layer, hi)
        calls.append(most.calls)
        lo, hi = plan_layer(layer, lo).candidates_out[0], most.candidates_out[1]
    return calls


def reachable_layers(forecast_calls: Sequence[int], remaining: int) -> int:
    """How many of the forecast layers the remaining calls surely pay for."""
    total = 0
    for count, calls in enumerate(forecast_calls):
        total += calls
        if total > remaining:
            return count
    return len(forecast_calls)


def can_answer(final: str, layers_left: Sequence[Layer], n_now: int, run: int) -> bool:
    """Whether stopping after ``run`` more of ``layers_left`` (from ``n_now`` candidates) is
    sure to leave a valid answer."""
    lo = hi = n_now
    for layer in layers_left[:run]:
        lo, hi = plan_layer(layer, lo).candidates_out[0], plan_layer(layer, hi).candidates_out[1]
    if final == "single":
        return lo == hi == 1
    return lo >= 1


def share_reasks(spare: int, forecast_calls: Sequence[int]) -> int:
    """This layer's share of the spare calls: in proportion to its calls among the layers
    left (``forecast_calls[0]`` is this layer's)."""
    total = sum(forecast_calls)
    if spare <= 0 or total == 0:
        return 0
    return spare * forecast_calls[0] // total


def split(extra: int, caps: Sequence[int]) -> list[int]:
    """``extra`` re-ask calls over requests that can use at most ``caps[i]`` each, as evenly
    as possible (water filling); the result sums to min(extra, sum(caps))."""
    out = [0] * len(caps)
    order = sorted(range(len(caps)), key=lambda i: caps[i])
    left = extra
    for position, i in enumerate(order):
        fair = left // (len(caps) - position)
        out[i] = min(caps[i], fair)
        left -= out[i]
    for i in order:  # the remainder of the division, one each
        if left <= 0:
            break
        if out[i] < caps[i]:
            out[i] += 1
            left -= 1
    return out
