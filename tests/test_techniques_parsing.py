"""Unreadable LLM output: bounded re-asks, then the documented fallback, recorded in the reply.

The agents are real processes behind a real broker, using the ``openai`` provider over real
HTTP against a local OpenAI-compatible server that answers with a script of texts (then with
text no technique can read). The server records every request, so the tests see exactly how
many calls each output took, what the re-ask said and what each prompt held. Replies are read
the way the orchestrator reads them (``tests.test_techniques_agents.ask``): the contract, the
technique's own check, its merge.

Re-asks are capped twice: per output by the request's ``parse_retries``, per request by its
``max_calls`` (calls before any re-ask plus what re-asks may spend); a re-ask that does not
fit is not made and the fallback's record says so.
"""

from __future__ import annotations

import collections
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from itas.client import AsyncClient
from itas.errors import RemoteError
from itas.techniques.base import endpoint_tag
from itas.techniques.critic import BATCH_HINT
from itas.techniques.verifier import FORMAT_HINT as VERDICT_HINT
from tests.helpers import Processes
from tests.servers.fake_llm import COMPLETION_TOKENS, PROMPT_TOKENS, FakeLLMServer
from tests.test_techniques_agents import TIMEOUT_S, ask, ids, wait_for_services

pytestmark = pytest.mark.anyio

GARBAGE = "Hmm, these all look interesting in their own way."
QUERY = [{"role": "user", "content": "What is 6 * 7?"}]
KINDS = ("generator", "critic", "ranker", "fuser", "verifier", "unit_test_generator",
         "unit_test_evaluator")
NO_REASK_LEFT = "no re-ask left in this request's call budget"


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


@pytest.fixture(autouse=True)
def script_used_up(llm: ScriptedLLM) -> Iterator[None]:
    """Every test starts with an empty script and must use all of what it queued, so a test
    that made fewer calls than it meant to fails here instead of confusing the next one."""
    llm.script.clear()
    yield
    assert not llm.script, f"unused scripted replies: {list(llm.script)}"


class TaggedClient(AsyncClient):
    """Services here are on the scripted server's endpoint: ``x@openai:fake#<tag>``; the
    tests name them ``x@openai:fake``."""

    def __init__(self, broker: str, tag: str) -> None:
        super().__init__(broker)
        self.tag = tag

    async def request(self, service: str, body: Any, *, timeout: float | None = None) -> Any:
        return await super().request(f"{service}#{self.tag}", body, timeout=timeout)


@pytest.fixture(scope="module")
def mesh(llm: ScriptedLLM) -> Iterator[tuple[str, str]]:
    processes = Processes()
    base_url = llm.url + "/v1"
    settings = {"provider": "openai", "model": "fake", "base_url": base_url, "cache": False}
    tag = endpoint_tag("openai", base_url, None)
    assert tag is not None
    try:
        broker = processes.broker()
        for kind in KINDS:
            processes.agent(broker.endpoint, kind, settings)
        wait_for_services(broker.endpoint, {f"{kind}@openai:fake#{tag}": 1 for kind in KINDS})
        yield broker.endpoint, tag
    finally:
        processes.stop_all()


@pytest.fixture
def client(mesh: tuple[str, str]) -> AsyncClient:
    return TaggedClient(*mesh)


def cands(*texts: str) -> list[dict[str, Any]]:
    return [{"id": f"c{i}", "text": t} for i, t in enumerate(texts)]


def assert_fell_back(record: dict[str, Any], fallback: str, retries: int = 2) -> None:
    assert record["ok"] is False and record["method"] == "fallback"
    assert record["retries"] == retries and record["fallback"] == fallback
    assert GARBAGE[:20] in record["detail"]


# -- ranker -------------------------------------------------------------------------------------

