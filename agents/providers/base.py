"""What every LLM provider offers the techniques: one async chat completion.

A technique builds the messages and parses the text; a provider only turns
messages into text plus usage. The simulated provider cannot read prose, so a
technique also hands it a ``SimTask``: the role of the call, the answer key of
the question (when the benchmark has one) and a ``render`` function that writes
the simulated decision in exactly the format the technique's own parser reads.
Real providers ignore ``sim`` entirely, so the answer key never reaches a real
model.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass(frozen=True, slots=True)
class Usage:
    """What one call (or a sum of calls) used.

    ``cost_known`` is False when the model has no price (an unknown hosted
    model): ``cost_usd`` is then 0 and must not be read as "free". A cached
    reply has ``cached`` True, latency ~0 and the cost the call had when it
    was made, so experiment figures do not depend on how warm the cache is.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    calls: int = 1
    cached: bool = False
    cost_known: bool = True


@dataclass(frozen=True, slots=True)
class Completion:
    """One reply.

    ``adjustments`` lists, in plain words, every change the provider made to the
    call so the API would take it (``capabilities.py``), such as
    "max_tokens 200000 clamped to 8192 for claude-3-5-sonnet-20240620"; empty when
    the call went out as asked. Traces and technique replies carry it, so a
    result is never silently produced under other settings than the spec's.
    """

    text: str
    usage: Usage
    finish_reason: str | None = None
    adjustments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SimTask:
    """How a simulated model should act on one call.

    role: "generate", "critique", "rank", "compare", "fuse", "verify",
          "write_tests", "run_tests", "judge".
    key: the question's answer key from the benchmark loader, or None:
         {"id": str, "answer": str, "wrong": [str, ...], "difficulty": float, ...}.
    candidates: candidate texts the call is about, in prompt order.
    render: turns the simulated decision (its type depends on the role) into
            the text a real model would have written, in the technique's format.
    """

    role: str
    key: dict[str, Any] | None
    candidates: Sequence[str] = ()
    render: Callable[[Any], str] = str
    extra: dict[str, Any] = field(default_factory=dict)


class Provider(abc.ABC):
    """One provider client inside one agent process; safe for concurrent calls."""

    name: str

    @abc.abstractmethod
    async def complete(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        temperature: float = 0.7,
        max_tokens: int = 512,
        sample_index: int = 0,
        sim: SimTask | None = None,
    ) -> Completion:
        """One completion. ``sample_index`` tells samples of the same call apart
        (response-cache key, simulated randomness). Raises ``ProviderError``."""

    async def aclose(self) -> None:
        """Release connections; the default holds none."""
