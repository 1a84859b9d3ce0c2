"""Runs an architecture for one query through the broker, layer by layer.

Within a layer every request of every component is in flight at once (one anyio task each);
layers run in order because each reads the candidates the one before left. What requests a
component sends, what a valid reply is and how replies merge back are its technique
module's (``shards``, ``check_reply``, ``merge``): the runner only sends, checks, merges and
accounts.

A reply is checked twice before anything reads it: against the contract every technique
shares (``TechniqueReply.from_body``) and against its technique's own rules. A reply that
fails either is one failed call, recorded in the trace with what was wrong; so is an error
reply or a timeout. The layer goes on with the replies it has; a layer left with no
candidates ends the query with an error naming it. Budgets are applied as
``itas.orchestrator.budget`` says, so no query spends more calls than its budget.

Generated unit tests reach later prompts the way Archon shows them: appended to the last user
message of the conversation that every later LLM component with ``tests_in_prompt`` gets.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from itas.client import Reply
from itas.errors import AgentError, ClientError
from itas.orchestrator import budget as B
from itas.orchestrator.budget import Budget
from itas.plan import component_tokens, plan_layer
from itas.protocol import ErrorCode
from itas.query import ORCHESTRATOR_SERVICE, query_body
from itas.spec import Architecture
from itas.techniques import technique_of
from itas.techniques.base import (
    ComponentParams,
    LLMParams,
    Material,
    Shard,
    conversation_tokens,
    estimate_tokens,
    with_tests,
)
from itas.techniques.contract import (
    Candidate,
    ContractError,
    Message,
    TechniqueReply,
    TechniqueRequest,
    UsageTotals,
)

DEFAULT_CALL_TIMEOUT_S = 300.0
NO_BUDGET = Budget()
TRACE_TEXT_CHARS = 2000


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
                  budget: Budget = NO_BUDGET, trace: bool = False) -> dict[str, Any]:
        body = query_body(messages, arch, trace=trace, budget=budget.as_dict() or None,
                          sim=sim, tests=tests)
        reply: dict[str, Any] = (await self.client.call(ORCHESTRATOR_SERVICE, body,
                                                        timeout=self.timeout)).body
        return reply


@dataclass
class _Call:
    """One request of a component and what came of it."""

    shard: Shard
    request: TechniqueRequest
    reply: TechniqueReply | None = None
    error: str | None = None
    attempts: int = 0
    latency_s: float = 0.0

    @property
    def spent(self) -> int:
        """Calls this request counts against the budget: what a valid reply reports, else
        all it was allowed (a failed request's calls are not known)."""
        if self.reply is not None:
            return self.reply.usage.calls
        return self.request.max_calls or 0


@dataclass
class _ComponentRun:
    component: ComponentParams
    calls: list[_Call] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def trace(self, with_prompts: bool) -> dict[str, Any]:
        usage = UsageTotals()
        for call in self.calls:
            if call.reply is not None:
                usage.merge(call.reply.usage)
        entry: dict[str, Any] = {
            "service": self.component.service_name,
            "technique": self.component.technique,
            "requests": len(self.calls),
            "calls_allowed": sum(c.request.max_calls or 0 for c in self.calls),
            "failed": [c.error for c in self.calls if c.error],
            "retried": sum(1 for c in self.calls if c.attempts > 1),
            "latency_s": max((c.latency_s for c in self.calls), default=0.0),
            "usage": usage.to_dict(),
            "parse": [p.to_dict() for c in self.calls if c.reply for p in c.reply.parse],
            "notes": [n for c in self.calls if c.reply for n in c.reply.notes],
            "problems": self.problems,
        }
        if with_prompts:
            entry["prompts"] = [p for c in self.calls if c.reply for p in c.reply.prompts or ()]
        return entry


@dataclass
class _Query:
    arch: Architecture
    messages: list[Message]
    sim: dict[str, Any] | None
    tests: list[str] | None
    generated_tests: list[str] | None
    budget: Budget
    trace: bool
    calls_spent: int = 0
    usage: UsageTotals = field(default_factory=UsageTotals)


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
        budget: Budget = NO_BUDGET,
        trace: bool = False,
    ) -> dict[str, Any]:
        """Answer one query. Raises AgentError (``no_candidates``, ``budget_exceeded``,
        ``bad_request``)."""
        if arch.tests == "benchmark" and not tests:
            raise AgentError(ErrorCode.BAD_REQUEST,
                             f"{arch.name} says 'tests: benchmark', but the query carries no "
                             "tests; send the benchmark's unit tests with the query")
        started = anyio.current_time()
        q = _Query(arch, [dict(m) for m in messages], dict(sim) if sim else None,
                   list(tests) if tests else None, None, budget, trace)
        candidates: list[Candidate] = []
        layers_trace: list[dict[str, Any]] = []
        stopped: dict[str, Any] | None = None
        for index, layer in enumerate(arch.layers, 1):
            decision = self._gate(q, index, candidates)
            if isinstance(decision, str):
                stopped = {"layer": index, "reason": decision}
                break
            layer_started = anyio.current_time()
            could_leave = plan_layer(layer, len(candidates)).candidates_out[1]
            candidates, runs = await self._run_layer(q, index, layer, candidates, decision)
            if trace:
                layers_trace.append({
                    "layer": index,
                    "latency_s": anyio.current_time() - layer_started,
                    "components": [r.trace(True) for r in runs],
                    "candidates": [_trace_candidate(c) for c in candidates],
                    "tests": q.generated_tests if any(
                        technique_of(c).makes_tests for c in layer) else None,
                })
            if not candidates and could_leave:
                # Each distinct cause once, with how often: a missing service fails
                # every call the same way, and one line per call would bury the hint.
                causes = collections.Counter(c.error for r in runs for c in r.calls if c.error)
                failures = "; ".join(e if n == 1 else f"{e} (x{n})"
                                     for e, n in causes.most_common(3))
                services = ", ".join(c.service_name for c in layer)
                raise AgentError(ErrorCode.NO_CANDIDATES,
                                 f"layer {index} ({services}) left no candidates"
                                 + (f": {failures}" if failures else ""))
        result: dict[str, Any] = {
            "answer": candidates[0].text,
            "candidates": [c.to_dict() for c in candidates],
            "usage": q.usage.to_dict(),
            "latency_s": anyio.current_time() - started,
            "architecture": arch.name,
            "calls_spent": q.calls_spent,
            "stopped": stopped,
        }
        if trace:
            result["trace"] = {"layers": layers_trace}
        return result

    # -- budget -------------------------------------------------------------------------------

    def _gate(self, q: _Query, index: int, candidates: list[Candidate]) -> int | str:
        """Re-ask calls this layer may use, or the reason to stop before it (an answer is
        possible); raises ``budget_exceeded`` when the budget cannot reach a valid answer."""
        arch = q.arch
        left = arch.layers[index - 1:]
        n = len(candidates)
        spare_calls: int | None = None
        reason = ""
        if q.budget.calls is not None:
            calls = B.forecast(left, n)
            remaining = q.budget.calls - q.calls_spent
            reach = B.reachable_layers(calls, remaining)
            if reach == len(left):
                spare_calls = B.share_reasks(remaining - sum(calls), calls)
            else:
                reason = (f"the call budget ({q.budget.calls}, {remaining} left) does not reach "
                          f"layer {index + reach}, which needs up to {calls[reach]} more calls")
                if reach > 0:
                    if not B.can_answer(arch.final, left, n, reach):
                        self._fail_budget(q, index, reason)
                    spare_calls = 0
                elif n == 0 or not B.can_answer(arch.final, left, n, 0):
                    self._fail_budget(q, index, reason)
                else:
                    return reason
        if q.budget.tokens is not None:
            layer = arch.layers[index - 1]
            material = _material(q, candidates)
            bound = sum(component_tokens(c, n, material, reasks=0) for c in layer)
            if q.usage.tokens + bound > q.budget.tokens:
                reason = (f"the token budget ({q.budget.tokens}, "
                          f"{q.budget.tokens - q.usage.tokens} left) does not cover layer "
                          f"{index}, bounded at {bound} tokens")
                if n == 0 or not B.can_answer(arch.final, left, n, 0):
                    self._fail_budget(q, index, reason)
                return reason
            full = sum(component_tokens(c, n, material) for c in layer)
            if q.usage.tokens + full > q.budget.tokens:
                spare_calls = 0  # re-asks would not fit the token budget
        if spare_calls is None:
            spare_calls = sum(technique_of(c).max_calls(c, n) - technique_of(c).calls(c, n)
                              for c in arch.layers[index - 1])
        return spare_calls

    @staticmethod
    def _fail_budget(q: _Query, index: int, reason: str) -> None:
        spent = "before any call" if q.calls_spent == 0 else \
            f"after {q.calls_spent} calls, before layer {index}"
        raise AgentError(ErrorCode.BUDGET, f"{q.arch.name}: {reason}, and stopping earlier "
                                           f"leaves no answer the architecture allows "
                                           f"('final: {q.arch.final}'); stopped {spent}")

    # -- one layer ----------------------------------------------------------------------------

    async def _run_layer(self, q: _Query, index: int, layer: Sequence[ComponentParams],
                         incoming: list[Candidate], spare: int
                         ) -> tuple[list[Candidate], list[_ComponentRun]]:
        runs = [_ComponentRun(c) for c in layer]
        shards = [technique_of(c).shards(c, len(incoming)) for c in layer]
        bases = [[technique_of(c).request_calls(c, len(s.candidates)) for s in component_shards]
                 for c, component_shards in zip(layer, shards, strict=True)]
        caps = [technique_of(c).request_max_calls(c, len(s.candidates)) - b
                for c, component_shards, component_bases in zip(layer, shards, bases, strict=True)
                for s, b in zip(component_shards, component_bases, strict=True)]
        extras = iter(B.split(spare, caps))
        for run, component_shards, component_bases in zip(runs, shards, bases, strict=True):
            messages = self._messages_for(q, run.component)
            for shard, base in zip(component_shards, component_bases, strict=True):
                request = TechniqueRequest(
                    messages=messages,
                    candidates=[incoming[i] for i in shard.candidates],
                    params=run.component.wire_params(),
                    sample_index=shard.sample_index,
                    tests=q.generated_tests if q.generated_tests is not None else q.tests,
                    sim=q.sim,
                    max_calls=base + next(extras),
                    trace=q.trace,
                )
                run.calls.append(_Call(shard, request))
        async with anyio.create_task_group() as tg:
            for run in runs:
                for call in run.calls:
                    tg.start_soon(self._call, run.component, call)
        outputs: list[tuple[ComponentParams, list[Candidate]]] = []
        for j, run in enumerate(runs, 1):
            for call in run.calls:
                q.calls_spent += call.spent
                if call.reply is not None:
                    q.usage.merge(call.reply.usage)
            t = technique_of(run.component)
            merged = t.merge(run.component, incoming,
                             [(call.shard, call.reply) for call in run.calls])
            run.problems.extend(merged.problems)
            if t.reply_shape == "writes_one":
                for k, candidate in enumerate(merged.candidates):
                    candidate.id = f"L{index}.{j}.{k}"
            if merged.tests is not None:
                q.generated_tests = (q.generated_tests or []) + merged.tests
            outputs.append((run.component, merged.candidates))
        return merge_layer(incoming, outputs), runs

    @staticmethod
    def _messages_for(q: _Query, component: ComponentParams) -> list[Message]:
        if q.generated_tests and isinstance(component, LLMParams) and component.tests_in_prompt:
            return with_tests(q.messages, q.generated_tests)
        return q.messages

    async def _call(self, component: ComponentParams, call: _Call) -> None:
        started = anyio.current_time()
        try:
            reply = await self.client.call(component.service_name, call.request.to_dict(),
                                           timeout=self.call_timeout)
            call.attempts = reply.attempts
            checked = TechniqueReply.from_body(reply.body)
            technique_of(component).check_reply(component, call.request, checked)
            call.reply = checked
        except ClientError as exc:
            call.error = f"{type(exc).__name__}: {exc}"
        except ContractError as exc:
            call.error = f"bad reply from {component.service_name}: {exc}"
        call.latency_s = anyio.current_time() - started


