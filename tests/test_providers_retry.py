"""The shared retry policy's pure parts: Retry-After parsing, backoff bounds, redaction."""

from __future__ import annotations

import random
import time
from email.utils import formatdate

import pytest

from itas.agents.providers.prices import price_for
from itas.agents.providers.retry import RetryPolicy, parse_retry_after, redact


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
