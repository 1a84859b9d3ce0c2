"""One contract for every HTTP provider, over real HTTP with the official SDKs.

The gemini (google-genai) and bedrock (boto3) providers are held to what the
openai and anthropic ones promise: answers with usage, 408/429/5xx retried by the
one retry policy (Retry-After honoured), other 4xx not retried, hangs timing out
and retried, at most ``max_concurrency`` calls in flight, keys never in errors or
logs. Every vendor, openai and anthropic included, is held to the bad-reply
promise: a body that is not JSON, is not UTF-8, is an HTML page, or lacks the
fields every reply has, is retried and ends, at worst, in a ProviderError that
says the reply was unreadable; never another exception.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import anyio
import pytest

from itas.errors import ProviderError
from tests.provider_vendors import AWS, FAST_RETRIES, VENDORS, Vendor, set_test_credentials
from tests.servers.fake_llm import COMPLETION_TOKENS, PROMPT_TOKENS, FakeLLMServer

pytestmark = pytest.mark.anyio

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
NEW_VENDORS = ["gemini", "bedrock"]
ALL_VENDORS = list(VENDORS)


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    set_test_credentials(monkeypatch)


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(reply_text="4", aws_credentials=AWS) as fake:
        yield fake


async def ask(vendor: Vendor, server: FakeLLMServer, **settings: object) -> object:
    provider = vendor.provider(server, **settings)
    try:
        return await provider.complete(MESSAGES, model=vendor.model, max_tokens=64)
    finally:
        await provider.aclose()


@pytest.mark.parametrize("name", NEW_VENDORS)
async def test_answer_and_usage(server: FakeLLMServer, name: str) -> None:
    vendor = VENDORS[name]
    provider = vendor.provider(server)
    try:
        result = await provider.complete(MESSAGES, model=vendor.model, max_tokens=64)
    finally:
        await provider.aclose()
    assert result.text == "4" and result.finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )
    assert result.usage.latency_s > 0 and not result.usage.cached and result.adjustments == ()
    assert len(server.posts()) == 1 and server.signature_problems == []


@pytest.mark.parametrize("name", NEW_VENDORS)
@pytest.mark.parametrize("status", [429, 500, 503])
async def test_transient_statuses_are_retried(
    server: FakeLLMServer, caplog: pytest.LogCaptureFixture, name: str, status: int
) -> None:
    server.fail(status, times=2)
    with caplog.at_level(logging.WARNING, logger="itas.providers"):
        result = await ask(VENDORS[name], server, **FAST_RETRIES)
    assert getattr(result, "text", None) == "4"
    assert len(server.posts()) == 3
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2 and all(f"HTTP {status}" in line for line in retries)


@pytest.mark.parametrize("name", NEW_VENDORS)
async def test_retry_after_is_honoured(server: FakeLLMServer, name: str) -> None:
    server.fail(429, headers={"Retry-After": "1"})
    await ask(VENDORS[name], server, **FAST_RETRIES)
    first, second = server.posts()
    # Backoff alone would wait ~0.01 s; only Retry-After explains a gap near a second.
    assert second.at - first.at >= 0.9


@pytest.mark.parametrize("name", NEW_VENDORS)
async def test_gives_up_after_max_attempts(server: FakeLLMServer, name: str) -> None:
    server.fail(503, times=10)
    with pytest.raises(ProviderError) as caught:
        await ask(VENDORS[name], server, max_attempts=3, **FAST_RETRIES)
    assert len(server.posts()) == 3 and caught.value.status == 503
    assert "gave up after 3 attempts" in str(caught.value) and "HTTP 503" in str(caught.value)
    assert caught.value.provider == name


@pytest.mark.parametrize("name", NEW_VENDORS)
@pytest.mark.parametrize("status", [400, 403, 404])
async def test_client_errors_are_not_retried(server: FakeLLMServer, name: str, status: int) -> None:
    server.fail(status, times=5)
    with pytest.raises(ProviderError) as caught:
        await ask(VENDORS[name], server, **FAST_RETRIES)
    assert len(server.posts()) == 1 and caught.value.status == status
    assert f"simulated failure {status}" in str(caught.value)


@pytest.mark.parametrize("name", NEW_VENDORS)
async def test_hangs_time_out_and_are_retried(server: FakeLLMServer, name: str) -> None:
    server.stall(3.0)
    result = await ask(VENDORS[name], server, timeout_s=0.5, **FAST_RETRIES)
    assert getattr(result, "text", None) == "4" and len(server.posts()) == 2


@pytest.mark.parametrize("name", NEW_VENDORS)
async def test_endless_hang_ends_in_a_timeout_error(server: FakeLLMServer, name: str) -> None:
    server.stall(3.0, times=5)
    with pytest.raises(ProviderError, match="gave up after 2 attempts; last error: timeout"):
        await ask(VENDORS[name], server, timeout_s=0.3, max_attempts=2, **FAST_RETRIES)


@pytest.mark.parametrize("name", NEW_VENDORS)
async def test_connection_refused_ends_in_provider_error(name: str) -> None:
    with FakeLLMServer() as gone:
        pass  # its port is free again: nothing listens there
    with pytest.raises(ProviderError, match="gave up after 2 attempts; last error: connection"):
        await ask(VENDORS[name], gone, max_attempts=2, **FAST_RETRIES)


@pytest.mark.parametrize("name", NEW_VENDORS)
async def test_keys_never_in_errors_or_logs(
    server: FakeLLMServer, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    vendor = VENDORS[name]
    server.fail(500, times=10, echo_credentials=True)  # the server quotes what we sent back
    with caplog.at_level(logging.DEBUG), pytest.raises(ProviderError) as caught:
        await ask(vendor, server, max_attempts=2, **FAST_RETRIES)
    message = str(caught.value)
    assert "you sent" in message and "[redacted]" in message  # the echo reached the error...
    for secret in vendor.secrets:
        assert secret not in message  # ...with every secret taken out
        assert secret not in caplog.text
    # The SDK exception quotes the key, so it must not hang on the error as cause or context.
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    for request in server.posts():
        for secret in vendor.secrets:
            assert secret not in request.path and secret.encode() not in request.body


@pytest.mark.parametrize("name", NEW_VENDORS)
async def test_concurrency_limit_per_provider(server: FakeLLMServer, name: str) -> None:
    vendor = VENDORS[name]
    server.answer_delay_s = 0.3
    provider = vendor.provider(server, max_concurrency=2)
    try:
        async with anyio.create_task_group() as tg:
            for index in range(6):
                tg.start_soon(
                    lambda i=index: provider.complete(MESSAGES, model=vendor.model, sample_index=i)
                )
    finally:
        await provider.aclose()
    assert len(server.posts()) == 6 and server.max_in_flight == 2


# -- replies that cannot be read ----------------------------------------------------------------

BAD_BODIES = {
    "truncated json": b'{"choices": [{"message": {"content": "4"',
    "not json": b"upstream connect error or disconnect/reset before headers",
    "not utf-8": b"\xff\xfe\x00garbage\x80\x81",
    "empty": b"",
    "json list": b"[1, 2, 3]",
}


@pytest.mark.parametrize("name", ALL_VENDORS)
@pytest.mark.parametrize("kind", list(BAD_BODIES))
async def test_a_bad_body_is_retried(server: FakeLLMServer, name: str, kind: str) -> None:
    server.send_body(BAD_BODIES[kind])
    result = await ask(VENDORS[name], server, **FAST_RETRIES)
    assert getattr(result, "text", None) == "4" and len(server.posts()) == 2


@pytest.mark.parametrize("name", ALL_VENDORS)
async def test_an_html_page_with_status_200_is_retried(server: FakeLLMServer, name: str) -> None:
    server.send_body(b"<html><body>Bad gateway</body></html>", headers={"content-type": "text/html"})
    result = await ask(VENDORS[name], server, **FAST_RETRIES)
    assert getattr(result, "text", None) == "4" and len(server.posts()) == 2


@pytest.mark.parametrize("name", ALL_VENDORS)
async def test_a_reply_missing_required_fields_is_retried(
    server: FakeLLMServer, name: str
) -> None:
    vendor = VENDORS[name]
    server.send_body(vendor.incomplete_reply)
    result = await ask(vendor, server, **FAST_RETRIES)
    assert getattr(result, "text", None) == "4" and len(server.posts()) == 2


@pytest.mark.parametrize("name", ALL_VENDORS)
async def test_persistently_bad_bodies_end_in_a_provider_error(
    server: FakeLLMServer, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    server.send_body(b"<<not json>>", times=10)
    with (
        caplog.at_level(logging.WARNING, logger="itas.providers"),
        pytest.raises(ProviderError) as caught,
    ):
        await ask(VENDORS[name], server, max_attempts=3, **FAST_RETRIES)
    assert len(server.posts()) == 3
    message = str(caught.value)
    assert message.startswith("provider_error: ") and "gave up after 3 attempts" in message
    assert "unreadable reply" in message and caught.value.__context__ is None
    assert sum("unreadable reply" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize("name", ALL_VENDORS)
async def test_wrongly_typed_token_counts_are_unreadable(server: FakeLLMServer, name: str) -> None:
    vendor = VENDORS[name]
    shapes = {
        "openai": {"choices": [{"message": {"role": "assistant", "content": "4"}}],
                   "usage": {"prompt_tokens": "eleven", "completion_tokens": 1}},
        "anthropic": {"content": [{"type": "text", "text": "4"}],
                      "usage": {"input_tokens": -3, "output_tokens": 1}},
        "gemini": {"candidates": [{"content": {"parts": [{"text": "4"}]}, "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": "eleven"}},
        "bedrock": {"output": {"message": {"role": "assistant", "content": [{"text": "4"}]}},
                    "stopReason": "end_turn", "usage": {"inputTokens": "x", "outputTokens": 1}},
    }
    server.send_body(shapes[name], times=5)
    with pytest.raises(ProviderError, match="unreadable reply"):
        await ask(vendor, server, max_attempts=2, **FAST_RETRIES)
    assert len(server.posts()) == 2
