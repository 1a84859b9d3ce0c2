"""The orchestrator as a broker service: ``itas orchestrator`` or pool kind ``orchestrator``.

It is an agent like any other, so it scales out the same way: more processes,
more queries at once. Each query request names its architecture inline (the
client loads and validates the file), and the orchestrator validates it again,
since a request can come from anywhere; parsed architectures are cached.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.to_thread

from itas.agents import partials
from itas.agents.base import Agent
from itas.client import AsyncClient
from itas.errors import AgentError, ConfigError
from itas.orchestrator.budget import Budget
from itas.orchestrator.runner import DEFAULT_CALL_TIMEOUT_S, Orchestrator, Relay
from itas.protocol import ErrorCode
from itas.security import CurveKeys
from itas.spec import Architecture, parse_architecture

SERVICE = "orchestrator"
DEFAULT_CREDIT = 32


@functools.lru_cache(maxsize=256)
def _architecture(spec_json: str) -> Architecture:
    return parse_architecture(json.loads(spec_json), "request.architecture")


def parse_query(body: Any) -> tuple[list[dict[str, str]], Architecture]:
    """The conversation and architecture of a query request; AgentError names the field."""
    if not isinstance(body, dict):
        raise AgentError(ErrorCode.BAD_REQUEST, "query: expected a map")
    messages = body.get("messages")
    if isinstance(body.get("prompt"), str) and messages is None:
        messages = [{"role": "user", "content": body["prompt"]}]
    if (not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in messages)):
        raise AgentError(ErrorCode.BAD_REQUEST,
                         "query.messages: expected a non-empty list of {role, content} strings")
    spec = body.get("architecture")
    if not isinstance(spec, dict):
        raise AgentError(ErrorCode.BAD_REQUEST, "query.architecture: expected a spec mapping")
    try:
        arch = _architecture(json.dumps(spec, sort_keys=True))
    except ConfigError as exc:
        raise AgentError(ErrorCode.BAD_REQUEST, str(exc)) from exc
    return messages, arch


MAX_TAGS_BYTES = 4096


def parse_tags(tags: Any) -> dict[str, Any] | None:
    """A query's ``tags`` (who asked, a trace id): a small map, kept in the trace."""
    if tags is None:
        return None
    if not isinstance(tags, dict) or len(json.dumps(tags, default=str)) > MAX_TAGS_BYTES:
        raise AgentError(ErrorCode.BAD_REQUEST,
                         f"query.tags: expected a map of at most {MAX_TAGS_BYTES} bytes as JSON")
    return tags


class OrchestratorAgent(Agent):
    service = SERVICE

    def __init__(self, credit: int = DEFAULT_CREDIT,
                 call_timeout: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        self.credit = credit
        self.call_timeout = call_timeout
        self._broker: str | None = None
        self._curve: CurveKeys | None = None
        self._client: AsyncClient | None = None
        self._planning: anyio.CapacityLimiter | None = None  # made in start(), on the loop

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> OrchestratorAgent:
        credit = settings.get("credit", DEFAULT_CREDIT)
        timeout = settings.get("call_timeout_s", DEFAULT_CALL_TIMEOUT_S)
        if not isinstance(credit, int) or credit < 1:
            raise ConfigError(f"orchestrator setting 'credit' must be >= 1, got {credit!r}")
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"orchestrator setting 'call_timeout_s' must be > 0, got {timeout!r}")
        return cls(credit, float(timeout))

    def attach(self, broker: str, curve: CurveKeys | None) -> None:
        self._broker, self._curve = broker, curve

    async def start(self) -> None:
        if self._broker is None:
            raise ConfigError("the orchestrator needs a broker to call agents through")
        self._client = AsyncClient(self._broker, curve=self._curve, timeout=self.call_timeout)
        self._planning = anyio.CapacityLimiter(1)
        await self._client.__aenter__()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    async def handle(self, body: Any) -> Any:
        assert self._client is not None
        # Validating a spec is CPU work in proportion to the calls it plans (up to a second
        # or two for one far over the bound): off the event loop, so the worker keeps
        # heartbeating and the broker never takes this orchestrator for dead and hands the
        # same query to the next one. One at a time: the GIL gives no more anyway.
        messages, arch = await anyio.to_thread.run_sync(parse_query, body,
                                                        limiter=self._planning)
        sink = partials.current()  # set when the query asked to stream
        relay = None if sink is None else Relay(sink.text, sink.event,
                                                layers=body.get("progress") is True)
        return await Orchestrator(self._client, call_timeout=self.call_timeout).run(
            arch, messages, sim=body.get("sim"), tests=body.get("tests"),
            budget=Budget.from_dict(body.get("budget")).with_defaults(),
            trace=bool(body.get("trace")), fresh=body.get("fresh") is True,
            tags=parse_tags(body.get("tags")), relay=relay,
        )
