"""Runs an architecture for one query through the broker, layer by layer.

Within a layer every call of every component is in flight at once (one anyio
task each); layers run in order because each reads the candidates the one
before left. A failed call is recorded in the trace and the layer goes on with
the replies it has; a layer left with no candidates ends the query with an
error naming it. The budget (calls, tokens) is checked before each layer with
the static call plan, so a query never starts a layer it cannot afford.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from itas.client import Reply
from itas.errors import AgentError, ClientError
from itas.orchestrator.fanout import Context, combine, merge_layer, requests_for
from itas.plan import layer_flows, plan_layer
from itas.protocol import ErrorCode
from itas.query import ORCHESTRATOR_SERVICE, query_body
from itas.spec import Architecture
from itas.techniques.contract import UsageTotals

DEFAULT_CALL_TIMEOUT_S = 300.0
TRACE_TEXT_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Budget:
    """Per-query limits; None means unlimited."""

    calls: int | None = None
    tokens: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Budget:
        """From a request's ``budget`` field; AgentError names a bad value."""
        data = data or {}
        if not isinstance(data, Mapping):
            raise AgentError(ErrorCode.BAD_REQUEST, "query.budget: expected a map")
        for key in ("calls", "tokens"):
            value = data.get(key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise AgentError(ErrorCode.BAD_REQUEST,
                                 f"query.budget.{key}: expected a positive integer, got {value!r}")
        return cls(data.get("calls"), data.get("tokens"))

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in (("calls", self.calls), ("tokens", self.tokens)) if v is not None}


@dataclass
class _CallResult:
    reply: Any = None
    error: str | None = None
    attempts: int = 0
    latency_s: float = 0.0


