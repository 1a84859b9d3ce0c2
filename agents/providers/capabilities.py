"""What each hosted model accepts, and fitting a call to it before it is sent.

Architectures are written once and run on many models; Archon's configs ask
Anthropic models for ``max_tokens: 200000`` and give OpenAI's reasoning models a
``temperature``, both of which the APIs refuse with a 400 that no retry can fix.
So each provider looks its model up in ``MODEL_LIMITS`` and ``fit_call`` changes
what the model would refuse: ``max_tokens`` above the model's output cap is
clamped to it, a temperature outside the accepted range is clamped into it (or
left out when the model takes only its default), and system messages are folded
into the first user message for models that refuse the system role. Every
change is returned as one human-readable line, which the provider puts in
``Completion.adjustments``: results are never produced under other settings
than asked without saying so.

The table is data: per provider an ordered list of (glob pattern, limits); the
first pattern that matches the model id (lower-cased, the part after the last
"/", and for Bedrock without a cross-region prefix such as "us.") wins, so put
a snapshot before its family. A model no pattern matches is sent as asked: an
unknown model is not guessed at. The figures are the vendors' published limits
as of ``LIMITS_AS_OF``; where sources disagreed the lower cap was taken, since
a cap set too low costs only output (and says so), one set too high fails.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from itas.agents.providers.base import Message

LIMITS_AS_OF = "2026-02"
MAX_TOKENS_PARAM = "max_tokens"
MAX_COMPLETION_TOKENS_PARAM = "max_completion_tokens"
#: Bedrock cross-region inference profiles prefix the model id with a geography.
BEDROCK_GEOGRAPHIES = frozenset({"us", "eu", "apac", "global", "us-gov", "jp", "au", "ca"})


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """What one model family accepts.

    max_output_tokens: the largest ``max_tokens`` the API takes; None when unknown.
    temperature_range: accepted (low, high); None when the model refuses any
        temperature but its default, so none is sent.
    system_messages: False when the API rejects the system role.
    token_limit_param: the request field the model requires for the output cap
        (OpenAI's reasoning models want ``max_completion_tokens``); None: the
        provider's default.
    """

    max_output_tokens: int | None = None
    temperature_range: tuple[float, float] | None = (0.0, 2.0)
    system_messages: bool = True
    token_limit_param: str | None = None


def _caps(max_out: int | None, high: float = 2.0) -> ModelLimits:
    return ModelLimits(max_output_tokens=max_out, temperature_range=(0.0, high))


def _reasoning(max_out: int, *, system: bool = True) -> ModelLimits:
    return ModelLimits(
        max_output_tokens=max_out,
        temperature_range=None,
        system_messages=system,
        token_limit_param=MAX_COMPLETION_TOKENS_PARAM,
    )


MODEL_LIMITS: dict[str, tuple[tuple[str, ModelLimits], ...]] = {
    "openai": (
        ("gpt-3.5-turbo*", _caps(4096)),
        ("gpt-4o-2024-05-13", _caps(4096)),
        ("gpt-4o*", _caps(16384)),
        ("gpt-4.1*", _caps(32768)),
        ("gpt-4-turbo*", _caps(4096)),
        ("gpt-4-*-preview", _caps(4096)),
        ("gpt-4", _caps(8192)),
        ("gpt-4-0314", _caps(8192)),
        ("gpt-4-0613", _caps(8192)),
        ("gpt-5-chat*", _caps(16384)),
        ("gpt-5*", _reasoning(128000)),
        ("o1-mini*", _reasoning(65536, system=False)),
        ("o1-preview*", _reasoning(32768, system=False)),
        ("o1*", _reasoning(100000)),
        ("o3*", _reasoning(100000)),
        ("o4*", _reasoning(100000)),
    ),
    "anthropic": (
        ("claude-3-5-sonnet*", _caps(8192, 1.0)),
        ("claude-3-5-haiku*", _caps(8192, 1.0)),
        ("claude-3-7-sonnet*", _caps(64000, 1.0)),
        ("claude-3-*", _caps(4096, 1.0)),
        ("claude-opus-4-6*", _caps(128000, 1.0)),
        ("claude-sonnet-4-6*", _caps(128000, 1.0)),
        ("claude-opus-4-5*", _caps(64000, 1.0)),
        ("claude-haiku-4-5*", _caps(64000, 1.0)),
        ("claude-opus-4*", _caps(32000, 1.0)),
        ("claude-sonnet-4*", _caps(64000, 1.0)),
        ("claude-2*", _caps(4096, 1.0)),
        ("claude-instant*", _caps(4096, 1.0)),
        ("*", _caps(None, 1.0)),
    ),
    "gemini": (
        ("gemini-1.0-pro*", _caps(2048)),
        ("gemini-pro", _caps(2048)),
        ("gemini-1.5-*", _caps(8192)),
        ("gemini-2.0-*", _caps(8192)),
        ("gemini-2.5-*", _caps(65536)),
        ("gemini-3*", _caps(65536)),
        ("gemma-*", _caps(8192)),
    ),
    "bedrock": (
        ("anthropic.claude-3-5-sonnet-20240620*", _caps(4096, 1.0)),
        ("anthropic.claude-3-5-sonnet*", _caps(8192, 1.0)),
        ("anthropic.claude-3-5-haiku*", _caps(8192, 1.0)),
        ("anthropic.claude-3-7-sonnet*", _caps(8192, 1.0)),
        ("anthropic.claude-3-*", _caps(4096, 1.0)),
        ("anthropic.claude-opus-4-6*", _caps(128000, 1.0)),
        ("anthropic.claude-sonnet-4-6*", _caps(64000, 1.0)),
        ("anthropic.claude-opus-4-5*", _caps(64000, 1.0)),
        ("anthropic.claude-haiku-4-5*", _caps(64000, 1.0)),
        ("anthropic.claude-opus-4*", _caps(32000, 1.0)),
        ("anthropic.claude-sonnet-4*", _caps(64000, 1.0)),
        ("meta.llama4*", _caps(8192, 1.0)),
        ("meta.llama*", _caps(2048, 1.0)),
        ("mistral.mistral-large-2407*", _caps(8191, 1.0)),
        ("mistral.mistral-*", _caps(4096, 1.0)),
        ("mistral.mixtral-*", _caps(4096, 1.0)),
        ("amazon.nova-2*", _caps(64000, 1.0)),
        ("amazon.nova*", _caps(10000, 1.0)),
        ("*", _caps(None, 1.0)),
    ),
}


@dataclass(frozen=True, slots=True)
class FittedCall:
    """A call as it will be sent; ``temperature`` None means "leave it out"."""

    messages: tuple[Message, ...]
    temperature: float | None
    max_tokens: int
    token_limit_param: str | None
    adjustments: tuple[str, ...]


def model_key(provider: str, model: str) -> str:
    """The id the table matches: lower-cased, after the last "/", no Bedrock geography."""
    key = model.strip().lower().rsplit("/", 1)[-1]
    if provider == "bedrock":
        head, dot, rest = key.partition(".")
        if dot and head in BEDROCK_GEOGRAPHIES:
            key = rest
    return key


def limits_for(provider: str, model: str) -> ModelLimits | None:
    """The first matching entry of ``MODEL_LIMITS[provider]``, or None."""
    key = model_key(provider, model)
    for pattern, limits in MODEL_LIMITS.get(provider, ()):
        if fnmatch.fnmatchcase(key, pattern):
            return limits
    return None


def fold_system_messages(messages: Sequence[Message]) -> tuple[Message, ...]:
    """System texts joined (in order) in front of the first user message.

    With no user message the system text becomes one, so nothing is lost.
    """
    system = [m.get("content", "") for m in messages if m.get("role") == "system"]
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    preamble = "\n\n".join(system)
    for message in rest:
        if message.get("role") == "user":
            message["content"] = f"{preamble}\n\n{message.get('content', '')}"
            break
    else:
        rest.insert(0, {"role": "user", "content": preamble})
    return tuple(rest)


def fit_call(
    provider: str,
    model: str,
    messages: Sequence[Message],
    temperature: float,
    max_tokens: int,
) -> FittedCall:
    """Change what ``model`` would refuse; say what changed, one line per change."""
    limits = limits_for(provider, model)
    if limits is None:
        return FittedCall(tuple(messages), temperature, max_tokens, None, ())
    notes: list[str] = []
    cap = limits.max_output_tokens
    if cap is not None and max_tokens > cap:
        notes.append(f"max_tokens {max_tokens} clamped to {cap} for {model}")
        max_tokens = cap
    sent: float | None = temperature
    if limits.temperature_range is None:
        notes.append(f"temperature {temperature:g} dropped for {model} (it takes only its default)")
        sent = None
    else:
        low, high = limits.temperature_range
        if not low <= temperature <= high:
            sent = min(max(temperature, low), high)
            notes.append(f"temperature {temperature:g} clamped to {sent:g} for {model}")
    fitted = tuple(messages)
    if not limits.system_messages and any(m.get("role") == "system" for m in messages):
        fitted = fold_system_messages(messages)
        notes.append(
            f"system message folded into the first user message for {model} "
            "(it refuses the system role)"
        )
    return FittedCall(fitted, sent, max_tokens, limits.token_limit_param, tuple(notes))
