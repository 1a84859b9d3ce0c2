"""Signs of life while ``itas ask`` waits, on stderr only, so stdout keeps just the answer.

While it waits the client shows the time gone by, the plan's bounds (layers, calls), which
it computes itself from the spec, and the last layer the orchestrator reported finished (its
per-layer events come as partial replies); the full detail arrives with the trace. The
display is a rich status line, shown only on a terminal: while it is live, rich puts a proxy
in ``sys.stderr`` that prints above the line, and the logging handler (``itas.logs``) writes
to whatever ``sys.stderr`` is, so a log line never lands inside the status line.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from rich.console import Console

from itas.plan import estimate_cost
from itas.query import Answer
from itas.spec import Architecture
from itas.techniques.base import TRUNCATED_FINISHES

SIM_SERVICE_MARK = "@sim:"  # in the service name of every simulated model's agent

TICK_S = 0.5


def plan_line(arch: Architecture) -> str:
    """What a query of ``arch`` will do at most: "plan: up to 18 calls in 4 layers"."""
    cost = estimate_cost(arch)
    return (f"plan: {cost.min_calls_per_query}..{cost.calls_per_query} calls in "
            f"{len(arch.layers)} layer(s) ({cost.base_calls_per_query} if every output parses)")


def answered_line(answer: Answer) -> str:
    """The one line after an answer: its time, its calls, and how many the cache replayed."""
    usage: dict[str, Any] = answer.usage
    calls = int(usage.get("calls", 0))
    cached = int(usage.get("cached_calls", 0))
    from_cache = (f", {cached} of them replayed from the response cache (--no-cache asks "
                  "again)" if cached else ", none from the response cache")
    line = f"answered in {answer.latency_s:.1f} s: {calls} call(s){from_cache}"
    final = answer.candidates[0] if answer.candidates else {}
    if (final.get("meta") or {}).get("finish_reason") in TRUNCATED_FINISHES:
        line += ("; the answer was cut at the token limit (raise the final component's "
                 "max_tokens)")
    if SIM_SERVICE_MARK in str(final.get("model", "")):
        line += ("; simulated model: its text is filler that reads like an answer, it computes "
                 "nothing")
    if answer.stopped:
        line += f"; stopped early: {answer.stopped.get('reason')}"
    return line


class WaitDisplay:
    """A live "waiting 12 s; plan: ..." status on the terminal while a query runs."""

    def __init__(self, verb: str, arch: Architecture, console: Console | None = None) -> None:
        self.verb = verb
        self.plan = plan_line(arch)
        self.console = console or Console(stderr=True)
        self.done = ""  # the last layer the orchestrator reported finished

    async def progress(self, event: dict[str, Any]) -> None:
        """An orchestrator's per-layer event (``AsyncClient.ask(on_progress=...)``)."""
        self.done = (f"layer {event.get('layer', '?')} of {event.get('layers', '?')} done, "
                     f"{event.get('candidates', '?')} candidate(s); ")

    @property
    def live(self) -> bool:
        """Only a terminal gets a live line; a pipe or a file gets no control characters."""
        return self.console.is_terminal

    @contextlib.asynccontextmanager
    async def shown(self) -> AsyncIterator[WaitDisplay]:
        if not self.live:
            yield self
            return
        start = anyio.current_time()
        with self.console.status(self._text(0.0)) as status:
            async with anyio.create_task_group() as tg:

                async def tick() -> None:
                    while True:
                        await anyio.sleep(TICK_S)
                        status.update(self._text(anyio.current_time() - start))

                tg.start_soon(tick)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()

    def _text(self, elapsed_s: float) -> str:
        return f"{self.verb}: waiting {elapsed_s:.0f} s; {self.done}{self.plan}"


def line_reporter(verb: str) -> Callable[[str], None]:
    """Progress as whole lines on stderr ("itas up: ready: ..."), for waits made of steps."""
    return lambda line: print(f"{verb}: {line}", file=sys.stderr, flush=True)