@dataclass
class _ComponentTrace:
    service: str
    technique: str
    calls: list[_CallResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        usage = UsageTotals()
        for call in self.calls:
            usage.merge((call.reply or {}).get("usage"))
        return {
            "service": self.service,
            "technique": self.technique,
            "requests": len(self.calls),
            "failed": [c.error for c in self.calls if c.error],
            "retried": sum(1 for c in self.calls if c.attempts > 1),
            "latency_s": max((c.latency_s for c in self.calls), default=0.0),
            "usage": usage.to_dict(),
            "parse": [p for c in self.calls for p in (c.reply or {}).get("parse", [])],
            "problems": self.problems,
        }


class Caller(Protocol):
    """Where calls go: an open ``AsyncClient`` (through the broker), or ``InProcessCaller``."""

    async def call(self, service: str, body: Any, *, timeout: float | None = None) -> Reply: ...


class QueryRunner(Protocol):
    """Answers queries: ``Orchestrator`` here, or ``ViaBroker`` through the service."""

    async def run(self, arch: Architecture, messages: Sequence[Mapping[str, str]], *,
                  sim: Mapping[str, Any] | None = None, tests: Sequence[str] | None = None,
                  budget: Budget = ..., trace: bool = False) -> dict[str, Any]: ...


class ViaBroker:
    """Sends whole queries to the ``orchestrator`` service, which scales out on its own."""

    def __init__(self, client: Caller, *, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        self.client = client
        self.timeout = timeout

    async def run(self, arch: Architecture, messages: Sequence[Mapping[str, str]], *,
                  sim: Mapping[str, Any] | None = None, tests: Sequence[str] | None = None,
                  budget: Budget = Budget(), trace: bool = False) -> dict[str, Any]:
        body = query_body(messages, arch, trace=trace, budget=budget.as_dict() or None,
                          sim=sim, tests=tests)
        reply: dict[str, Any] = (await self.client.call(ORCHESTRATOR_SERVICE, body,
                                                        timeout=self.timeout)).body
        return reply


class Orchestrator:
    """Runs architectures through a ``Caller``; one instance serves many queries."""

    def __init__(self, client: Caller, *, call_timeout: float = DEFAULT_CALL_TIMEOUT_S
                 ) -> None:
        self.client = client
        self.call_timeout = call_timeout

    async def run(
        self,
        arch: Architecture,
        messages: Sequence[Mapping[str, str]],
        *,
        sim: Mapping[str, Any] | None = None,
        tests: Sequence[str] | None = None,
        budget: Budget = Budget(),
        trace: bool = False,
    ) -> dict[str, Any]:
        """Answer one query. Raises AgentError (``no_candidates``, ``budget_exceeded``)."""
        if arch.tests == "benchmark" and not tests:
            raise AgentError(ErrorCode.BAD_REQUEST,
                             f"{arch.name} says 'tests: benchmark', but the query carries no "
                             "tests; send the benchmark's unit tests with the query")
        started = anyio.current_time()
        ctx = Context([dict(m) for m in messages], dict(sim) if sim else None,
                      list(tests) if tests else None)
        candidates: list[dict[str, Any]] = []
        usage = UsageTotals()
        layers_trace = []
        flows = list(layer_flows(arch.layers))  # a layer that only writes tests leaves none
        for index, layer in enumerate(arch.layers, 1):
            self._check_budget(arch, index, layer, len(candidates), usage, budget)
            layer_started = anyio.current_time()
            candidates, tests_written, components = await self._run_layer(
                index, layer, candidates, ctx)
            if tests_written:
                ctx = Context(ctx.messages, ctx.sim, tests_written)
            for component in components:
                for call in component.calls:
                    usage.merge((call.reply or {}).get("usage"))
            if trace:  # summaries only when asked for: they are not free on many candidates
                layers_trace.append({
                    "layer": index,
                    "latency_s": anyio.current_time() - layer_started,
                    "components": [c.as_dict() for c in components],
                    "candidates": [_trace_candidate(c) for c in candidates],
                    "tests": tests_written,
                })
            if not candidates and flows[index - 1].candidates_out[1] > 0:
                failures = "; ".join(
                    e for c in components for e in [x.error for x in c.calls if x.error][:3])
                raise AgentError(ErrorCode.NO_CANDIDATES,
                                 f"layer {index} ({', '.join(c.service for c in components)}) "
                                 f"left no candidates" + (f": {failures}" if failures else ""))
        result: dict[str, Any] = {
            "answer": candidates[0]["text"],
            "candidates": candidates,
            "usage": usage.to_dict(),
            "latency_s": anyio.current_time() - started,
            "architecture": arch.name,
        }
        if trace:
            result["trace"] = {"layers": layers_trace}
        return result

    def _check_budget(self, arch: Architecture, index: int, layer: Sequence[Any], n_in: int,
                      usage: UsageTotals, budget: Budget) -> None:
        planned = plan_layer(layer, n_in).calls
        if budget.calls is not None and usage.calls + planned > budget.calls:
            raise AgentError(ErrorCode.BUDGET,
                             f"{arch.name}: layer {index} needs {planned} calls but only "
                             f"{budget.calls - usage.calls} of the budget's {budget.calls} remain")
        if budget.tokens is not None and usage.tokens >= budget.tokens:
            raise AgentError(ErrorCode.BUDGET,
                             f"{arch.name}: {usage.tokens} tokens spent before layer {index}; "
                             f"the budget is {budget.tokens}")

    async def _run_layer(self, index: int, layer: Sequence[Any], incoming: list[dict[str, Any]],
                         ctx: Context
                         ) -> tuple[list[dict[str, Any]], list[str] | None, list[_ComponentTrace]]:
        traces = [_ComponentTrace(c.service_name, c.technique) for c in layer]
        bodies = [requests_for(c, incoming, ctx) for c in layer]
        async with anyio.create_task_group() as tg:
            for component_trace, component_bodies in zip(traces, bodies, strict=True):
                for body in component_bodies:
                    result = _CallResult()
                    component_trace.calls.append(result)
                    tg.start_soon(self._call, component_trace.service, body, result)
        outputs = []
        tests_written: list[str] | None = None
        for j, (component, component_trace) in enumerate(zip(layer, traces, strict=True), 1):
            replies = [c.reply if c.error is None else None for c in component_trace.calls]
            cands, tests, problems = combine(component, incoming, replies, f"L{index}.{j}")
            component_trace.problems.extend(problems)
            outputs.append((component, cands))
            if tests:
                tests_written = (tests_written or []) + tests
        return merge_layer(incoming, outputs), tests_written, traces

    async def _call(self, service: str, body: dict[str, Any], result: _CallResult) -> None:
        started = anyio.current_time()
        try:
            reply = await self.client.call(service, body, timeout=self.call_timeout)
            result.reply, result.attempts = reply.body, reply.attempts
        except ClientError as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        result.latency_s = anyio.current_time() - started


def _trace_candidate(candidate: Mapping[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in candidate.items() if v is not None and k != "meta"}
    for key in ("text", "critique"):
        if isinstance(shown.get(key), str) and len(shown[key]) > TRACE_TEXT_CHARS:
            shown[key] = shown[key][:TRACE_TEXT_CHARS] + "…"
    return shown