def merge_layer(incoming: Sequence[Candidate],
                outputs: Sequence[tuple[ComponentParams, list[Candidate]]]) -> list[Candidate]:
    """A layer's result: writers' outputs in component order; without writers, the incoming
    candidates with every critic's critique attached (several critics: joined)."""
    if any(technique_of(c).produces for c, _ in outputs):
        return [cand for c, cands in outputs if technique_of(c).produces for cand in cands]
    merged = {c.id: c for c in incoming}
    for _, cands in outputs:
        for c in cands:
            target = merged.get(c.id)
            if target is None or not c.critique or c.critique == target.critique:
                continue
            previous = target.critique
            critique = f"{previous}\n\n{c.critique}" if previous else c.critique
            merged[c.id] = target.annotated(Candidate(c.id, "", critique=critique, meta=c.meta))
    return list(merged.values())


def _material(q: _Query, candidates: Sequence[Candidate]) -> Material:
    """Token bounds of what the next layer's prompts carry, measured from the query itself."""
    tests = q.generated_tests if q.generated_tests is not None else q.tests
    return Material(
        conversation_tokens(q.messages),
        max((estimate_tokens(c.text) for c in candidates), default=0),
        max((estimate_tokens(c.critique or "") for c in candidates), default=0),
        sum(estimate_tokens(t) + 2 for t in tests or ()))


def _trace_candidate(candidate: Candidate) -> dict[str, Any]:
    shown = {k: v for k, v in candidate.to_dict().items() if v is not None and k != "meta"}
    for key in ("text", "critique"):
        if isinstance(shown.get(key), str) and len(shown[key]) > TRACE_TEXT_CHARS:
            shown[key] = shown[key][:TRACE_TEXT_CHARS] + "…"
    return shown
