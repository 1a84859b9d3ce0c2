"""Unreadable LLM output: bounded re-asks, then the documented fallback, recorded in the reply.

The agents are real processes behind a real broker, using the ``openai`` provider over real
HTTP against a local OpenAI-compatible server that answers with a script of texts (then with
text no technique can read). The server records every request, so the tests see exactly how
many calls each output took and what the re-ask said.
"""

from __future__ import annotations

import collections
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from itas.client import AsyncClient
from tests.helpers import Processes
from tests.servers.fake_llm import COMPLETION_TOKENS, PROMPT_TOKENS, FakeLLMServer
from tests.test_techniques_agents import TIMEOUT_S, wait_for_services

pytestmark = pytest.mark.anyio

GARBAGE = "Hmm, these all look interesting in their own way."
QUERY = [{"role": "user", "content": "What is 6 * 7?"}]
KINDS = ("generator", "critic", "ranker", "fuser", "verifier", "unit_test_generator",
         "unit_test_evaluator")


class ScriptedLLM(FakeLLMServer):
    """Answers with the queued texts in order, then with ``GARBAGE``."""

    def __init__(self) -> None:
        super().__init__(reply_text=GARBAGE)
        self.script: collections.deque[str] = collections.deque()

    def openai_reply(self, request: dict[str, Any]) -> dict[str, Any]:
        reply = super().openai_reply(request)
        with contextlib.suppress(IndexError):  # an empty script: the default reply
            reply["choices"][0]["message"]["content"] = self.script.popleft()
        return reply

    def bodies(self, since: int) -> list[dict[str, Any]]:
        return [post.json() for post in self.posts()[since:]]


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


@pytest.fixture(scope="module")
def mesh(llm: ScriptedLLM) -> Iterator[str]:
    processes = Processes()
    settings = {"provider": "openai", "model": "fake", "base_url": llm.url + "/v1",
                "cache": False}
    try:
        broker = processes.broker()
        for kind in KINDS:
            processes.agent(broker.endpoint, kind, settings)
        processes.agent(broker.endpoint, "verifier",
                        {**settings, "model": "fake-once", "parse_retries": 0})
        wanted = {f"{kind}@openai:fake": 1 for kind in KINDS} | {"verifier@openai:fake-once": 1}
        wait_for_services(broker.endpoint, wanted)
        yield broker.endpoint
    finally:
        processes.stop_all()


@pytest.fixture
def client(mesh: str) -> AsyncClient:
    return AsyncClient(mesh)


def cands(*texts: str) -> list[dict[str, Any]]:
    return [{"id": f"c{i}", "text": t} for i, t in enumerate(texts)]


def assert_fell_back(record: dict[str, Any], fallback: str, retries: int = 2) -> None:
    assert record["ok"] is False and record["method"] == "fallback"
    assert record["retries"] == retries and record["fallback"] == fallback
    assert GARBAGE[:20] in record["detail"]


async def test_ranker_re_asks_twice_then_keeps_input_order(client: AsyncClient,
                                                          llm: ScriptedLLM) -> None:
    before = len(llm.posts())
    async with client:
        reply = await client.request("ranker@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42", "420"), "params": {"top_k": 2},
            "sim": {"id": "q", "answer": "SECRET-ANSWER-KEY"}}, timeout=TIMEOUT_S)
    bodies = llm.bodies(before)
    assert len(bodies) == 3  # one call and two re-asks, then it stops
    first, second, third = (b["messages"] for b in bodies)
    assert [m["role"] for m in first] == ["system", "user"]
    assert second[:2] == first and third[:2] == first
    assert second[2] == {"role": "assistant", "content": GARBAGE}
    assert second[3]["role"] == "user" and "there is no 'Ranking:' line" in second[3]["content"]
    assert "Ranking: [i] > [j]" in second[3]["content"]
    assert "SECRET-ANSWER-KEY" not in json.dumps(bodies)  # the sim key never reaches a model
    (record,) = reply["parse"]
    assert_fell_back(record, "input_order")
    assert [c["id"] for c in reply["candidates"]] == ["c0", "c1"]
    assert reply["usage"] == {
        "calls": 3, "prompt_tokens": 3 * PROMPT_TOKENS, "completion_tokens": 3 * COMPLETION_TOKENS,
        "tokens": 3 * (PROMPT_TOKENS + COMPLETION_TOKENS), "latency_s": pytest.approx(reply["usage"]["latency_s"]), "cost_usd": 0.0,
        "cached_calls": 0, "cost_known": False}


async def test_an_answered_re_ask_is_parsed(client: AsyncClient, llm: ScriptedLLM) -> None:
    llm.script.extend([GARBAGE, "I compared them.\n**Ranking:** [3] > [1] > [2]"])
    before = len(llm.posts())
    async with client:
        reply = await client.request("ranker@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42", "420")}, timeout=TIMEOUT_S)
    assert len(llm.bodies(before)) == 2
    (record,) = reply["parse"]
    assert (record["ok"], record["method"], record["retries"], record["fallback"]) == (
        True, "ranking_line", 1, None)
    assert [c["id"] for c in reply["candidates"]] == ["c2", "c0", "c1"]
    assert [c["score"] for c in reply["candidates"]] == [1.0, 0.5, 0.0]


