"""The model capability table: calls are fitted to what each model accepts, and say so.

Property tests over random models, temperatures, token limits and conversations
check the promises of ``fit_call`` (never above a cap, never outside a range,
one line per change and none without one, no message text lost); the table is
checked for entries an earlier pattern hides; the Archon cases that started it
(``max_tokens: 200000`` for Claude, temperature for o1) are checked through the
real SDKs against the fake server, and through the response cache.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itas.agents.providers.anthropic import AnthropicProvider
from itas.agents.providers.cache import CachingProvider, ResponseCache
from itas.agents.providers.capabilities import (
    MODEL_LIMITS,
    fit_call,
    fold_system_messages,
    limits_for,
)
from itas.agents.providers.openai import OpenAIProvider
from tests.provider_vendors import set_test_credentials
from tests.servers.fake_llm import FakeLLMServer

ROLES = ("system", "user", "assistant")


def representative(pattern: str, filler: str = "x") -> str:
    return pattern.replace("*", filler)


MODELS = st.one_of(
    st.sampled_from(
        [representative(p, f) for entries in MODEL_LIMITS.values() for p, _ in entries
         for f in ("", "-2024-05-13", "x")]
    ),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.:/", max_size=30),
)
MESSAGES = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": st.text(max_size=20)}),
    max_size=6,
)


@settings(max_examples=400, deadline=None)
@given(
    provider=st.sampled_from([*MODEL_LIMITS, "local", "sim"]),
    model=MODELS,
    messages=MESSAGES,
    temperature=st.floats(min_value=-1.0, max_value=5.0, allow_nan=False),
    max_tokens=st.integers(min_value=1, max_value=1_000_000),
)
def test_fit_call_keeps_its_promises(
    provider: str, model: str, messages: list[dict[str, str]], temperature: float, max_tokens: int
) -> None:
    fitted = fit_call(provider, model, messages, temperature, max_tokens)
    limits = limits_for(provider, model)
    if limits is None:
        assert fitted.adjustments == () and fitted.messages == tuple(messages)
        assert (fitted.temperature, fitted.max_tokens) == (temperature, max_tokens)
        return
    cap = limits.max_output_tokens
    assert fitted.max_tokens == (min(max_tokens, cap) if cap else max_tokens)
    if limits.temperature_range is None:
        assert fitted.temperature is None
    else:
        low, high = limits.temperature_range
        assert fitted.temperature is not None and low <= fitted.temperature <= high
        if low <= temperature <= high:
            assert fitted.temperature == temperature
    changes = [
        fitted.max_tokens != max_tokens,
        fitted.temperature != temperature,
        fitted.messages != tuple(messages),
    ]
    assert len(fitted.adjustments) == sum(changes)
    assert all(model in line for line in fitted.adjustments)
    if fitted.messages != tuple(messages):
        assert all(m["role"] != "system" for m in fitted.messages)
        joined = "\n".join(m["content"] for m in fitted.messages)
        assert all(m["content"] in joined for m in messages)
        assert next(m["role"] for m in fitted.messages if m["role"] != "system") == "user"


@pytest.mark.parametrize("provider", list(MODEL_LIMITS))
def test_no_entry_is_hidden_by_an_earlier_pattern(provider: str) -> None:
    entries = MODEL_LIMITS[provider]
    for pattern, limits in entries:
        model = representative(pattern, "-zz")
        assert limits_for(provider, model) is limits, (
            f"{provider}: {pattern!r} is shadowed by an earlier entry"
        )


@pytest.mark.parametrize(
    ("provider", "model", "cap"),
    [
        ("anthropic", "claude-3-5-sonnet-20240620", 8192),
        ("anthropic", "claude-3-opus-20240229", 4096),
        ("anthropic", "claude-3-haiku-20240307", 4096),
        ("anthropic", "claude-opus-4-5-20251101", 64000),
        ("anthropic", "claude-opus-4-1-20250805", 32000),
        ("openai", "gpt-4o-2024-05-13", 4096),
        ("openai", "gpt-4o-2024-08-06", 16384),
        ("openai", "GPT-4o-mini", 16384),
        ("openai", "gpt-4-turbo-2024-04-09", 4096),
        ("openai", "gpt-4-0314", 8192),
        ("openai", "o1-mini-2024-09-12", 65536),
        ("gemini", "gemini-1.5-pro-001", 8192),
        ("gemini", "models/gemini-2.5-pro", 65536),
        ("bedrock", "meta.llama3-70b-instruct-v1:0", 2048),
        ("bedrock", "bedrock/meta.llama3-70b-instruct-v1:0", 2048),
        ("bedrock", "us.anthropic.claude-3-5-sonnet-20240620-v1:0", 4096),
        ("bedrock", "arn:aws:bedrock:us-east-1::foundation-model/mistral.mistral-large-2407-v1:0",
         8191),
    ],
)
def test_archon_models_get_their_caps(provider: str, model: str, cap: int) -> None:
    fitted = fit_call(provider, model, [{"role": "user", "content": "q"}], 0.7, 200000)
    assert fitted.max_tokens == cap
    assert fitted.adjustments[0] == f"max_tokens 200000 clamped to {cap} for {model}"


def test_unknown_models_and_providers_pass_unchanged() -> None:
    for provider, model in [("openai", "meta-llama/Llama-3-70b-chat-hf"), ("local", "smollm2"),
                            ("gemini", "my-tuned-model"), ("nope", "gpt-4o")]:
        fitted = fit_call(provider, model, [{"role": "system", "content": "s"}], 1.7, 10**6)
        assert (fitted.temperature, fitted.max_tokens, fitted.adjustments) == (1.7, 10**6, ())


def test_folding_keeps_order_and_makes_a_user_turn_when_there_is_none() -> None:
    folded = fold_system_messages([
        {"role": "assistant", "content": "earlier"},
        {"role": "system", "content": "A"},
        {"role": "user", "content": "q"},
        {"role": "system", "content": "B"},
    ])
    assert folded == ({"role": "assistant", "content": "earlier"},
                      {"role": "user", "content": "A\n\nB\n\nq"})
    assert fold_system_messages([{"role": "system", "content": "only"}]) == (
        {"role": "user", "content": "only"},
    )


# -- through the SDKs ---------------------------------------------------------------------------

@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLMServer]:
    set_test_credentials(monkeypatch)
    with FakeLLMServer(reply_text="ok") as fake:
        yield fake


MESSAGES_WITH_SYSTEM = [
    {"role": "system", "content": "Think step by step."},
    {"role": "user", "content": "2+2?"},
]


@pytest.mark.anyio
async def test_o1_preview_gets_no_temperature_no_system_role_and_the_new_token_field(
    server: FakeLLMServer,
) -> None:
    model = "o1-preview-2024-09-12"
    provider = OpenAIProvider({"base_url": server.url + "/v1", "api_key_env": "ITAS_TEST_OPENAI_KEY"})
    try:
        result = await provider.complete(MESSAGES_WITH_SYSTEM, model=model, temperature=0.7,
                                         max_tokens=200000)
    finally:
        await provider.aclose()
    body = server.posts()[0].json()
    assert "temperature" not in body and "max_tokens" not in body
    assert body["max_completion_tokens"] == 32768
    assert body["messages"] == [{"role": "user", "content": "Think step by step.\n\n2+2?"}]
    assert result.adjustments == (
        f"max_tokens 200000 clamped to 32768 for {model}",
        f"temperature 0.7 dropped for {model} (it takes only its default)",
        (
            f"system message folded into the first user message for {model} "
            "(it refuses the system role)"
        ),
    )


@pytest.mark.anyio
async def test_claude_gets_its_output_cap(server: FakeLLMServer) -> None:
    model = "claude-3-5-sonnet-20240620"
    provider = AnthropicProvider({"base_url": server.url, "api_key_env": "ITAS_TEST_ANTHROPIC_KEY"})
    try:
        result = await provider.complete(MESSAGES_WITH_SYSTEM, model=model, max_tokens=200000)
    finally:
        await provider.aclose()
    body = server.posts()[0].json()
    assert body["max_tokens"] == 8192 and body["system"] == "Think step by step."
    assert result.adjustments == (f"max_tokens 200000 clamped to 8192 for {model}",)


@pytest.mark.anyio
async def test_adjustments_are_logged_once_per_provider(
    server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    provider = AnthropicProvider({"base_url": server.url, "api_key_env": "ITAS_TEST_ANTHROPIC_KEY"})
    try:
        for _ in range(3):
            await provider.complete(MESSAGES_WITH_SYSTEM, model="claude-3-haiku", max_tokens=9999)
    finally:
        await provider.aclose()
    lines = [r.getMessage() for r in caplog.records if "clamped" in r.getMessage()]
    expected = (
        "anthropic: max_tokens 9999 clamped to 4096 for claude-3-haiku "
        "(reported in each reply's adjustments)"
    )
    assert lines == [expected]


@pytest.mark.anyio
async def test_adjustments_survive_the_response_cache(server: FakeLLMServer, tmp_path: Path) -> None:
    inner = AnthropicProvider({"base_url": server.url, "api_key_env": "ITAS_TEST_ANTHROPIC_KEY"})
    cached = CachingProvider(inner, ResponseCache(tmp_path / "responses.sqlite"))
    call: dict[str, Any] = {"model": "claude-3-opus-20240229", "max_tokens": 200000}
    try:
        first = await cached.complete(MESSAGES_WITH_SYSTEM, **call)
        again = await cached.complete(MESSAGES_WITH_SYSTEM, **call)
        plain = await cached.complete(MESSAGES_WITH_SYSTEM, model="claude-3-opus", max_tokens=10)
        plain_again = await cached.complete(MESSAGES_WITH_SYSTEM, model="claude-3-opus",
                                            max_tokens=10)
    finally:
        await cached.aclose()
    assert len(server.posts()) == 2 and again.usage.cached and plain_again.usage.cached
    assert again.adjustments == first.adjustments == (
        "max_tokens 200000 clamped to 4096 for claude-3-opus-20240229",
    )
    assert plain.adjustments == plain_again.adjustments == ()


def test_a_cache_file_from_before_adjustments_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE responses (key TEXT PRIMARY KEY, text TEXT NOT NULL, finish_reason TEXT, "
        "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, "
        "cost_usd REAL NOT NULL, cost_known INTEGER NOT NULL, created_at REAL NOT NULL)"
    )
    old.execute("INSERT INTO responses VALUES ('k', 'old reply', 'stop', 1, 2, 0.5, 1, 0.0)")
    old.commit()
    old.close()
    cache = ResponseCache(path)
    try:
        hit = cache.get("k")
        assert hit is not None and hit.text == "old reply" and hit.adjustments == ()
    finally:
        cache.close()
