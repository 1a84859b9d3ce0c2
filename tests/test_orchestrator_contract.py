"""The two-sided contract, from the orchestrator's side: a hostile agent's reply (not a map,
missing or mistyped fields, huge values, extra fields, impossible usage, more candidates than
asked, candidates it was not given) is one failed call with a trace entry saying what was
wrong; the query still answers from the calls that kept the contract. Real processes: broker,
sim agents, hostile agents (``tests.servers.hostile_agent``) and an orchestrator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from itas.client import AsyncClient
from itas.errors import RemoteError
from tests.helpers import FAST_HEARTBEAT, Processes, wait_for_workers
from tests.servers.hostile_agent import MODES

pytestmark = pytest.mark.anyio

KEY = {"id": "contract/1", "answer": "The answer is 42.", "wrong": ["The answer is 41."],
       "difficulty": 0.2}
GOOD = {"technique": "generator", "provider": "sim", "model": "strong", "samples": 2}
WRITER_MODES = sorted(set(MODES) - {"unknown_candidate", "score_out_of_range"})
JUDGE_MODES = ["unknown_candidate", "score_out_of_range", "missing_text", "extra_field",
               "two_candidates", "usage_not_a_number", "error_reply"]
WHY = {
    "not_a_map": "reply: must be a map",
    "missing_text": "text: missing; must be a string",
    "missing_usage": "missing field(s) ['usage']",
    "text_not_a_string": "text: must be a string, got int",
    "huge_text": "characters; at most 1000000",
    "extra_field": "unknown field(s) ['sneaky']",
    "usage_not_a_number": "reply.usage.calls: must be an integer",
    "negative_usage": "reply.usage.prompt_tokens: must be an integer in [0,",
    "more_calls_than_allowed": "10000 calls made; the request allowed",
    "two_candidates": "must hold exactly 1 new candidate, got 2",
    "unknown_candidate": "must return each candidate it was given once: unknown ['not-sent']",
    "score_out_of_range": "score: must be a number in [0.0, 1.0], got 7.5",
    "error_reply": "provider_error",
}
JUDGE_WHY = {**WHY, "two_candidates": "must return each candidate it was given once: unknown"}


@pytest.fixture(scope="module")
def mesh() -> Iterator[str]:
    procs = Processes()
    try:
        broker = procs.broker()
        procs.agent(broker.endpoint, "generator", {"provider": "sim", "model": "strong"})
        procs.agent(broker.endpoint, "critic", {"provider": "sim", "model": "strong"})
        procs.agent(broker.endpoint, "orchestrator")
        procs.spawn("--broker", broker.endpoint, "--technique", "generator", *WRITER_MODES,
                    module="tests.servers.hostile_agent")
        procs.spawn("--broker", broker.endpoint, "--technique", "critic", *JUDGE_MODES,
                    module="tests.servers.hostile_agent")
        for service in ["generator@sim:strong", "critic@sim:strong", "orchestrator",
                        *(f"generator@sim:hostile-{m}" for m in WRITER_MODES),
                        *(f"critic@sim:hostile-{m}" for m in JUDGE_MODES)]:
            wait_for_workers(broker.endpoint, service, 1)
        yield broker.endpoint
    finally:
        procs.stop_all()


@pytest.mark.parametrize("mode", WRITER_MODES)
async def test_a_hostile_writer_is_one_failed_call_and_the_layer_goes_on(mesh: str,
                                                                        mode: str) -> None:
    arch = {"name": f"hostile-{mode}", "final": "first", "layers": [[
        GOOD, {"technique": "generator", "provider": "sim", "model": f"hostile-{mode}"}]]}
    async with AsyncClient(mesh, heartbeat_interval=FAST_HEARTBEAT, timeout=30) as client:
        answer = await client.ask("q", architecture=arch, trace=True, sim=KEY)
    good, hostile = answer.trace["layers"][0]["components"]
    assert not good["failed"] and len(answer.candidates) == 2
    [failure] = hostile["failed"]
    assert WHY[mode] in failure, failure
    assert answer.usage["calls"] == 2  # only what kept the contract is counted as usage
    assert answer.calls_spent is not None and answer.calls_spent >= 2


@pytest.mark.parametrize("mode", JUDGE_MODES)
async def test_a_hostile_judge_is_one_failed_call_and_cannot_touch_candidates(mesh: str,
                                                                             mode: str) -> None:
    arch = {"name": f"hostile-critic-{mode}", "final": "first", "layers": [
        [GOOD],
        [{"technique": "critic", "provider": "sim", "model": "strong"},
         {"technique": "critic", "provider": "sim", "model": f"hostile-{mode}"}]]}
    async with AsyncClient(mesh, heartbeat_interval=FAST_HEARTBEAT, timeout=30) as client:
        answer = await client.ask("q", architecture=arch, trace=True, sim=KEY)
    layer = answer.trace["layers"][1]
    good, hostile = layer["components"]
    assert not good["failed"]
    assert len(hostile["failed"]) == hostile["requests"] == 2
    assert all(JUDGE_WHY[mode] in f for f in hostile["failed"]), hostile["failed"]
    written = {c["id"]: c["text"] for c in answer.trace["layers"][0]["candidates"]}
    assert {c["id"]: c["text"] for c in layer["candidates"]} == written  # nobody rewrote one
    assert all(c.get("critique") for c in layer["candidates"])


async def test_a_layer_whose_every_call_broke_the_contract_is_a_clear_error(mesh: str) -> None:
    arch = {"name": "all-hostile", "layers": [[
        {"technique": "generator", "provider": "sim", "model": "hostile-missing_text"}]]}
    async with AsyncClient(mesh, heartbeat_interval=FAST_HEARTBEAT, timeout=30) as client:
        with pytest.raises(RemoteError) as failure:
            await client.ask("q", architecture=arch, sim=KEY)
    assert failure.value.code == "no_candidates"
    assert "bad reply from generator@sim:hostile-missing_text" in failure.value.message