async def test_pairwise_unreadable_comparisons_are_ties(client: AsyncClient,
                                                       llm: ScriptedLLM) -> None:
    before = len(llm.posts())
    async with client:
        reply = await client.request("ranker@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42", "420"),
            "params": {"mode": "pairwise"}}, timeout=TIMEOUT_S)
    assert len(llm.bodies(before)) == 9  # 3 pairs x 3 attempts
    assert len(reply["parse"]) == 3
    for record in reply["parse"]:
        assert_fell_back(record, "tie")
    assert [record["detail"].split(":")[0] for record in reply["parse"]] == [
        "c0 vs c1", "c0 vs c2", "c1 vs c2"]
    assert [(c["id"], c["meta"]["wins"]) for c in reply["candidates"]] == [
        ("c0", 1.0), ("c1", 1.0), ("c2", 1.0)]


async def test_verifier_fails_closed_and_keeps_the_set(client: AsyncClient,
                                                      llm: ScriptedLLM) -> None:
    async with client:
        before = len(llm.posts())
        reply = await client.request("verifier@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42")}, timeout=TIMEOUT_S)
        calls = len(llm.bodies(before))
        before = len(llm.posts())
        once = await client.request("verifier@openai:fake-once", {
            "messages": QUERY, "candidates": cands("41", "42")}, timeout=TIMEOUT_S)
        once_calls = len(llm.bodies(before))
        llm.script.extend(["Checked: 6 * 7 = 42.\nVerdict: **PASS**"])
        passed = await client.request("verifier@openai:fake", {
            "messages": QUERY, "candidates": cands("42")}, timeout=TIMEOUT_S)
    assert calls == 6
    for record in reply["parse"]:
        assert_fell_back(record, "fail_closed")
    assert [(c["id"], c["verdict"]) for c in reply["candidates"]] == [("c0", False), ("c1", False)]
    assert [n["code"] for n in reply["notes"]] == ["none_passed"]
    assert once_calls == 2  # parse_retries: 0 means no re-ask
    for record in once["parse"]:
        assert_fell_back(record, "fail_closed", retries=0)
    assert passed["parse"][0]["method"] == "verdict_line" and passed["parse"][0]["ok"]
    assert passed["candidates"][0]["verdict"] is True
    assert "6 * 7 = 42" in passed["candidates"][0]["meta"]["verification"]


async def test_critic_keeps_raw_text_as_the_critique(client: AsyncClient) -> None:
    async with client:
        reply = await client.request("critic@openai:fake", {
            "messages": QUERY, "candidates": cands("42")}, timeout=TIMEOUT_S)
    assert_fell_back(reply["parse"][0], "raw_text")
    assert reply["candidates"][0]["critique"] == GARBAGE


async def test_evaluator_counts_missing_test_verdicts_as_failed(client: AsyncClient,
                                                               llm: ScriptedLLM) -> None:
    partial = "Test 1: PASS\nTest 3: FAIL"
    llm.script.extend([partial] * 3)
    async with client:
        reply = await client.request("unit_test_evaluator@openai:fake", {
            "messages": QUERY, "candidates": cands("42"),
            "tests": ["states 42", "shows 6 * 7", "is short"]}, timeout=TIMEOUT_S)
    record = reply["parse"][0]
    assert (record["ok"], record["fallback"], record["retries"]) == (
        False, "missing_as_failed", 2)
    assert "no PASS/FAIL line for test(s) 2" in record["detail"]
    (graded,) = reply["candidates"]
    assert graded["meta"]["test_results"] == [True, False, False]
    assert (graded["tests_passed"], graded["tests_total"], graded["verdict"]) == (1, 3, False)


async def test_no_tests_written_means_no_ranking(client: AsyncClient) -> None:
    async with client:
        written = await client.request("unit_test_generator@openai:fake", {
            "messages": QUERY, "params": {"task": "code"}}, timeout=TIMEOUT_S)
        evaluated = await client.request("unit_test_evaluator@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42"), "tests": written["tests"],
            "params": {"top_k": 1}}, timeout=TIMEOUT_S)
    assert written["tests"] == []
    assert_fell_back(written["parse"][0], "no_tests")
    assert "not valid Python" in written["parse"][0]["detail"]
    assert [c["id"] for c in evaluated["candidates"]] == ["c0"]
    assert [n["code"] for n in evaluated["notes"]] == ["no_tests"]
    assert evaluated["usage"]["calls"] == 0


async def test_free_text_techniques_accept_text_and_re_ask_empty_output(
        client: AsyncClient, llm: ScriptedLLM) -> None:
    async with client:
        generated = await client.request("generator@openai:fake", {"messages": QUERY},
                                         timeout=TIMEOUT_S)
        llm.script.extend(["", "  "])
        retried = await client.request("generator@openai:fake", {"messages": QUERY},
                                       timeout=TIMEOUT_S)
        llm.script.extend([""] * 3)
        fused = await client.request("fuser@openai:fake", {
            "messages": QUERY, "candidates": cands("It is 42.", "42")}, timeout=TIMEOUT_S)
    assert generated["candidates"][0]["text"] == GARBAGE
    assert generated["parse"][0]["method"] == "text" and generated["parse"][0]["ok"]
    assert generated["candidates"][0]["id"] == "generator@openai:fake#0"
    assert retried["parse"][0]["retries"] == 2 and retried["parse"][0]["ok"]
    assert retried["candidates"][0]["text"] == GARBAGE
    assert fused["parse"][0]["fallback"] == "first_candidate"
    assert fused["candidates"][0]["text"] == "It is 42."
