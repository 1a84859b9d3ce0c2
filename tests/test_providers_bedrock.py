"""The bedrock provider's own promises, through boto3 against a SigV4-checking fake Converse API.

The shared promises (retries, timeouts, bad bodies, secrets) are in
test_providers_contract.py; here: SigV4 signing with the environment's
credentials and region (checked by recomputing the signature), where
credentials may and may not come from, message mapping, model ids, stop
reasons, prices, and what cancelling a call does to its worker thread.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from itas.agents.providers import make_provider
from itas.agents.providers.bedrock import BedrockProvider, to_converse
from itas.agents.providers.prices import price_for
from itas.errors import ConfigError, ProviderError
from tests.provider_vendors import AWS, FAST_RETRIES, isolate_aws, set_test_credentials
from tests.servers.fake_llm import COMPLETION_TOKENS, PROMPT_TOKENS, FakeLLMServer

pytestmark = pytest.mark.anyio

LLAMA = "meta.llama3-70b-instruct-v1:0"
CLAUDE = "us.anthropic.claude-3-5-sonnet-20240620-v1:0"
USER = [{"role": "user", "content": "Capital of France?"}]


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    set_test_credentials(monkeypatch)


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(reply_text="Paris", aws_credentials=AWS) as fake:
        yield fake


def provider(server: FakeLLMServer, **settings: Any) -> BedrockProvider:
    return BedrockProvider({"base_url": server.url, **FAST_RETRIES, **settings})


async def complete(server: FakeLLMServer, messages: Any = USER, **kwargs: Any) -> Any:
    settings = kwargs.pop("settings", {})
    p = provider(server, **settings)
    try:
        return await p.complete(messages, **{"model": LLAMA, **kwargs})
    finally:
        await p.aclose()


async def test_converse_request_signed_with_the_environment_credentials(
    server: FakeLLMServer,
) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "user", "content": "One word."},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And Italy?"},
    ]
    result = await complete(server, messages, model=CLAUDE, temperature=0.3, max_tokens=100)
    assert result.text == "Paris" and result.finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )
    assert server.signature_problems == []
    (request,) = server.posts()
    assert request.path == "/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    body = request.json()
    assert body["system"] == [{"text": "You are terse."}]
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "Capital of France?"}, {"text": "One word."}]},
        {"role": "assistant", "content": [{"text": "Paris."}]},
        {"role": "user", "content": [{"text": "And Italy?"}]},
    ]
    assert body["inferenceConfig"] == {"maxTokens": 100, "temperature": 0.3}
    assert request.headers["x-amz-security-token"]  # the session token is sent, and signed
    assert "x-amz-security-token" in request.headers["authorization"]
    assert AWS.secret not in repr(request.headers) and AWS.secret.encode() not in request.body


async def test_wrong_secret_is_refused_by_the_signature_check(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-right-secret-at-all-0123")
    with pytest.raises(ProviderError) as caught:
        await complete(server)
    assert caught.value.status == 403 and "InvalidSignature" in str(caught.value)
    assert server.signature_problems == ["signature does not match"]
    assert len(server.posts()) == 1  # a 403 is not retried


async def test_region_comes_from_the_environment_or_the_setting(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    with pytest.raises(ProviderError):
        await complete(server)
    assert server.signature_problems == ["signed with region 'eu-central-1', expected 'us-west-2'"]
    result = await complete(server, settings={"region": AWS.region})
    assert result.text == "Paris"
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS.region)
    assert (await complete(server)).text == "Paris"
    assert len(server.signature_problems) == 1


def test_missing_region_or_credentials_are_config_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    isolate_aws(monkeypatch)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS.secret)
    with pytest.raises(ConfigError, match="no AWS region: set AWS_REGION"):
        make_provider("bedrock", {})
    monkeypatch.setenv("AWS_REGION", AWS.region)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError, match="no AWS credentials on the agent's machine"):
        make_provider("bedrock", {})
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key-0123456789")
    assert make_provider("bedrock", {"cache": False}).name == "bedrock"


def test_credentials_never_come_from_settings() -> None:
    with pytest.raises(ConfigError, match="'api_key_env' does not apply"):
        make_provider("bedrock", {"api_key_env": "AWS_SECRET_ACCESS_KEY"})
    with pytest.raises(ConfigError, match="'api_key' is not allowed"):
        make_provider("bedrock", {"api_key": "AKIA..."})
    with pytest.raises(ConfigError, match="unknown setting\\(s\\) 'aws_secret_access_key'"):
        make_provider("bedrock", {"aws_secret_access_key": "x"})


async def test_archon_model_names_and_limits(server: FakeLLMServer) -> None:
    """Archon names its Bedrock Llama "bedrock/meta.llama3-70b-instruct-v1:0" (litellm style)."""
    result = await complete(
        server, model=f"bedrock/{LLAMA}", temperature=1.4, max_tokens=200000
    )
    request = server.posts()[0]
    assert request.path == "/model/meta.llama3-70b-instruct-v1%3A0/converse"
    assert request.json()["inferenceConfig"] == {"maxTokens": 2048, "temperature": 1.0}
    assert result.adjustments == (
        f"max_tokens 200000 clamped to 2048 for bedrock/{LLAMA}",
        f"temperature 1.4 clamped to 1 for bedrock/{LLAMA}",
    )


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length")],
)
async def test_stop_reasons_in_the_common_words(
    server: FakeLLMServer, stop: str, finish: str
) -> None:
    body = server.converse_reply(LLAMA, {})
    body["stopReason"] = stop
    server.send_body(body)
    assert (await complete(server)).finish_reason == finish


@pytest.mark.parametrize("stop", ["guardrail_intervened", "content_filtered"])
async def test_a_filtered_reply_is_a_clear_error_and_not_retried(
    server: FakeLLMServer, stop: str
) -> None:
    body = server.converse_reply(LLAMA, {})
    body["stopReason"] = stop
    server.send_body(body, times=5)
    with pytest.raises(ProviderError, match=f"reply stopped by Bedrock \\({stop}\\)"):
        await complete(server)
    assert len(server.posts()) == 1


async def test_malformed_model_output_is_retried(server: FakeLLMServer) -> None:
    body = server.converse_reply(LLAMA, {})
    body["stopReason"] = "malformed_model_output"
    server.send_body(body)
    assert (await complete(server)).text == "Paris" and len(server.posts()) == 2


async def test_claude_on_bedrock_is_priced_at_anthropic_list_prices(
    server: FakeLLMServer,
) -> None:
    result = await complete(server, model=CLAUDE)
    price = price_for("claude-3-5-sonnet-20240620")
    assert price is not None and result.usage.cost_known
    assert result.usage.cost_usd == pytest.approx(price.cost(PROMPT_TOKENS, COMPLETION_TOKENS))
    assert (await complete(server)).usage.cost_known is (price_for(LLAMA) is not None)


def test_conversation_mapping_rejects_what_converse_cannot_take() -> None:
    with pytest.raises(ProviderError, match="start with a user message"):
        to_converse([{"role": "system", "content": "only a system prompt"}])
    with pytest.raises(ProviderError, match="start with a user message"):
        to_converse([{"role": "assistant", "content": "hello"}, {"role": "user", "content": "x"}])
    with pytest.raises(ProviderError, match="unknown role 'tool'"):
        to_converse([{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}])
    system, turns = to_converse([{"role": "system", "content": "  "}, *USER])
    assert system == [] and turns == [{"role": "user", "content": [{"text": USER[0]["content"]}]}]


def _threads_inside_botocore() -> int:
    """Threads whose stack is inside a botocore HTTP send right now."""
    count = 0
    for ident, frame in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        stack = frame
        while stack is not None:
            if stack.f_code.co_name == "_send" and "botocore" in stack.f_code.co_filename:
                count += 1
                break
            stack = stack.f_back
    return count


async def test_a_cancelled_call_returns_at_once_and_its_thread_ends_by_the_timeout(
    server: FakeLLMServer,
) -> None:
    server.stall(30.0)
    p = provider(server, timeout_s=2.0, max_attempts=1)
    try:
        with anyio.move_on_after(0.3) as scope:
            await p.complete(USER, model=LLAMA)
        assert scope.cancelled_caught
        # The call returned while its thread still waits on the socket: it did not wait for it.
        assert _threads_inside_botocore() == 1
        # The server stalls for 30 s; the thread must give up by its 2 s read timeout.
        deadline = time.monotonic() + 20.0
        while _threads_inside_botocore() and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        assert _threads_inside_botocore() == 0
    finally:
        await p.aclose()


def test_the_fake_servers_signature_check_catches_tampering() -> None:
    """The check the fake Bedrock applies is strict: any change after signing is caught."""
    from urllib.parse import urlsplit

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from tests.servers.sigv4 import signature_problem

    body = b'{"messages": []}'
    request = AWSRequest(method="POST", url="http://127.0.0.1:9/model/m%3A0/converse", data=body,
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(AWS.key_id, AWS.secret), "bedrock", AWS.region).add_auth(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    headers["host"] = "127.0.0.1:9"
    good = {"method": "POST", "raw_path": urlsplit(request.url).path, "headers": headers,
            "body": body, "key_id": AWS.key_id, "secret": AWS.secret, "region": AWS.region,
            "service": "bedrock"}
    assert signature_problem(**good) is None
    tampered = [
        {"body": b'{"messages": [1]}'},
        {"raw_path": "/model/other%3A0/converse"},
        {"method": "PUT"},
        {"headers": {**headers, "content-type": "text/plain"}},
        {"headers": {**headers, "authorization": "Bearer x"}},
        {"secret": "another-secret"},
        {"service": "s3"},
    ]
    for change in tampered:
        assert signature_problem(**{**good, **change}) is not None, change