async def test_ranker_re_asks_twice_then_ranks_in_input_order_without_scores(
        client: AsyncClient, llm: ScriptedLLM) -> None:
    before = len(llm.posts())
    async with client:
        reply, merged = await ask(client, "ranker@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42", "420"), "params": {"top_k": 2},
            "sim": {"id": "q", "answer": "SECRET-ANSWER-KEY"}})
    bodies = llm.bodies(before)
    assert len(bodies) == 3  # one call and two re-asks, then it stops
    first, second, third = (b["messages"] for b in bodies)
    assert [m["role"] for m in first] == ["system", "user"]
    assert second[:2] == first and third[:2] == first
    assert second[2] == {"role": "assistant", "content": GARBAGE}
    assert second[3]["role"] == "user" and "there is no 'Ranking:' line" in second[3]["content"]
    assert "Ranking: [i] > [j]" in second[3]["content"]
    assert len(third) == 4  # each re-ask shows the last reply only, not a growing transcript
    assert "SECRET-ANSWER-KEY" not in json.dumps(bodies)  # the sim key never reaches a model
    (record,) = reply["parse"]
    assert_fell_back(record, "input_order")
    assert record["detail"].startswith("ranking: ")
    assert [(c["id"], c["rank"], c["score"]) for c in reply["candidates"]] == [
        ("c0", 1, None), ("c1", 2, None), ("c2", 3, None)]
    assert ids(merged.candidates) == ["c0", "c1"]
    usage = reply["usage"]
    assert usage["latency_s"] >= 0
    assert {k: v for k, v in usage.items() if k != "latency_s"} == {
        "calls": 3, "prompt_tokens": 3 * PROMPT_TOKENS, "completion_tokens": 3 * COMPLETION_TOKENS,
        "tokens": 3 * (PROMPT_TOKENS + COMPLETION_TOKENS), "cost_usd": 0.0,
        "cached_calls": 0, "cost_known": False}


async def test_an_answered_re_ask_is_parsed(client: AsyncClient, llm: ScriptedLLM) -> None:
    llm.script.extend([GARBAGE, "I compared them.\n**Ranking:** [3] > [1] > [2]"])
    before = len(llm.posts())
    async with client:
        reply, merged = await ask(client, "ranker@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42", "420"), "params": {"top_k": 1}})
    assert len(llm.bodies(before)) == 2
    (record,) = reply["parse"]
    assert (record["ok"], record["method"], record["retries"], record["fallback"]) == (
        True, "ranking_line", 1, None)
    assert [(c["id"], c["rank"], c["score"]) for c in reply["candidates"]] == [
        ("c0", 2, None), ("c1", 3, None), ("c2", 1, None)]
    assert ids(merged.candidates) == ["c2"]


async def test_pairwise_unreadable_comparisons_are_ties_and_give_no_score(
        client: AsyncClient, llm: ScriptedLLM) -> None:
    before = len(llm.posts())
    async with client:
        reply, merged = await ask(client, "ranker@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42", "420"),
            "params": {"mode": "pairwise", "top_k": 2}})
    assert len(llm.bodies(before)) == 9  # 3 pairs x 3 attempts
    assert len(reply["parse"]) == 3
    for record in reply["parse"]:
        assert_fell_back(record, "tie")
    assert [record["detail"].split(":")[0] for record in reply["parse"]] == [
        "c0 vs c1", "c0 vs c2", "c1 vs c2"]
    assert [(c["id"], c["rank"], c["score"], c["meta"]["wins"], c["meta"]["comparisons_read"])
            for c in reply["candidates"]] == [("c0", 1, None, 1.0, 0), ("c1", 2, None, 1.0, 0),
                                              ("c2", 3, None, 1.0, 0)]
    assert ids(merged.candidates) == ["c0", "c1"]


