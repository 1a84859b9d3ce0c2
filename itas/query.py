"""Queries to the orchestrator service and the answers that come back (no I/O).

Shared by ``AsyncClient.ask`` and ``Client.ask`` so both build the same request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from itas.errors import ConfigError
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


MAX_MESSAGES = 1000


def load_messages(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """A conversation from a JSON file: ``[{"role", "content"}, ...]`` (or ``{"messages":
    [...]}``, the OpenAI request shape), ending with a user message; ConfigError names the
    file and the message that is wrong."""
    import json
    from pathlib import Path

    where = str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read the conversation: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON: {exc}") from exc
    if isinstance(data, Mapping) and "messages" in data:
        data = data["messages"]
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{where}: expected a non-empty list of {{role, content}} messages")
    if len(data) > MAX_MESSAGES:
        raise ConfigError(f"{where}: {len(data)} messages; at most {MAX_MESSAGES}")
    messages = []
    for i, message in enumerate(data):
        if not isinstance(message, Mapping) or message.get("role") not in (
                "system", "user", "assistant") or not isinstance(message.get("content"), str):
            raise ConfigError(f"{where}: message {i + 1}: expected {{\"role\": \"system\"|"
                              f"\"user\"|\"assistant\", \"content\": a string}}")
        messages.append({"role": str(message["role"]), "content": str(message["content"])})
    if messages[-1]["role"] != "user":
        raise ConfigError(f"{where}: the last message must be the user's (the one to answer)")
    return messages


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
    fresh: bool = False,
    tags: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The request body for one query; the architecture is validated here, before sending.
    ``fresh``: every model is asked again, none of its replies from the response cache.
    ``tags`` (who asked, a trace id, a caller's metadata: small JSON values) travel with the
    query into the orchestrator's trace; they change nothing about the answer."""
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
    if fresh:
        body["fresh"] = True
    if tags:
        body["tags"] = dict(tags)
    return body
