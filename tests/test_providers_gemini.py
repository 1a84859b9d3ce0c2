"""The gemini provider's own promises, through google-genai against the fake Gemini REST API.

The shared promises (retries, timeouts, bad bodies, secrets) are in
test_providers_contract.py; here: how messages map onto contents, where the key
travels, safety blocks, finish reasons, thinking tokens, Google's RetryInfo, and
the settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from itas.agents.providers import make_provider
from itas.agents.providers.gemini import GeminiProvider, to_gemini_contents
from itas.agents.providers.prices import price_for
from itas.errors import ConfigError, ProviderError
from tests.provider_vendors import FAST_RETRIES, GEMINI_SECRET, set_test_credentials
from tests.servers.fake_llm import PROMPT_TOKENS, FakeLLMServer

pytestmark = pytest.mark.anyio

MODEL = "gemini-1.5-pro-001"
USER = [{"role": "user", "content": "Capital of France?"}]


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    set_test_credentials(monkeypatch)


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(reply_text="Paris") as fake:
        yield fake


def provider(server: FakeLLMServer, **settings: Any) -> GeminiProvider:
    return GeminiProvider(
        {"base_url": server.url, "api_key_env": "ITAS_TEST_GEMINI_KEY", **settings}
    )


async def complete(server: FakeLLMServer, messages: Any = USER, **kwargs: Any) -> Any:
    p = provider(server, **FAST_RETRIES)
    try:
        return await p.complete(messages, **{"model": MODEL, **kwargs})
    finally:
        await p.aclose()


def reply(candidate: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"candidates": [candidate] if candidate else []}
    body.update(fields)
    return body


async def test_request_shape_and_where_the_key_travels(server: FakeLLMServer) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "system", "content": "One word."},
        {"role": "user", "content": "Please."},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And Italy?"},
    ]
    result = await complete(server, messages, temperature=0.25, max_tokens=50)
    assert result.text == "Paris" and result.finish_reason == "stop"
    (request,) = server.posts()
    assert request.path.endswith(f"/models/{MODEL}:generateContent")
    body = request.json()
    assert body["systemInstruction"]["parts"] == [{"text": "You are terse.\n\nOne word."}]
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Capital of France?"}, {"text": "Please."}]},
        {"role": "model", "parts": [{"text": "Paris."}]},
        {"role": "user", "parts": [{"text": "And Italy?"}]},
    ]
    assert body["generationConfig"] == {
        "temperature": 0.25,
        "maxOutputTokens": 50,
        "candidateCount": 1,
    }
    assert request.headers["x-goog-api-key"] == GEMINI_SECRET
    others = {k: v for k, v in request.headers.items() if k != "x-goog-api-key"}
    assert GEMINI_SECRET not in repr(others) and GEMINI_SECRET not in request.path
    assert GEMINI_SECRET.encode() not in request.body


async def test_output_cap_and_temperature_fitted_to_the_model(server: FakeLLMServer) -> None:
    result = await complete(server, temperature=2.5, max_tokens=200000)
    config = server.posts()[0].json()["generationConfig"]
    assert (config["maxOutputTokens"], config["temperature"]) == (8192, 2.0)
    assert result.adjustments == (
        f"max_tokens 200000 clamped to 8192 for {MODEL}",
        f"temperature 2.5 clamped to 2 for {MODEL}",
    )


async def test_thinking_tokens_count_as_output_and_thoughts_are_not_text(
    server: FakeLLMServer,
) -> None:
    server.send_body(
        reply(
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "let me think", "thought": True}, {"text": "42"}],
                },
                "finishReason": "MAX_TOKENS",
            },
            usageMetadata={
                "promptTokenCount": 5,
                "candidatesTokenCount": 3,
                "thoughtsTokenCount": 40,
            },
        )
    )
    result = await complete(server, model="gemini-2.5-flash")
    assert result.text == "42" and result.finish_reason == "length"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (5, 43)


@pytest.mark.parametrize("reason", ["SAFETY", "PROHIBITED_CONTENT", "OTHER"])
async def test_a_blocked_prompt_is_a_clear_error_and_not_retried(
    server: FakeLLMServer, reason: str
) -> None:
    server.send_body(reply(promptFeedback={"blockReason": reason}), times=5)
    with pytest.raises(ProviderError) as caught:
        await complete(server)
    assert len(server.posts()) == 1
    assert f"{MODEL} refused the prompt: blocked by Gemini's safety filters" in str(caught.value)
    assert f"blockReason {reason}" in str(caught.value)


@pytest.mark.parametrize("reason", ["SAFETY", "RECITATION", "BLOCKLIST", "SPII"])
async def test_a_reply_stopped_by_a_filter_is_a_clear_error(
    server: FakeLLMServer, reason: str
) -> None:
    candidate = {
        "finishReason": reason,
        "safetyRatings": [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
        ],
    }
    server.send_body(reply(candidate), times=5)
    with pytest.raises(ProviderError) as caught:
        await complete(server)
    assert len(server.posts()) == 1
    message = str(caught.value)
    assert f"reply stopped by Gemini's filters (finishReason {reason})" in message
    assert "HARM_CATEGORY_DANGEROUS_CONTENT" in message and "HARASSMENT" not in message


async def test_an_empty_candidate_list_without_a_block_reason_is_unreadable(
    server: FakeLLMServer,
) -> None:
    server.send_body(reply(), times=5)
    with pytest.raises(ProviderError, match="unreadable reply .*no candidates"):
        p = provider(server, max_attempts=2, **FAST_RETRIES)
        try:
            await p.complete(USER, model=MODEL)
        finally:
            await p.aclose()
    assert len(server.posts()) == 2


async def test_google_retry_info_is_honoured(server: FakeLLMServer) -> None:
    details = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"},
    ]
    error = {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": details}
    server.send_body({"error": error}, status=429)
    result = await complete(server)
    first, second = server.posts()
    assert result.text == "Paris"
    assert second.at - first.at >= 0.9  # backoff alone waits ~0.01 s


async def test_api_version_and_base_url_settings(server: FakeLLMServer) -> None:
    p = provider(server, api_version="v1beta")
    try:
        await p.complete(USER, model=MODEL)
    finally:
        await p.aclose()
    assert server.posts()[0].path == f"/v1beta/models/{MODEL}:generateContent"
    assert p.base_url == server.url


async def test_vertex_switch_in_the_environment_is_ignored(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "some-project")
    result = await complete(server)
    assert result.text == "Paris" and "aiplatform" not in server.posts()[0].path


def test_key_from_the_standard_variables_in_the_sdk_order(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key-1234")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    assert make_provider("gemini", {"cache": False})._api_key == "gemini-key-1234"  # type: ignore[attr-defined]
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key-1234")
    assert make_provider("gemini", {"cache": False})._api_key == "google-key-1234"  # type: ignore[attr-defined]
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.delenv("GOOGLE_API_KEY")
    with pytest.raises(ConfigError, match="GOOGLE_API_KEY or GEMINI_API_KEY"):
        make_provider("gemini", {})
    with pytest.raises(ConfigError, match="ITAS_NOT_SET.*is not set"):
        make_provider("gemini", {"api_key_env": "ITAS_NOT_SET"})
    with pytest.raises(ConfigError, match="'api_key' is not allowed"):
        make_provider("gemini", {"api_key": "AIza-in-a-pool-file"})
    with pytest.raises(ConfigError, match="unknown setting\\(s\\) 'region'"):
        make_provider("gemini", {"region": "us"})


def test_contents_mapping_rejects_what_the_api_cannot_take() -> None:
    with pytest.raises(ProviderError, match="at least one user message"):
        to_gemini_contents([{"role": "system", "content": "only a system prompt"}])
    with pytest.raises(ProviderError, match="unknown role 'tool'"):
        to_gemini_contents([{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}])
    system, contents = to_gemini_contents([{"role": "user", "content": "hi"}])
    assert system is None and contents == [{"role": "user", "parts": [{"text": "hi"}]}]


async def test_a_models_prefix_is_priced_and_routed_as_the_bare_name(
    server: FakeLLMServer,
) -> None:
    result = await complete(server, model="models/gemini-1.5-pro-001")
    price = price_for("gemini-1.5-pro-001")
    assert result.usage.prompt_tokens == PROMPT_TOKENS
    assert result.usage.cost_known is (price is not None)
    if price is None:
        assert result.usage.cost_usd == 0
    assert server.posts()[0].path.endswith("/models/gemini-1.5-pro-001:generateContent")
    unused = provider(server)
    try:
        assert unused._price_model("models/gemini-2.0-flash") == "gemini-2.0-flash"
    finally:
        await unused.aclose()
