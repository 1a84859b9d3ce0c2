"""The shared retry policy's pure parts: Retry-After parsing, backoff bounds, redaction."""

from __future__ import annotations

import random
import time
from email.utils import formatdate

import anyio
import pytest

from itas.agents.providers.prices import price_for
from itas.agents.providers.retry import (
    MAX_MESSAGE_CHARS,
    BadReply,
    Failure,
    RetryPolicy,
    call_with_retries,
    parse_retry_after,
    redact,
    unreadable_reply,
)
from itas.errors import ProviderError


def test_retry_after_seconds_ms_and_dates() -> None:
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    now = time.time()
    assert parse_retry_after({"retry-after": formatdate(now + 30, usegmt=True)}, now=now) == (
        pytest.approx(30, abs=1.01)
    )
    assert parse_retry_after({"retry-after": formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0)
    rng = random.Random(1)
    for attempt, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in delays)
        assert max(delays) - min(delays) > cap / 4  # jittered, not lockstep


def test_redact_replaces_every_occurrence_but_ignores_tiny_secrets() -> None:
    assert redact("a sk-123456 b sk-123456", ["sk-123456"]) == "a [redacted] b [redacted]"
    assert redact("the cat", ["t", ""]) == "the cat"


def test_price_lookup_allows_snapshot_suffixes_only() -> None:
    assert price_for("gpt-4o-mini-2024-07-18") is price_for("gpt-4o-mini") is not None
    assert price_for("gpt-4o-2024-08-06") is price_for("gpt-4o") is not None
    assert price_for("gpt-4-0613") is price_for("gpt-4") is not None
    assert price_for("claude-3-5-sonnet-latest") is price_for("claude-3-5-sonnet") is not None
    assert price_for("gpt-4o-mini") != price_for("gpt-4o")
    assert price_for("claude-opus-4-5-20251101") != price_for("claude-opus-4-20250514")
    # An unlisted newer version is unknown, not priced as its older sibling.
    assert price_for("claude-opus-4-7") is None and price_for("gpt-4o-audio-preview") is None
    assert price_for("gpt-4oo") is None and price_for("smollm2") is None


SECRET = "sk-live-0123456789abcdefSECRET"


@pytest.mark.anyio
@pytest.mark.parametrize("seed", range(3))
async def test_no_part_of_a_secret_survives_wherever_the_message_is_cut(seed: int) -> None:
    """A secret quoted anywhere in a long failure text, even across the cut, never leaks."""
    rng = random.Random(seed)
    print(f"seed {seed}")
    for _ in range(150):
        padding = "x" * rng.randrange(MAX_MESSAGE_CHARS - len(SECRET), MAX_MESSAGE_CHARS + 5)
        text = f"{padding}{SECRET} and again {SECRET}"

        async def fail(text: str = text) -> None:
            raise RuntimeError(text)

        with pytest.raises(ProviderError) as caught:
            await call_with_retries(
                fail,
                provider="p",
                policy=RetryPolicy(max_attempts=1),
                classify=lambda exc: Failure(retryable=False, message=str(exc)),
                secrets=[SECRET],
            )
        message = str(caught.value)
        assert len(message) <= MAX_MESSAGE_CHARS + len("provider_error: p: ")
        pieces = {SECRET[i : i + 8] for i in range(len(SECRET) - 7)}
        assert not any(piece in message for piece in pieces), (len(padding), message[-60:])


@pytest.mark.anyio
async def test_unreadable_replies_are_retried_and_named() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BadReply("no 'choices' in the reply")
        if calls == 2:
            raise ValueError("Expecting value: line 1 column 1 (char 0)")
        return "ok"

    def classify(exc: BaseException) -> Failure | None:
        return unreadable_reply(exc, "http://127.0.0.1:1/v1")

    policy = RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0)
    assert await call_with_retries(flaky, provider="p", policy=policy, classify=classify) == "ok"
    assert calls == 3
    assert unreadable_reply(RuntimeError("a bug"), "x") is None  # bugs are not outages
    failure = unreadable_reply(BadReply("no 'usage'"), "http://h")
    assert failure is not None and failure.retryable
    assert failure.message == "unreadable reply from http://h: no 'usage'"


@pytest.mark.anyio
async def test_retries_stop_at_the_requests_deadline() -> None:
    """A provider that keeps failing: inside a request's deadline the retries end before
    it, with the last error named, instead of retrying on after the client has gone."""
    calls = 0

    async def always_busy() -> str:
        nonlocal calls
        calls += 1
        raise RuntimeError("HTTP 503")

    def classify(exc: BaseException) -> Failure | None:
        return Failure(retryable=True, message=str(exc))

    policy = RetryPolicy(max_attempts=100, base_delay_s=0.2, max_delay_s=0.2)
    with anyio.fail_after(1.0), pytest.raises(ProviderError) as failure:  # one request's scope
        await call_with_retries(always_busy, provider="p", policy=policy,
                                    classify=classify, rng=random.Random(0))
    assert "no time left to retry" in str(failure.value) and "HTTP 503" in str(failure.value)
    assert 2 <= calls <= 10

    calls = 0

    async def hangs() -> str:
        nonlocal calls
        calls += 1
        await anyio.sleep(600)
        return "never"

    with anyio.move_on_after(0.2) as scope:  # a CANCEL from the broker ends the call
        await call_with_retries(hangs, provider="p", policy=policy, classify=classify)
    assert scope.cancelled_caught and calls == 1
