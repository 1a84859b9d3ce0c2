"""Gemini and Bedrock agents in real agent processes, answering through a real broker.

Each agent process runs the real provider (google-genai, boto3) against the fake
vendor server, with its credentials only in that agent's environment. A client
asks the generator services as any user would; transient 429/5xx are retried
inside the agent; an unreadable provider body reaches the client as a
``provider_error`` that says so, never as ``internal``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from itas.client import AsyncClient
from itas.errors import RemoteError
from itas.techniques.base import service_name
from tests.helpers import FAST_HEARTBEAT, Processes
from tests.provider_vendors import AWS, AWS_SESSION_TOKEN, GEMINI_SECRET
from tests.servers.fake_llm import FakeLLMServer
from tests.test_techniques_agents import wait_for_services

pytestmark = pytest.mark.anyio

MODELS = {"gemini": "gemini-1.5-pro-001", "bedrock": "bedrock/meta.llama3-70b-instruct-v1:0",
          "openai": "fake"}
TIMEOUT_S = 60.0
FAST = {"retry_base_delay_s": 0.01, "retry_max_delay_s": 0.05, "cache": False}
QUESTION = [{"role": "user", "content": "Capital of France?"}]
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": AWS.key_id,
    "AWS_SECRET_ACCESS_KEY": AWS.secret,
    "AWS_SESSION_TOKEN": AWS_SESSION_TOKEN,
    "AWS_REGION": AWS.region,
    "AWS_CONFIG_FILE": "/nonexistent/itas-test/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/itas-test/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def generator(processes: Processes, broker: str, settings: dict[str, Any],
              env: dict[str, str] | None = None) -> None:
    """A generator agent whose secrets live only in its own environment."""
    processes.spawn("agent", "--kind", "generator", "--broker", broker, "--heartbeat",
                    str(FAST_HEARTBEAT), "--settings", json.dumps(settings), env=env)


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(reply_text="Paris", aws_credentials=AWS) as server:
        yield server


def services(llm: FakeLLMServer) -> dict[str, str]:
    """The agents' service names: each serves its own endpoint, the fake server."""
    return {
        "gemini": service_name("generator", "gemini", MODELS["gemini"], base_url=llm.url,
                               api_key_env="ITAS_TEST_GEMINI_KEY"),
        "bedrock": service_name("generator", "bedrock", MODELS["bedrock"], base_url=llm.url),
        "openai": service_name("generator", "openai", "fake", base_url=llm.url + "/v1")}


@pytest.fixture(scope="module")
def mesh(llm: FakeLLMServer) -> Iterator[str]:
    processes = Processes()
    try:
        broker = processes.broker()
        generator(processes, broker.endpoint, {
            "provider": "gemini", "model": "gemini-1.5-pro-001", "base_url": llm.url,
            "api_key_env": "ITAS_TEST_GEMINI_KEY", **FAST},
            env={"ITAS_TEST_GEMINI_KEY": GEMINI_SECRET})
        generator(processes, broker.endpoint, {
            "provider": "bedrock", "model": "bedrock/meta.llama3-70b-instruct-v1:0",
            "base_url": llm.url, **FAST}, env=AWS_ENV)
        generator(processes, broker.endpoint, {
            "provider": "openai", "model": "fake", "base_url": llm.url + "/v1",
            "max_attempts": 2, **FAST})
        wait_for_services(broker.endpoint, dict.fromkeys(services(llm).values(), 1))
        yield broker.endpoint
    finally:
        processes.stop_all()


@pytest.mark.parametrize("provider", ["gemini", "bedrock"])
async def test_answers_through_the_mesh_with_retries(
    mesh: str, llm: FakeLLMServer, provider: str
) -> None:
    service = services(llm)[provider]
    async with AsyncClient(mesh) as client:
        before = len(llm.posts())
        for sample in (0, 1):  # a generator request is one sample
            reply = await client.request(service, {"messages": QUESTION,
                                                   "sample_index": sample}, timeout=TIMEOUT_S)
            assert [c["text"] for c in reply["candidates"]] == ["Paris"]
        assert len(llm.posts()) - before == 2
        llm.fail(503)
        llm.fail(429, headers={"Retry-After": "0.2"})
        before = len(llm.posts())
        reply = await client.request(service, {"messages": QUESTION}, timeout=TIMEOUT_S)
        assert [c["text"] for c in reply["candidates"]] == ["Paris"]
        assert len(llm.posts()) - before == 3
    assert llm.signature_problems == []


async def test_an_unreadable_provider_body_is_a_provider_error(
    mesh: str, llm: FakeLLMServer
) -> None:
    llm.send_body(b"<html>502 Bad Gateway</html>", times=2, headers={"content-type": "text/html"})
    async with AsyncClient(mesh) as client:
        with pytest.raises(RemoteError) as caught:
            await client.request(services(llm)["openai"], {"messages": QUESTION},
                                 timeout=TIMEOUT_S)
    assert caught.value.code == "provider_error"
    assert "gave up after 2 attempts" in caught.value.message
    assert "unreadable reply" in caught.value.message
