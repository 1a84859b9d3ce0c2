"""Queries to the orchestrator service and the answers that come back (no I/O).

Shared by ``AsyncClient.ask`` and ``Client.ask`` so both build the same request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from itas.spec import Architecture, load_architecture

ORCHESTRATOR_SERVICE = "orchestrator"
ArchitectureLike = Architecture | Mapping[str, Any] | str | os.PathLike[str]
PromptLike = str | Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class Answer:
    """The orchestrator's answer: the text, the final candidates, usage and (on request) a
    trace. ``stopped`` is set when the budget ended the query early: the layer it stopped
    before and why (the answer is then the first candidate at that point)."""

    text: str
    architecture: str
    candidates: list[dict[str, Any]]
    usage: dict[str, Any]
    latency_s: float
    trace: dict[str, Any] | None = field(default=None, repr=False)
    stopped: dict[str, Any] | None = None
    calls_spent: int | None = None

    @classmethod
    def from_reply(cls, reply: Mapping[str, Any]) -> Answer:
        return cls(reply["answer"], reply.get("architecture", ""), reply.get("candidates", []),
                   reply.get("usage", {}), reply.get("latency_s", 0.0), reply.get("trace"),
                   reply.get("stopped"), reply.get("calls_spent"))


def as_architecture(architecture: ArchitectureLike) -> Architecture:
    return architecture if isinstance(architecture, Architecture) else load_architecture(
        architecture)


def query_body(
    prompt: PromptLike,
    architecture: ArchitectureLike,
    *,
    trace: bool = False,
    budget: Mapping[str, int] | None = None,
    sim: Mapping[str, Any] | None = None,
    tests: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The request body for one query; the architecture is validated here, before sending."""
    messages = ([{"role": "user", "content": prompt}] if isinstance(prompt, str)
                else [dict(m) for m in prompt])
    body: dict[str, Any] = {"messages": messages,
                            "architecture": as_architecture(architecture).to_dict(),
                            "trace": trace}
    if budget:
        body["budget"] = dict(budget)
    if sim:
        body["sim"] = dict(sim)
    if tests:
        body["tests"] = list(tests)
    return body
