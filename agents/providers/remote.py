"""What the remote providers share: settings, key, model limits, concurrency, retries, usage.

A subclass only knows its SDK: how to build a request (``_prepare``, once per
call), send it and read the reply (``_send``, once per attempt) and how to read
the SDK's exceptions (``_classify``). Everything that must behave the same for
every vendor lives here: the call is first fitted to the model
(``capabilities.fit_call``: output cap, temperature, system role) and every
change is reported in ``Completion.adjustments`` and logged once; the API key
comes from the agent machine's environment (named by ``api_key_env``) and never
from the pool file, so it never travels with a configuration; at most
``max_concurrency`` calls are in flight per provider instance; the one retry
policy of ``retry.py`` applies, and a reply that cannot be read (``BadReply``,
or what an SDK raises while decoding a body) is retried like a 5xx and ends, at
worst, in a ``ProviderError``; usage and cost are filled in the same way.

Only ``_send`` runs inside the retry loop, so a mistake in building a request is
never retried and never mistaken for an unreadable reply.

Latency is measured from the moment a call gets its concurrency slot to its
reply, retries included: it is what the call cost in time, not how long it
queued behind its siblings in this process.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio

from itas.agents.providers.base import Completion, Message, Provider, SimTask, Usage
from itas.agents.providers.capabilities import FittedCall, fit_call
from itas.agents.providers.config import check_keys, integer, number, text
from itas.agents.providers.prices import Price, price_for
from itas.agents.providers.retry import (
    BadReply,
    Failure,
    RetryPolicy,
    call_with_retries,
    unreadable_reply,
)
from itas.errors import ConfigError, ProviderError

log = logging.getLogger("itas.providers")

#: Sent to servers that need no key (llama.cpp, vLLM, Ollama on loopback); SDKs insist on one.
NO_KEY = "no-key-needed"
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MAX_CONCURRENCY = 8
DEFAULT_POLICY = RetryPolicy()
#: Distinct adjustment lines logged per provider instance; later ones still reach the reply.
MAX_LOGGED_ADJUSTMENTS = 256
REMOTE_KEYS = frozenset(
    {
        "base_url",
        "api_key_env",
        "timeout_s",
        "max_attempts",
        "max_concurrency",
        "retry_base_delay_s",
        "retry_max_delay_s",
        "max_retry_after_s",
        "price_in_per_mtok",
        "price_out_per_mtok",
    }
)


@dataclass(frozen=True, slots=True)
class HttpReply:
    """One successful HTTP answer, vendor-neutral."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None


def split_conversation(
    provider: str, messages: Sequence[Message], roles: Mapping[str, str]
) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """System texts in order, and the other turns as (vendor role, texts).

    ``roles`` maps our roles ("user", "assistant") to the vendor's; consecutive
    turns of one role are merged (several vendors insist on alternating turns).
    A role outside ``roles`` and "system" is a ProviderError naming the message.
    """
    system: list[str] = []
    turns: list[tuple[str, list[str]]] = []
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content", "")
        if role == "system":
            system.append(content)
            continue
        vendor_role = roles.get(str(role))
        if vendor_role is None:
            raise ProviderError(provider, f"message {index} has unknown role {role!r}")
        if turns and turns[-1][0] == vendor_role:
            turns[-1][1].append(content)
        else:
            turns.append((vendor_role, [content]))
    return system, turns