async def test_pairwise_score_is_the_win_rate_over_comparisons_read(
        client: AsyncClient, llm: ScriptedLLM) -> None:
    """One comparison of three is readable: the score counts it alone. (A made-up tie used
    to count as half a win, giving the winner 1.5, a reply the orchestrator must reject.)"""
    llm.script.append("A is right.\nBetter response: A")
    async with client:
        reply, _ = await ask(client, "ranker@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42", "420"),
            "params": {"mode": "pairwise", "top_k": 1, "parse_retries": 0}})
    assert reply["usage"]["calls"] == 3
    read = [r for r in reply["parse"] if r["ok"]]
    assert len(read) == 1 and read[0]["detail"].endswith("winner A")
    winner, loser = read[0]["detail"].split(":")[0].split(" vs ")
    got = {c["id"]: c for c in reply["candidates"]}
    (other,) = set(got) - {winner, loser}
    assert (got[winner]["score"], got[loser]["score"], got[other]["score"]) == (1.0, 0.0, None)
    assert got[winner]["meta"]["wins"] == 1.5 and got[winner]["rank"] == 1
    assert (got[other]["meta"]["comparisons_read"], got[other]["meta"]["wins"]) == (0, 1.0)


# -- verifier -----------------------------------------------------------------------------------

async def test_verifier_fails_closed_and_the_merge_keeps_the_set(client: AsyncClient,
                                                                llm: ScriptedLLM) -> None:
    async with client:
        before = len(llm.posts())
        reply, merged = await ask(client, "verifier@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42")})
        bodies = llm.bodies(before)
        before = len(llm.posts())
        once, _ = await ask(client, "verifier@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42"), "params": {"parse_retries": 0}})
        once_calls = len(llm.bodies(before))
        llm.script.extend(["Checked: 6 * 7 = 42.\nVerdict: **PASS**"])
        passed, kept = await ask(client, "verifier@openai:fake", {
            "messages": QUERY, "candidates": cands("42")})
    assert len(bodies) == 6
    reask = bodies[-1]["messages"][-1]["content"]
    assert "there is no 'Verdict: PASS' or 'Verdict: FAIL' line" in reask and VERDICT_HINT in reask
    for record in reply["parse"]:
        assert_fell_back(record, "fail_closed")
    assert [(c["id"], c["verdict"]) for c in reply["candidates"]] == [("c0", False), ("c1", False)]
    assert ids(merged.candidates) == ["c0", "c1"]
    assert merged.problems[0].startswith("none_passed")
    assert once_calls == 2  # parse_retries: 0 (a request parameter) means no re-ask
    for record in once["parse"]:
        assert_fell_back(record, "fail_closed", retries=0)
    assert passed["parse"][0]["method"] == "verdict_line" and passed["parse"][0]["ok"]
    assert passed["candidates"][0]["verdict"] is True
    assert "6 * 7 = 42" in passed["candidates"][0]["meta"]["verification"]
    assert ids(kept.candidates) == ["c0"] and not kept.problems


async def test_two_step_verifier_judges_with_the_reasoning_it_wrote(client: AsyncClient,
                                                                  llm: ScriptedLLM) -> None:
    reasoning = "Step 1: 6 * 7 is 42, REASONING-MARK-9917. The response says 42."
    llm.script.extend([reasoning, "The reasoning holds.\nVerdict: PASS"])
    async with client:
        before = len(llm.posts())
        reply, merged = await ask(client, "verifier@openai:fake", {
            "messages": QUERY, "candidates": cands("It is 42."), "params": {"two_step": True}})
        first, second = (b["messages"] for b in llm.bodies(before))
        # An unreadable verdict after good reasoning: only the verdict is re-asked.
        llm.script.append(reasoning)
        before = len(llm.posts())
        unread, _ = await ask(client, "verifier@openai:fake", {
            "messages": QUERY, "candidates": cands("It is 42."), "params": {"two_step": True}})
        unread_bodies = llm.bodies(before)
    assert reasoning not in json.dumps(first) and "It is 42." in first[-1]["content"]
    assert reasoning in second[-1]["content"] and "It is 42." in second[-1]["content"]
    assert len(second) == 2  # a fresh prompt, not a continuation
    assert [(p["ok"], p["method"]) for p in reply["parse"]] == [(True, "text"),
                                                               (True, "verdict_line")]
    (checked,) = reply["candidates"]
    assert checked["verdict"] is True and checked["meta"]["verification"] == reasoning
    assert ids(merged.candidates) == ["c0"]
    assert len(unread_bodies) == 4 and unread["usage"]["calls"] == 4
    assert all(reasoning in b["messages"][1]["content"] for b in unread_bodies[1:])
    assert unread["parse"][0]["ok"] is True
    assert_fell_back(unread["parse"][1], "fail_closed")
    assert unread["candidates"][0]["verdict"] is False


