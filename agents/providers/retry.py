"""The one retry policy for every remote provider.

The SDKs' own retries are turned off (``max_retries=0``) so that a call is
retried in exactly one place, with one budget, one log line per retry and one
final error. What is retried: HTTP 408, 429 and 5xx, timeouts and connection
errors, and replies that cannot be read (a body that is not JSON, or lacks a
field every reply has: ``BadReply``), which a proxy or an overloaded server
sends now and then; anything else (400, 401, 404, ...) fails at once, because
repeating a bad request only burns quota.

Waits use exponential backoff with "equal jitter" (half fixed, half random), so
replicas hit by the same outage do not retry in lockstep yet always wait a
little. A server's ``Retry-After`` (seconds or an HTTP date; the ``-ms``
variant OpenAI and Anthropic send wins when present) replaces the backoff; a
wait longer than ``max_retry_after_s`` ends the call at once instead, since
sleeping less than asked would only waste an attempt.

Retries stay inside the request's deadline (the agent runs each request in a
cancel scope that ends at it, or at a CANCEL): a call cancelled there stops with
its retries, and a retry that could not start before the deadline is not
waited for; the call fails at once, naming the last error.

Error text can echo request details, so every message that leaves this module
is passed through ``redact`` with the provider's secrets, and only then cut to
``MAX_MESSAGE_CHARS`` (cutting first could keep half a key).
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import anyio

from itas.errors import ProviderError

log = logging.getLogger("itas.providers")

T = TypeVar("T")

#: HTTP statuses worth another attempt besides 5xx.
RETRYABLE_STATUS = frozenset({408, 429})
#: Longest failure message kept (bodies can be large HTML pages); cut after redaction, so
#: a secret is never half-kept where the cut falls.
MAX_MESSAGE_CHARS = 400
#: Secrets shorter than this are not redacted (would mangle ordinary words).
MIN_SECRET_CHARS = 4
REDACTED = "[redacted]"


#: What SDKs raise while decoding a body they were sent: json's JSONDecodeError,
#: UnicodeDecodeError and pydantic's ValidationError are ValueErrors; the others come
#: from reading a field of a reply that does not have the expected shape.
UNREADABLE_REPLY_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
)


class BadReply(Exception):
    """A reply that came back but cannot be used: not JSON, or a required field missing.

    Raised by a provider's reading of a reply; retried like a 5xx, since the next
    reply from the same server is usually whole.
    """


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    max_retry_after_s: float = 60.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Wait before attempt ``attempt + 1`` (attempt counts from 1)."""
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return cap / 2 + rng.uniform(0, cap / 2)


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, as the retry loop sees it."""

    retryable: bool
    message: str
    status: int | None = None
    retry_after_s: float | None = None


def redact(message: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_CHARS:
            message = message.replace(secret, REDACTED)
    return message


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait, or None when it says nothing usable."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _error_detail(body: object) -> str | None:
    """The human message in an OpenAI- or Anthropic-style error body, if there is one."""
    error = body.get("error", body) if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message else None


def unreadable_reply(exc: BaseException, source: str) -> Failure | None:
    """A retryable failure for a reply from ``source`` that could not be read, else None."""
    if isinstance(exc, BadReply):
        detail = str(exc)
    elif isinstance(exc, UNREADABLE_REPLY_ERRORS):
        detail = f"{type(exc).__name__}: {exc}"
    else:
        return None
    return Failure(retryable=True, message=f"unreadable reply from {source}: {detail}")


def sdk_failure(
    exc: BaseException,
    *,
    status_error: type[BaseException],
    connection_error: type[BaseException],
    validation_error: type[BaseException],
    base_error: type[BaseException],
) -> Failure | None:
    """Classify an exception from an OpenAI-style SDK (openai and anthropic share the shape).

    ``status_error`` instances carry ``status_code`` and ``response``; timeouts
    subclass ``connection_error`` in both SDKs; ``validation_error`` (a reply
    that does not match the API's schema) is retried like any unreadable reply;
    any other ``base_error`` fails without retry. Returns None for exceptions
    from outside the SDK, which the caller classifies further.
    """
    if isinstance(exc, status_error):
        status = int(getattr(exc, "status_code", 0))
        response = getattr(exc, "response", None)
        headers = {k.lower(): v for k, v in getattr(response, "headers", {}).items()}
        detail = _error_detail(getattr(exc, "body", None)) or str(
            getattr(exc, "message", "") or exc
        )
        return Failure(
            retryable=status in RETRYABLE_STATUS or status >= 500,
            message=f"HTTP {status}: {detail}",
            status=status,
            retry_after_s=parse_retry_after(headers),
        )
    if isinstance(exc, validation_error):
        return Failure(
            retryable=True,
            message=f"unreadable reply: {type(exc).__name__}: {exc!s}",
        )
    if isinstance(exc, connection_error):
        kind = "timeout" if "timeout" in type(exc).__name__.lower() else "connection error"
        return Failure(retryable=True, message=f"{kind}: {exc!s}")
    if isinstance(exc, base_error):
        return Failure(
            retryable=False, message=f"{type(exc).__name__}: {exc!s}"
        )
    return None


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    provider: str,
    policy: RetryPolicy,
    classify: Callable[[BaseException], Failure | None],
    secrets: Iterable[str] = (),
    rng: random.Random | None = None,
) -> T:
    """Run ``call`` until it succeeds or the policy gives up; raise ProviderError then."""
    secrets = tuple(secrets)
    rng = rng or random.Random()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
        # Decide outside the except block: the SDK exception may quote a secret, so it
        # must not ride along as __context__ of what we raise or log.
        message = redact(failure.message, secrets)[:MAX_MESSAGE_CHARS]
        if not failure.retryable:
            raise ProviderError(provider, message, failure.status)
        if attempt >= policy.max_attempts:
            raise ProviderError(
                provider, f"gave up after {attempt} attempts; last error: {message}", failure.status
            )
        delay = failure.retry_after_s
        if delay is None:
            delay = policy.backoff(attempt, rng)
        elif delay > policy.max_retry_after_s:
            raise ProviderError(
                provider,
                f"server asked to retry after {delay:.0f} s, more than the "
                f"{policy.max_retry_after_s:.0f} s limit; last error: {message}",
                failure.status,
            )
        left = anyio.current_effective_deadline() - anyio.current_time()
        if delay >= left:  # the request ends first: say why now, not "no reply" later
            raise ProviderError(
                provider,
                f"no time left to retry (the request's deadline is {max(0.0, left):.1f} s "
                f"away, the next attempt {delay:.1f} s); last error: {message}",
                failure.status,
            )
        log.warning(
            "%s: %s (attempt %d/%d), retrying in %.2f s",
            provider,
            message,
            attempt,
            policy.max_attempts,
            delay,
        )
        await anyio.sleep(delay)
