"""The anthropic provider against a local server speaking the Messages API over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from itas.agents.providers.anthropic import AnthropicProvider, to_messages_api
from itas.agents.providers.prices import price_for
from itas.errors import ProviderError
from tests.servers.fake_llm import COMPLETION_TOKENS, PROMPT_TOKENS, FakeLLMServer

pytestmark = pytest.mark.anyio

SECRET = "sk-ant-test-0123456789-SECRET"
FAST_RETRIES = {"retry_base_delay_s": 0.01, "retry_max_delay_s": 0.05}


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(reply_text="Paris") as fake:
        yield fake


@pytest.fixture(autouse=True)
def secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)


def provider(server: FakeLLMServer, **settings: object) -> AnthropicProvider:
    return AnthropicProvider({"base_url": server.url, **settings})


async def test_messages_api_request_and_usage(server: FakeLLMServer) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Please."},
    ]
    p = provider(server)
    try:
        result = await p.complete(
            messages, model="claude-3-5-haiku-20241022", temperature=1.5, max_tokens=50
        )
    finally:
        await p.aclose()
    assert result.text == "Paris" and result.finish_reason == "end_turn"
    assert result.usage.prompt_tokens == PROMPT_TOKENS
    assert result.usage.completion_tokens == COMPLETION_TOKENS
    expected = price_for("claude-3-5-haiku").cost(PROMPT_TOKENS, COMPLETION_TOKENS)  # type: ignore[union-attr]
    assert result.usage.cost_usd == pytest.approx(expected) and result.usage.cost_known
    (request,) = server.posts()
    assert request.path == "/v1/messages"
    body = request.json()
    assert body["system"] == "You are terse.\n\nAnswer in one word."
    assert body["messages"] == [{"role": "user", "content": "Capital of France?\n\nPlease."}]
    # 1.5 is clamped to the API maximum 1.0, which is the default and so is left out.
    assert body["max_tokens"] == 50 and "temperature" not in body
    # SDK 2.x sends the key as a Bearer token, earlier ones as x-api-key: exactly one of them.
    auth = {k: v for k, v in request.headers.items() if k in ("authorization", "x-api-key")}
    assert list(auth.values()) in ([f"Bearer {SECRET}"], [SECRET])
    others = {k: v for k, v in request.headers.items() if k not in auth}
    assert SECRET not in repr(others) and SECRET.encode() not in request.body


async def test_temperature_sent_in_body_unless_disabled(server: FakeLLMServer) -> None:
    for settings, expected in [({}, 0.3), ({"send_temperature": False}, None)]:
        p = provider(server, **settings)
        try:
            await p.complete([{"role": "user", "content": "hi"}], model="m", temperature=0.3)
        finally:
            await p.aclose()
        assert server.posts()[-1].json().get("temperature") == expected


async def test_overloaded_529_and_rate_limit_are_retried(server: FakeLLMServer) -> None:
    server.fail(529)
    server.fail(429, headers={"retry-after-ms": "300"})
    p = provider(server, **FAST_RETRIES)
    try:
        result = await p.complete([{"role": "user", "content": "hi"}], model="claude-sonnet-4-6")
    finally:
        await p.aclose()
    assert result.text == "Paris"
    _first, second, third = server.posts()
    assert third.at - second.at >= 0.25  # retry-after-ms honoured


async def test_gives_up_and_redacts(server: FakeLLMServer) -> None:
    server.fail(500, times=10, echo_credentials=True)
    p = provider(server, max_attempts=2, **FAST_RETRIES)
    try:
        with pytest.raises(ProviderError) as caught:
            await p.complete([{"role": "user", "content": "hi"}], model="claude-3-haiku")
    finally:
        await p.aclose()
    assert len(server.posts()) == 2
    assert "gave up after 2 attempts" in str(caught.value)
    assert SECRET not in str(caught.value) and "[redacted]" in str(caught.value)


def test_to_messages_api_rejects_what_the_api_cannot_take() -> None:
    with pytest.raises(ProviderError, match="at least one user message"):
        to_messages_api([{"role": "system", "content": "only a system prompt"}])
    with pytest.raises(ProviderError, match="unknown role 'tool'"):
        to_messages_api([{"role": "tool", "content": "x"}])
    system, turns = to_messages_api(
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ]
    )
    assert system is None and [t["role"] for t in turns] == ["user", "assistant", "user"]