async def test_first_k_verifies_and_evaluates_in_order_and_stops_early(
        client: AsyncClient, llm: ScriptedLLM) -> None:
    async with client:
        llm.script.extend(["Verdict: FAIL", "Verdict: PASS"])
        verified, kept = await ask(client, "verifier@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42", "42.0", "420"),
            "params": {"first_k": 1}, "trace": True})
        llm.script.append("Test 1: PASS\nTest 2: PASS")
        evaluated, chosen = await ask(client, "unit_test_evaluator@openai:fake", {
            "messages": QUERY, "candidates": cands("42", "41", "420"),
            "tests": ["states 42", "is short"], "params": {"first_k": 1}})
    assert verified["usage"]["calls"] == 2  # of 4 candidates
    assert [c["verdict"] for c in verified["candidates"]] == [False, True, None, None]
    assert ["41" in p[-1]["content"] for p in verified["prompts"]] == [True, False]
    assert [n["code"] for n in verified["notes"]] == ["early_stop"]
    assert ids(kept.candidates) == ["c1"]
    assert evaluated["usage"]["calls"] == 1  # of 3 candidates
    assert [c["tests_passed"] for c in evaluated["candidates"]] == [2, None, None]
    assert ids(chosen.candidates) == ["c0"]


# -- the request's call cap ---------------------------------------------------------------------

async def test_max_calls_caps_re_asks(client: AsyncClient, llm: ScriptedLLM) -> None:
    async with client:
        before = len(llm.posts())
        ranked, merged = await ask(client, "ranker@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42", "420"), "params": {"top_k": 2},
            "max_calls": 1})
        ranked_calls = len(llm.bodies(before))
        before = len(llm.posts())
        verified, _ = await ask(client, "verifier@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42"), "max_calls": 3})
        verified_calls = len(llm.bodies(before))
        # More allowed than the parameters use: parse_retries still caps each output.
        before = len(llm.posts())
        generous, _ = await ask(client, "critic@openai:fake", {
            "messages": QUERY, "candidates": cands("42"), "max_calls": 50})
        generous_calls = len(llm.bodies(before))
    # max_calls == the calls before any re-ask: no re-ask, the fallback says why.
    assert ranked_calls == 1 and ranked["usage"]["calls"] == 1
    (record,) = ranked["parse"]
    assert_fell_back(record, "input_order", retries=0)
    assert NO_REASK_LEFT in record["detail"]
    assert [c["rank"] for c in ranked["candidates"]] == [1, 2, 3]
    assert ids(merged.candidates) == ["c0", "c1"]
    # Two outputs, one spare call: exactly one re-ask between them, then both fall back.
    assert verified_calls == verified["usage"]["calls"] == 3
    assert sorted(r["retries"] for r in verified["parse"]) == [0, 1]
    assert all(NO_REASK_LEFT in r["detail"] for r in verified["parse"])
    assert generous_calls == 3
    assert_fell_back(generous["parse"][0], "raw_text")
    assert NO_REASK_LEFT not in generous["parse"][0]["detail"]


async def test_max_calls_below_the_base_is_a_bad_request(client: AsyncClient,
                                                        llm: ScriptedLLM) -> None:
    before = len(llm.posts())
    async with client:
        for service, body, needs in [
            ("verifier@openai:fake", {"candidates": cands("41", "42"), "max_calls": 1}, 2),
            ("critic@openai:fake", {"candidates": cands("41"), "max_calls": 0}, 1),
            ("verifier@openai:fake", {"candidates": cands("41"), "max_calls": 1,
                                      "params": {"two_step": True}}, 2),
        ]:
            with pytest.raises(RemoteError) as failure:
                await client.request(service, {"messages": QUERY, **body}, timeout=TIMEOUT_S)
            assert failure.value.code == "bad_request"
            assert (f"max_calls: is {body['max_calls']}, but this request needs {needs} call(s) "
                    "before any re-ask") in failure.value.message
    assert len(llm.posts()) == before  # refused before any spending


