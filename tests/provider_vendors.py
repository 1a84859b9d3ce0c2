"""The four HTTP vendors as provider tests see them: how to build each against the fake server.

Each ``Vendor`` builds its real provider (official SDK inside) aimed at a
``FakeLLMServer`` with the test's credentials in the environment, and knows its
model, its secret and what an incomplete reply of its API looks like, so one
parametrized test can hold every vendor to the same promise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from itas.agents.providers.remote import RemoteProvider
from tests.servers.fake_llm import AwsCredentials, FakeLLMServer

OPENAI_SECRET = "sk-test-openai-0123456789-SECRET"
ANTHROPIC_SECRET = "sk-ant-test-0123456789-SECRET"
GEMINI_SECRET = "AIzaTEST-gemini-0123456789-SECRET"
AWS = AwsCredentials(
    key_id="AKIAITASTEST0000KEY", secret="itas/TEST/aws+secret0123456789SECRET", region="us-west-2"
)
AWS_SESSION_TOKEN = "itas-test-session-token-0123456789-SECRET"
FAST_RETRIES = {"retry_base_delay_s": 0.01, "retry_max_delay_s": 0.05}


@dataclass(frozen=True)
class Vendor:
    name: str
    model: str
    secrets: tuple[str, ...]
    #: A 200 reply in the vendor's JSON shape that lacks what every reply must have.
    incomplete_reply: dict[str, Any]
    build: Callable[[FakeLLMServer, Mapping[str, Any]], RemoteProvider]

    def provider(self, server: FakeLLMServer, **settings: Any) -> RemoteProvider:
        return self.build(server, settings)


def _openai(server: FakeLLMServer, settings: Mapping[str, Any]) -> RemoteProvider:
    from itas.agents.providers.openai import OpenAIProvider

    return OpenAIProvider(
        {"base_url": server.url + "/v1", "api_key_env": "ITAS_TEST_OPENAI_KEY", **settings}
    )


def _anthropic(server: FakeLLMServer, settings: Mapping[str, Any]) -> RemoteProvider:
    from itas.agents.providers.anthropic import AnthropicProvider

    return AnthropicProvider(
        {"base_url": server.url, "api_key_env": "ITAS_TEST_ANTHROPIC_KEY", **settings}
    )


def _gemini(server: FakeLLMServer, settings: Mapping[str, Any]) -> RemoteProvider:
    from itas.agents.providers.gemini import GeminiProvider

    return GeminiProvider(
        {"base_url": server.url, "api_key_env": "ITAS_TEST_GEMINI_KEY", **settings}
    )


def _bedrock(server: FakeLLMServer, settings: Mapping[str, Any]) -> RemoteProvider:
    from itas.agents.providers.bedrock import BedrockProvider

    return BedrockProvider({"base_url": server.url, **settings})


VENDORS = {
    "openai": Vendor(
        "openai", "gpt-4o-mini", (OPENAI_SECRET,), {"id": "x", "object": "chat.completion"}, _openai
    ),
    "anthropic": Vendor(
        "anthropic", "claude-3-5-haiku-20241022", (ANTHROPIC_SECRET,), {"id": "msg"}, _anthropic
    ),
    "gemini": Vendor(
        "gemini", "gemini-1.5-pro-001", (GEMINI_SECRET,), {"modelVersion": "x"}, _gemini
    ),
    "bedrock": Vendor(
        "bedrock",
        "meta.llama3-70b-instruct-v1:0",
        (AWS.secret, AWS_SESSION_TOKEN),
        {"metrics": {"latencyMs": 1}},
        _bedrock,
    ),
}


def set_test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every vendor's test key in the environment, and nothing from the real machine."""
    monkeypatch.setenv("ITAS_CACHE", "off")
    monkeypatch.setenv("ITAS_TEST_OPENAI_KEY", OPENAI_SECRET)
    monkeypatch.setenv("ITAS_TEST_ANTHROPIC_KEY", ANTHROPIC_SECRET)
    monkeypatch.setenv("ITAS_TEST_GEMINI_KEY", GEMINI_SECRET)
    isolate_aws(monkeypatch)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS.secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", AWS_SESSION_TOKEN)
    monkeypatch.setenv("AWS_REGION", AWS.region)


def isolate_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS settings from this machine: no files, no profile, no instance metadata."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_BEARER_TOKEN_BEDROCK",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/itas-test/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/itas-test/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
