"""A spec's endpoints reach the agents: one model name on two OpenAI-compatible servers is two
services, and each server sees exactly the calls its components make."""

from __future__ import annotations

import pytest

from itas.client import AsyncClient
from itas.deploy import pool_for
from itas.spec import parse_architecture
from tests.helpers import FAST_HEARTBEAT, Processes, wait_for_workers
from tests.servers.fake_llm import FakeLLMServer

pytestmark = pytest.mark.anyio


async def test_the_same_model_on_two_servers_is_two_services(procs: Processes) -> None:
    with FakeLLMServer(reply_text="from the first server") as first, \
            FakeLLMServer(reply_text="from the second server") as second:
        arch = parse_architecture({"name": "two_endpoints", "final": "first", "layers": [[
            {"technique": "generator", "provider": "openai", "model": "same-model",
             "base_url": first.url + "/v1", "samples": 3, "parse_retries": 0},
            {"technique": "generator", "provider": "openai", "model": "same-model",
             "base_url": second.url + "/v1", "samples": 2, "parse_retries": 0}]]})
        assert len(arch.services) == 2
        broker = procs.broker()
        for entry in pool_for(arch):  # agents exactly as the spec places them
            procs.agent(broker.endpoint, entry.kind, {**entry.settings, "cache": False})
        procs.agent(broker.endpoint, "orchestrator")
        for service in (*arch.services, "orchestrator"):
            wait_for_workers(broker.endpoint, service, 1)
        async with AsyncClient(broker.endpoint, heartbeat_interval=FAST_HEARTBEAT,
                               timeout=60) as client:
            answer = await client.ask("q", architecture=arch, trace=True)
    texts = [c["text"] for c in answer.candidates]
    assert texts == ["from the first server"] * 3 + ["from the second server"] * 2
    assert len(first.posts()) == 3 and len(second.posts()) == 2
    assert {p.json()["model"] for p in first.posts() + second.posts()} == {"same-model"}