async def test_parse_retries_is_a_request_parameter(client: AsyncClient,
                                                   llm: ScriptedLLM) -> None:
    async with client:
        llm.script.append("")
        none, _ = await ask(client, "generator@openai:fake", {
            "messages": QUERY, "params": {"parse_retries": 0}})
        llm.script.extend([""] * 6)
        most, _ = await ask(client, "generator@openai:fake", {
            "messages": QUERY, "params": {"parse_retries": 5}})
    assert none["usage"]["calls"] == 1
    assert (none["parse"][0]["fallback"], none["parse"][0]["retries"]) == ("empty_text", 0)
    assert none["candidates"][0]["text"] == ""  # the sample count holds
    assert most["usage"]["calls"] == 6
    assert (most["parse"][0]["fallback"], most["parse"][0]["retries"]) == ("empty_text", 5)


# -- critic -------------------------------------------------------------------------------------

async def test_critic_keeps_raw_text_as_the_critique(client: AsyncClient) -> None:
    async with client:
        reply, _ = await ask(client, "critic@openai:fake", {
            "messages": QUERY, "candidates": cands("42")})
    assert_fell_back(reply["parse"][0], "raw_text")
    assert reply["candidates"][0]["critique"] == GARBAGE


REVIEW = "Strengths:\n- {s}\nWeaknesses:\n- {w}"


async def test_batched_critic_reviews_all_candidates_in_one_call(client: AsyncClient,
                                                                llm: ScriptedLLM) -> None:
    # Out of order and decorated: the numbers decide which review is whose.
    llm.script.append("\n\n".join(f"**[{k}]**\n" + REVIEW.format(s=f"s{k}", w=f"w{k}")
                                  for k in (2, 3, 1)))
    before = len(llm.posts())
    async with client:
        reply, merged = await ask(client, "critic@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42", "420"),
            "params": {"batched": True}})
    (body,) = llm.bodies(before)
    prompt = body["messages"][-1]["content"]
    assert all(f"[{k}]\n{t}" in prompt for k, t in ((1, "41"), (2, "42"), (3, "420")))
    (record,) = reply["parse"]
    assert (record["ok"], record["method"]) == (True, "numbered_sections")
    assert [c["critique"] for c in reply["candidates"]] == [
        f"Strengths:\n- s{k}\nWeaknesses:\n- w{k}" for k in (1, 2, 3)]
    assert [c.critique for c in merged.candidates] == [c["critique"] for c in reply["candidates"]]


async def test_batched_critic_keeps_the_sections_it_could_read(client: AsyncClient,
                                                              llm: ScriptedLLM) -> None:
    partial = ("[1]\n" + REVIEW.format(s="clear", w="none") + "\n\n[2]\nStrengths: only\n\n"
               "[3]\n" + REVIEW.format(s="short", w="wrong sum"))
    llm.script.extend([partial] * 3)
    async with client:
        before = len(llm.posts())
        reply, _ = await ask(client, "critic@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42", "420"),
            "params": {"batched": True}})
        bodies = llm.bodies(before)
        llm.script.append(partial)
        once, _ = await ask(client, "critic@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42", "420"),
            "params": {"batched": True, "parse_retries": 0}})
    assert len(bodies) == 3
    reask = bodies[1]["messages"][-1]["content"]
    assert "no readable review for response(s) [2]" in reask and BATCH_HINT in reask
    for got in (reply, once):
        (record,) = got["parse"]
        assert (record["ok"], record["fallback"]) == (False, "sections_found")
        assert "no readable review for response(s) [2]" in record["detail"]
        assert [c["critique"] for c in got["candidates"]] == [
            "Strengths:\n- clear\nWeaknesses:\n- none", None,
            "Strengths:\n- short\nWeaknesses:\n- wrong sum"]
    assert reply["parse"][0]["retries"] == 2 and once["parse"][0]["retries"] == 0
    assert once["usage"]["calls"] == 1