def token_count(value: object, name: str) -> int:
    """A token count read from a reply; absent (None) counts 0, anything but an int >= 0 is bad."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadReply(f"usage field {name!r} is {value!r}, not a token count")
    return value


class RemoteProvider(Provider):
    """Base of the SDK-backed providers; see the module docstring."""

    #: Environment variables read, in order, when the settings name none.
    default_key_envs: ClassVar[tuple[str, ...]]
    #: Whether the endpoint says who bills a model (OpenAI-compatible hosts: Together, Groq,
    #: a server of one's own); a vendor's own API bills the same at any endpoint it serves.
    priced_by_endpoint: ClassVar[bool] = False
    #: Settings this subclass accepts besides ``REMOTE_KEYS``.
    extra_keys: ClassVar[frozenset[str]] = frozenset()
    #: Per-attempt HTTP timeout when the settings give no ``timeout_s``.
    default_timeout_s: ClassVar[float] = DEFAULT_TIMEOUT_S

    def __init__(self, settings: Mapping[str, Any]) -> None:
        name = self.name
        if "api_key" in settings:
            raise ConfigError(
                f"provider {name!r}: setting 'api_key' is not allowed (keys must not live in "
                "pool files); put the key in an environment variable and name it with 'api_key_env'"
            )
        check_keys(name, settings, REMOTE_KEYS | self.extra_keys)
        self.timeout_s = number(name, settings, "timeout_s", self.default_timeout_s, low=0.1)
        self.policy = RetryPolicy(
            max_attempts=integer(
                name, settings, "max_attempts", DEFAULT_POLICY.max_attempts, low=1, high=50
            ),
            base_delay_s=number(
                name, settings, "retry_base_delay_s", DEFAULT_POLICY.base_delay_s, low=0
            ),
            max_delay_s=number(
                name, settings, "retry_max_delay_s", DEFAULT_POLICY.max_delay_s, low=0
            ),
            max_retry_after_s=number(
                name, settings, "max_retry_after_s", DEFAULT_POLICY.max_retry_after_s, low=0
            ),
        )
        self.max_concurrency = integer(
            name, settings, "max_concurrency", DEFAULT_MAX_CONCURRENCY, low=1, high=10_000
        )
        self._limiter = anyio.CapacityLimiter(self.max_concurrency)
        self._price = self._price_override(settings)
        self._configured_base_url = text(name, settings, "base_url", self.default_base_url())
        self._api_key = self._resolve_key(settings)
        #: Effective base URL, set by the subclass once its SDK client exists (cache key part).
        self.base_url: str | None = self._configured_base_url
        self._logged_adjustments: set[str] = set()

    # -- hooks -----------------------------------------------------------------------------

    def default_base_url(self) -> str | None:
        """Base URL when the settings give none; None means the SDK's vendor default."""
        return None

    def keyless_default(self) -> bool:
        """True when a missing key is fine (the server is a local one that ignores keys)."""
        return self._configured_base_url is not None

    def _prepare(self, model: str, call: FittedCall) -> dict[str, Any]:
        """The SDK request for ``call``; raises ProviderError for messages the API cannot take."""
        raise NotImplementedError

    async def _send(self, request: dict[str, Any]) -> HttpReply:
        """One attempt; raises the SDK's errors, or ``BadReply`` for a reply it cannot use."""
        raise NotImplementedError

    def _classify(self, exc: BaseException) -> Failure | None:
        """The SDK's exceptions as failures; None for anything else."""
        raise NotImplementedError

    def _classify_attempt(self, exc: BaseException) -> Failure | None:
        failure = self._classify(exc)
        if failure is None:
            failure = unreadable_reply(exc, self.base_url or self.name)
        return failure

    def _price_model(self, model: str) -> str:
        """The name ``prices.price_for`` knows this model by."""
        return model

    def _secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in an error or a log line."""
        return (self._api_key,)

    # -- the call --------------------------------------------------------------------------

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
        call = fit_call(self.name, model, messages, temperature, max_tokens)
        self._log_adjustments(call.adjustments)
        request = self._prepare(model, call)
        async with self._limiter:
            start = time.perf_counter()
            reply = await call_with_retries(
                lambda: self._send(request),
                provider=self.name,
                policy=self.policy,
                classify=self._classify_attempt,
                secrets=self._secrets(),
            )
            latency = time.perf_counter() - start
        where = self.base_url if self.priced_by_endpoint else None
        price = self._price or price_for(self._price_model(model), where)
        usage = Usage(
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            latency_s=latency,
            cost_usd=price.cost(reply.prompt_tokens, reply.completion_tokens) if price else 0.0,
            cost_known=price is not None,
        )
        return Completion(
            text=reply.text,
            usage=usage,
            finish_reason=reply.finish_reason,
            adjustments=call.adjustments,
        )

    def _log_adjustments(self, adjustments: Sequence[str]) -> None:
        for line in adjustments:
            if line in self._logged_adjustments:
                continue
            if len(self._logged_adjustments) < MAX_LOGGED_ADJUSTMENTS:
                self._logged_adjustments.add(line)
                log.warning("%s: %s (reported in each reply's adjustments)", self.name, line)

    # -- settings helpers ------------------------------------------------------------------

    def _resolve_key(self, settings: Mapping[str, Any]) -> str:
        env_name = text(self.name, settings, "api_key_env", None)
        if env_name is not None:
            key = os.environ.get(env_name)
            if not key:
                raise ConfigError(
                    f"provider {self.name!r}: environment variable {env_name} "
                    "(named by setting 'api_key_env') is not set"
                )
            return key
        for env_name in self.default_key_envs:
            key = os.environ.get(env_name)
            if key:
                return key
        if self.keyless_default():
            return NO_KEY
        raise ConfigError(
            f"provider {self.name!r}: no API key: set the environment variable "
            f"{' or '.join(self.default_key_envs)}, name another one with 'api_key_env', "
            "or give a 'base_url' for a server that needs no key"
        )

    def _price_override(self, settings: Mapping[str, Any]) -> Price | None:
        keys = ("price_in_per_mtok", "price_out_per_mtok")
        given = [key for key in keys if key in settings]
        if not given:
            return None
        if len(given) != len(keys):
            missing = next(key for key in keys if key not in settings)
            raise ConfigError(f"provider {self.name!r}: setting {given[0]!r} needs {missing!r} too")
        return Price(*(number(self.name, settings, key, 0.0, low=0) for key in keys))
