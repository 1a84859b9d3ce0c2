"""The openai provider against a local server speaking the chat completions API over HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from itas.agents.providers import make_provider
from itas.agents.providers.capabilities import fit_call
from itas.agents.providers.openai import OpenAIProvider
from itas.agents.providers.prices import price_for
from itas.errors import ConfigError, ProviderError
from tests.servers.fake_llm import COMPLETION_TOKENS, PROMPT_TOKENS, FakeLLMServer

pytestmark = pytest.mark.anyio

SECRET = "sk-test-9f8e7d6c5b4a3210-SECRET"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
FAST_RETRIES = {"retry_base_delay_s": 0.01, "retry_max_delay_s": 0.05}


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(reply_text="4") as fake:
        yield fake


@pytest.fixture(autouse=True)
def secret_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ITAS_TEST_OPENAI_KEY", SECRET)
    monkeypatch.setenv("ITAS_CACHE", "off")
    return SECRET


def provider(server: FakeLLMServer, **settings: object) -> OpenAIProvider:
    return OpenAIProvider(
        {"base_url": server.url + "/v1", "api_key_env": "ITAS_TEST_OPENAI_KEY", **settings}
    )


async def test_completion_usage_and_cost(server: FakeLLMServer) -> None:
    p = provider(server)
    try:
        result = await p.complete(MESSAGES, model="gpt-4o-mini", temperature=0.2, max_tokens=33)
    finally:
        await p.aclose()
    assert result.text == "4"
    assert result.finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )
    assert result.usage.cost_usd == pytest.approx(
        price_for("gpt-4o-mini").cost(PROMPT_TOKENS, COMPLETION_TOKENS)  # type: ignore[union-attr]
    )
    assert result.usage.cost_known and not result.usage.cached and result.usage.latency_s > 0
    sent = server.posts()[0].json()
    assert sent["messages"] == MESSAGES
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("gpt-4o-mini", 0.2, 33)


async def test_unknown_model_cost_is_marked_unknown(server: FakeLLMServer) -> None:
    p = provider(server)
    try:
        result = await p.complete(MESSAGES, model="my-finetune")
    finally:
        await p.aclose()
    assert result.usage.cost_usd == 0 and result.usage.cost_known is False


async def test_price_override_from_settings(server: FakeLLMServer) -> None:
    p = provider(server, price_in_per_mtok=1_000_000.0, price_out_per_mtok=2_000_000.0)
    try:
        result = await p.complete(MESSAGES, model="my-finetune")
    finally:
        await p.aclose()
    assert result.usage.cost_usd == pytest.approx(PROMPT_TOKENS + 2 * COMPLETION_TOKENS)
    assert result.usage.cost_known


async def test_key_travels_only_in_the_authorization_header(server: FakeLLMServer) -> None:
    p = provider(server)
    try:
        await p.complete(MESSAGES, model="gpt-4o-mini")
    finally:
        await p.aclose()
    (request,) = server.posts()
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    others = {k: v for k, v in request.headers.items() if k != "authorization"}
    assert SECRET not in repr(others)
    assert SECRET.encode() not in request.body
    assert SECRET not in request.path


async def test_429_with_retry_after_seconds_is_honoured(server: FakeLLMServer) -> None:
    server.fail(429, headers={"Retry-After": "1"})
    p = provider(server, **FAST_RETRIES)
    try:
        result = await p.complete(MESSAGES, model="gpt-4o-mini")
    finally:
        await p.aclose()
    first, second = server.posts()
    assert result.text == "4"
    # Backoff alone would wait ~0.01 s; only Retry-After explains a gap near a second.
    assert second.at - first.at >= 0.9


async def test_retry_after_http_date_is_honoured(server: FakeLLMServer) -> None:
    import time
    from email.utils import formatdate

    server.fail(503, headers={"Retry-After": formatdate(time.time() + 2, usegmt=True)})
    p = provider(server, **FAST_RETRIES)
    try:
        await p.complete(MESSAGES, model="gpt-4o-mini")
    finally:
        await p.aclose()
    first, second = server.posts()
    assert second.at - first.at >= 0.5  # the date has 1 s resolution: 1..2 s remain


async def test_5xx_retried_then_success(
    server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.fail(500, times=2)
    p = provider(server, **FAST_RETRIES)
    with caplog.at_level(logging.WARNING, logger="itas.providers"):
        try:
            result = await p.complete(MESSAGES, model="gpt-4o-mini")
        finally:
            await p.aclose()
    assert result.text == "4"
    assert len(server.posts()) == 3
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2 and "HTTP 500" in retries[0].getMessage()


async def test_gives_up_after_max_attempts(server: FakeLLMServer) -> None:
    server.fail(502, times=10)
    p = provider(server, max_attempts=3, **FAST_RETRIES)
    try:
        with pytest.raises(ProviderError) as caught:
            await p.complete(MESSAGES, model="gpt-4o-mini")
    finally:
        await p.aclose()
    assert len(server.posts()) == 3
    assert caught.value.status == 502
    assert "gave up after 3 attempts" in str(caught.value) and "HTTP 502" in str(caught.value)


async def test_client_errors_are_not_retried(server: FakeLLMServer) -> None:
    server.fail(400, times=5)
    p = provider(server, **FAST_RETRIES)
    try:
        with pytest.raises(ProviderError) as caught:
            await p.complete(MESSAGES, model="gpt-4o-mini")
    finally:
        await p.aclose()
    assert len(server.posts()) == 1 and caught.value.status == 400


async def test_retry_after_beyond_limit_fails_at_once(server: FakeLLMServer) -> None:
    server.fail(429, times=5, headers={"Retry-After": "3600"})
    p = provider(server, max_retry_after_s=5.0, **FAST_RETRIES)
    try:
        with pytest.raises(ProviderError, match="retry after 3600 s"):
            await p.complete(MESSAGES, model="gpt-4o-mini")
    finally:
        await p.aclose()
    assert len(server.posts()) == 1


async def test_key_never_in_errors_or_logs(
    server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.fail(500, times=10, echo_credentials=True)  # the server quotes our key back
    p = provider(server, max_attempts=2, **FAST_RETRIES)
    with caplog.at_level(logging.DEBUG):
        try:
            with pytest.raises(ProviderError) as caught:
                await p.complete(MESSAGES, model="gpt-4o-mini")
        finally:
            await p.aclose()
    assert "you sent" in str(caught.value)  # the echoed text did reach the error...
    assert SECRET not in str(caught.value)  # ...with the key taken out
    # The SDK exception quotes the key, so it must not hang on the error as cause or context.
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert caplog.records, "expected retry log lines"
    for record in caplog.records:
        assert SECRET not in record.getMessage()
    assert SECRET not in caplog.text


async def test_timeouts_are_retried(server: FakeLLMServer) -> None:
    server.stall(2.0)
    p = provider(server, timeout_s=0.3, **FAST_RETRIES)
    try:
        result = await p.complete(MESSAGES, model="gpt-4o-mini")
    finally:
        await p.aclose()
    assert result.text == "4" and len(server.posts()) == 2


async def test_connection_refused_ends_in_provider_error() -> None:
    with FakeLLMServer() as fake:
        url = fake.url  # a port that is free again once the server is gone
    p = OpenAIProvider(
        {
            "base_url": url + "/v1",
            "api_key_env": "ITAS_TEST_OPENAI_KEY",
            "max_attempts": 2,
            **FAST_RETRIES,
        }
    )
    try:
        with pytest.raises(ProviderError, match="gave up after 2 attempts; last error: connection"):
            await p.complete(MESSAGES, model="gpt-4o-mini")
    finally:
        await p.aclose()


async def test_concurrency_limit_per_provider(server: FakeLLMServer) -> None:
    import anyio

    server.answer_delay_s = 0.3
    p = provider(server, max_concurrency=2)
    try:
        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(lambda i=i: p.complete(MESSAGES, model="m", sample_index=i))
    finally:
        await p.aclose()
    assert len(server.posts()) == 6
    assert server.max_in_flight == 2


async def test_keyless_local_server_gets_a_dummy_key(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    p = make_provider("openai", {"base_url": server.url + "/v1"})
    try:
        await p.complete(MESSAGES, model="llama")
    finally:
        await p.aclose()
    assert server.posts()[0].headers["authorization"] == "Bearer no-key-needed"


def test_missing_key_for_the_openai_api_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        make_provider("openai", {})


def test_token_limit_param_defaults_by_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    plain = fit_call("openai", "gpt-4o", MESSAGES, 0.5, 100)
    reasoning = fit_call("openai", "o1-mini", MESSAGES, 0.5, 100)
    assert OpenAIProvider({}).token_limit_param(plain) == "max_completion_tokens"
    local = OpenAIProvider({"base_url": "http://127.0.0.1:1/v1"})
    assert local.token_limit_param(plain) == "max_tokens"
    assert local.token_limit_param(reasoning) == "max_completion_tokens"  # the model needs it
    forced = OpenAIProvider({"base_url": "http://127.0.0.1:1/v1", "token_limit_param": "max_tokens"})
    assert forced.token_limit_param(reasoning) == "max_tokens"  # the setting wins
    with pytest.raises(ConfigError, match="token_limit_param"):
        OpenAIProvider({"token_limit_param": "max_toks"})