# -- unit tests ---------------------------------------------------------------------------------

async def test_evaluator_counts_missing_test_verdicts_as_failed(client: AsyncClient,
                                                               llm: ScriptedLLM) -> None:
    partial = "Test 1: PASS\nTest 3: FAIL"
    llm.script.extend([partial] * 3)
    async with client:
        reply, _ = await ask(client, "unit_test_evaluator@openai:fake", {
            "messages": QUERY, "candidates": cands("42"),
            "tests": ["states 42", "shows 6 * 7", "is short"]})
    record = reply["parse"][0]
    assert (record["ok"], record["fallback"], record["retries"]) == (
        False, "missing_as_failed", 2)
    assert "no PASS/FAIL line for test(s) 2" in record["detail"]
    (graded,) = reply["candidates"]
    assert graded["meta"]["test_results"] == [True, False, False]
    assert (graded["tests_passed"], graded["tests_total"], graded["verdict"]) == (1, 3, False)


async def test_no_tests_written_means_no_ranking(client: AsyncClient) -> None:
    async with client:
        written, _ = await ask(client, "unit_test_generator@openai:fake", {
            "messages": QUERY, "params": {"task": "code"}})
        evaluated, kept = await ask(client, "unit_test_evaluator@openai:fake", {
            "messages": QUERY, "candidates": cands("41", "42"), "tests": written["tests"],
            "params": {"top_k": 1}})
    assert written["tests"] == []
    assert_fell_back(written["parse"][0], "no_tests")
    assert "not valid Python" in written["parse"][0]["detail"]
    assert [n["code"] for n in evaluated["notes"]] == ["no_tests"]
    assert evaluated["usage"]["calls"] == 0
    assert all(c["tests_total"] is None for c in evaluated["candidates"])
    assert ids(kept.candidates) == ["c0"]
    assert "no candidate was tested" in kept.problems[0]


# -- free text ----------------------------------------------------------------------------------

async def test_free_text_techniques_accept_text_and_re_ask_empty_output(
        client: AsyncClient, llm: ScriptedLLM) -> None:
    async with client:
        generated, _ = await ask(client, "generator@openai:fake", {"messages": QUERY})
        llm.script.extend(["", "  "])
        retried, _ = await ask(client, "generator@openai:fake", {"messages": QUERY})
        llm.script.extend([""] * 3)
        fused, _ = await ask(client, "fuser@openai:fake", {
            "messages": QUERY, "candidates": cands("It is 42.", "42")})
    assert generated["candidates"][0]["text"] == GARBAGE
    assert generated["parse"][0]["method"] == "text" and generated["parse"][0]["ok"]
    assert generated["candidates"][0]["id"] == f"generator@openai:fake#{client.tag}#0"
    assert retried["parse"][0]["retries"] == 2 and retried["parse"][0]["ok"]
    assert retried["candidates"][0]["text"] == GARBAGE
    assert fused["parse"][0]["fallback"] == "first_candidate"
    assert fused["candidates"][0]["text"] == "It is 42."


async def test_fuser_length_is_an_instruction_never_a_cut(client: AsyncClient,
                                                         llm: ScriptedLLM) -> None:
    long = "Six sevens: 7 + 7 + 7 + 7 + 7 + 7.\nThat adds up.\nTHE FINAL ANSWER IS 42."
    llm.script.append(long)
    before = len(llm.posts())
    async with client:
        reply, merged = await ask(client, "fuser@openai:fake", {
            "messages": QUERY, "candidates": cands("It is 42.", "42"), "params": {"length": 3}})
    (body,) = llm.bodies(before)
    assert "Use at most 3 words." in body["messages"][-1]["content"]
    (fused,) = reply["candidates"]
    assert fused["text"] == long and fused["text"].endswith("THE FINAL ANSWER IS 42.")
    assert fused["meta"]["over_length"] == {"words": len(long.split()), "limit": 3}
    assert [n["code"] for n in reply["notes"]] == ["over_length"]
    assert merged.candidates[0].text == long
