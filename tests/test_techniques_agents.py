"""Every technique through a real broker and real agent processes with simulated models.

One broker and the pool file configs/pools/sim.yaml (started by the pool supervisor) serve
the whole module. Simulated models are deterministic, so the statistical checks (a strong
ranker keeps the right answer more often than a weak one and than chance) give the same
result on every run; they would fail if the technique ignored the model's decision, parsed
the wrong format or mixed up candidates.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest

from itas.agents.kinds import build_agent
from itas.agents.pool import load_pool
from itas.agents.providers.sim import is_correct
from itas.client import AsyncClient, Client
from itas.errors import RemoteError
from itas.spec import load_architecture
from tests.helpers import REPO, Processes

pytestmark = pytest.mark.anyio

POOL = REPO / "configs" / "pools" / "sim.yaml"
SIM_ARCHITECTURES = [*sorted((REPO / "configs" / "architectures").glob("sim_*.yaml")),
                     *sorted((REPO / "configs" / "archon").glob("*sim*.json"))]
QUESTIONS = 40
TIMEOUT_S = 30.0
POOL_HEARTBEAT_S = 1.0


def pool_services() -> dict[str, int]:
    services: dict[str, int] = {}
    for entry in load_pool(POOL):
        name = build_agent(entry.kind, entry.settings).service
        services[name] = services.get(name, 0) + entry.replicas
    return services


def wait_for_services(endpoint: str, wanted: dict[str, int], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with Client(endpoint) as client:
        while True:
            live = client.status()["services"]
            missing = {s: n for s, n in wanted.items() if live.get(s, {}).get("workers", 0) < n}
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"services without their workers: {missing}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def mesh() -> Iterator[str]:
    processes = Processes()
    try:
        # The supervisor starts agents with the default heartbeat; the broker must expect it.
        broker = processes.broker("tcp://127.0.0.1:0", "--heartbeat", str(POOL_HEARTBEAT_S))
        processes.spawn("agents", "--pool", str(POOL), "--broker", broker.endpoint)
        wait_for_services(broker.endpoint, pool_services())
        yield broker.endpoint
    finally:
        processes.stop_all()


# -- questions with hand-made answer keys -------------------------------------------------------

def key(i: int, difficulty: float = 0.5) -> dict[str, Any]:
    return {"id": f"t{i}", "answer": f"The answer is {i + 100}.",
            "wrong": [f"The answer is {i + 101}.", f"The answer is {i + 99}.",
                      f"The answer is {10 * (i + 100)}."],
            "difficulty": difficulty}


def query(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question {i}: what is {i} + 100?"}]


def candidates(texts: list[str], rotate: int = 0) -> list[dict[str, Any]]:
    """Candidates c0.. with the texts rotated, so the right answer is not always first."""
    shift = rotate % len(texts)
    texts = texts[shift:] + texts[:shift]
    return [{"id": f"c{j}", "text": t, "model": "test"} for j, t in enumerate(texts)]


async def fan_out(count: int, one: Callable[[int], Awaitable[None]]) -> None:
    async with anyio.create_task_group() as tg:
        for i in range(count):
            tg.start_soon(one, i)


def assert_parsed_ok(reply: dict[str, Any], calls: int) -> None:
    assert len(reply["parse"]) == calls
    assert all(p["ok"] and p["retries"] == 0 and p["fallback"] is None for p in reply["parse"])
    assert reply["usage"]["calls"] == calls


# -- the pool --------------------------------------------------------------------------------

def test_pool_serves_every_service_of_the_sim_architectures() -> None:
    served = set(pool_services())
    assert len(SIM_ARCHITECTURES) >= 6
    for path in SIM_ARCHITECTURES:
        needed = set(load_architecture(path).services)
        assert needed <= served, f"{path.name} needs {sorted(needed - served)}"


async def test_bad_requests_get_clear_errors(mesh: str) -> None:
    async with AsyncClient(mesh) as client:
        cases = [
            ("ranker@sim:strong", {"messages": query(1), "candidates": [], "params": {"topk": 1}},
             "params: unknown parameter(s) ['topk']"),
            ("ranker@sim:strong", {"messages": query(1), "params": {"mode": "tournament"}},
             "params.mode: must be one of"),
            ("code_tester", {"candidates": candidates(["x = 1"])}, "tests: required"),
            ("critic@sim:medium", {"messages": [], "candidates": candidates(["a"])},
             "messages: must hold the query"),
            ("verifier@sim:strong", {"messages": query(1), "candidates": [{"id": "a"}]},
             "candidates[0].text: required"),
        ]
        for service, body, expected in cases:
            with pytest.raises(RemoteError) as failure:
                await client.request(service, body, timeout=TIMEOUT_S)
            assert failure.value.code == "bad_request"
            assert expected in failure.value.message
        # The agents are still serving after bad input.
        reply = await client.request("majority_vote", {"candidates": candidates(["7"])})
        assert reply["candidates"][0]["answer"] == "7"


# -- generator ----------------------------------------------------------------------------------

async def test_generator_samples_ids_and_skill(mesh: str) -> None:
    correct = {"strong": 0, "weak": 0}
    async with AsyncClient(mesh) as client:
        reply = await client.request("generator@sim:strong", {
            "messages": query(1), "params": {"n": 3}, "sample_index": 5, "sim": key(1)})
        assert [c["id"] for c in reply["candidates"]] == [
            "generator@sim:strong#5", "generator@sim:strong#6", "generator@sim:strong#7"]
        assert {c["model"] for c in reply["candidates"]} == {"generator@sim:strong"}
        assert_parsed_ok(reply, 3)
        # One request per sample gives the same candidate as the batch did.
        single = await client.request("generator@sim:strong", {
            "messages": query(1), "sample_index": 6, "sim": key(1)})
        assert single["candidates"][0] == reply["candidates"][1]
        # "samples" (the spec's name) is an alias of n; n wins, as the orchestrator sends both.
        spec_style = await client.request("generator@sim:strong", {
            "messages": query(1), "params": {"samples": 3, "n": 1}, "sim": key(1)})
        alias = await client.request("generator@sim:strong", {
            "messages": query(1), "params": {"samples": 2}, "sim": key(1)})
        assert len(spec_style["candidates"]) == 1 and len(alias["candidates"]) == 2

        async def one(i: int) -> None:
            for model in correct:
                got = await client.request(f"generator@sim:{model}", {
                    "messages": query(i), "params": {"n": 3, "temperature": 1.0},
                    "sim": key(i)}, timeout=TIMEOUT_S)
                correct[model] += sum(is_correct(c["text"], key(i)) for c in got["candidates"])

        await fan_out(QUESTIONS, one)
    samples = 3 * QUESTIONS
    assert correct["strong"] > 0.7 * samples
    assert correct["weak"] < 0.6 * samples
    assert correct["strong"] > correct["weak"] + 0.2 * samples


# -- critic -------------------------------------------------------------------------------------

async def test_critic_annotates_each_candidate_in_order(mesh: str) -> None:
    flagged = {"right": 0, "wrong": 0}
    async with AsyncClient(mesh) as client:
        async def one(i: int) -> None:
            sent = candidates([key(i)["answer"], key(i)["wrong"][0]], rotate=i)
            reply = await client.request("critic@sim:medium", {
                "messages": query(i), "candidates": sent, "sim": key(i)}, timeout=TIMEOUT_S)
            got = reply["candidates"]
            assert [c["id"] for c in got] == [c["id"] for c in sent]
            assert [c["text"] for c in got] == [c["text"] for c in sent]
            assert_parsed_ok(reply, 2)
            assert all(p["method"] == "sections" for p in reply["parse"])
            for c in got:
                assert c["critique"].startswith("Strengths:\n") and "\nWeaknesses:\n" in c[
                    "critique"]
                kind = "right" if c["text"] == key(i)["answer"] else "wrong"
                flagged[kind] += "appears incorrect" in c["critique"]

        await fan_out(QUESTIONS, one)
    # A medium critic calls most wrong answers wrong, and far fewer right ones.
    assert flagged["wrong"] > 0.7 * QUESTIONS, flagged
    assert flagged["wrong"] - flagged["right"] > 0.4 * QUESTIONS, flagged


# -- ranker -------------------------------------------------------------------------------------

async def _ranker_hits(client: AsyncClient, model: str, mode: str) -> int:
    hits = 0

    async def one(i: int) -> None:
        nonlocal hits
        k = key(i)
        sent = candidates([k["answer"], *k["wrong"]], rotate=i)
        reply = await client.request(f"ranker@sim:{model}", {
            "messages": query(i), "candidates": sent, "params": {"top_k": 2, "mode": mode},
            "sim": k}, timeout=TIMEOUT_S)
        kept = reply["candidates"]
        assert len(kept) == 2 and len({c["id"] for c in kept}) == 2
        assert {c["id"] for c in kept} <= {c["id"] for c in sent}
        assert kept[0]["score"] >= kept[1]["score"]
        assert [c["meta"]["rank"] for c in kept] == [1, 2]
        assert_parsed_ok(reply, 1 if mode == "listwise" else 6)
        hits += kept[0]["text"] == k["answer"]

    await fan_out(QUESTIONS, one)
    return hits


async def test_ranker_listwise_keeps_the_better_candidates(mesh: str) -> None:
    async with AsyncClient(mesh) as client:
        hits = {m: await _ranker_hits(client, m, "listwise") for m in ("strong", "weak")}
    # Chance (one right answer among four) is 10 of 40.
    assert hits["strong"] >= 0.75 * QUESTIONS, hits
    assert hits["strong"] >= hits["weak"] + 0.2 * QUESTIONS, hits


async def test_ranker_pairwise_ranks_by_wins(mesh: str) -> None:
    async with AsyncClient(mesh) as client:
        hits = {m: await _ranker_hits(client, m, "pairwise") for m in ("strong", "weak")}
        k = key(3)
        reply = await client.request("ranker@sim:strong", {
            "messages": query(3), "candidates": candidates([k["answer"], *k["wrong"]]),
            "params": {"mode": "pairwise"}, "sim": k})
    # Wrong-vs-wrong comparisons are coin flips, so pairwise trails listwise; chance is 10.
    assert hits["strong"] >= 0.6 * QUESTIONS, hits
    assert hits["strong"] >= hits["weak"] + 0.1 * QUESTIONS, hits
    wins = [c["meta"]["wins"] for c in reply["candidates"]]
    assert len(wins) == 4 and sum(wins) == 6 and wins == sorted(wins, reverse=True)
    assert [c["score"] for c in reply["candidates"]] == [w / 3 for w in wins]


# -- fuser --------------------------------------------------------------------------------------

async def test_fuser_merges_into_new_candidates(mesh: str) -> None:
    right = 0
    async with AsyncClient(mesh) as client:
        async def one(i: int) -> None:
            nonlocal right
            k = key(i)
            sent = candidates([k["answer"], k["answer"], k["wrong"][0]], rotate=i)
            reply = await client.request("fuser@sim:strong", {
                "messages": query(i), "candidates": sent, "sim": k}, timeout=TIMEOUT_S)
            (fused,) = reply["candidates"]
            assert fused["model"] == "fuser@sim:strong"
            assert fused["meta"]["fused_from"] == ["c0", "c1", "c2"]
            assert_parsed_ok(reply, 1)
            right += fused["text"] == k["answer"]

        await fan_out(QUESTIONS, one)
        k = key(7)
        sent = candidates([k["answer"], k["wrong"][0]])
        wide = await client.request("fuser@sim:strong", {
            "messages": query(7), "candidates": sent, "params": {"n_outputs": 3, "length": 3},
            "sample_index": 2, "sim": k})
        longest = await client.request("fuser@sim:strong", {
            "messages": query(7), "candidates": [*sent, {"id": "short", "text": "42"}],
            "params": {"length": "longest"}, "sim": k})
    assert right >= 0.8 * QUESTIONS
    outputs = wide["candidates"]
    assert len({c["id"] for c in outputs}) == 3
    assert [c["meta"]["sample_index"] for c in outputs] == [2, 3, 4]
    assert all(c["id"].startswith(f"fuser@sim:strong#{c['meta']['sample_index']}:fuse-")
               for c in outputs)
    assert all(len(c["text"].split()) == 3 and c["meta"]["truncated_from"] == 4 for c in outputs)
    assert [n["code"] for n in wide["notes"]] == ["truncated"] * 3
    assert wide["usage"]["calls"] == 3
    assert len(longest["candidates"][0]["text"].split()) <= 4
    assert "truncated_from" not in longest["candidates"][0]["meta"]


# -- verifier -----------------------------------------------------------------------------------

async def _verifier_accuracy(client: AsyncClient, model: str) -> tuple[float, float]:
    kept = {"right": 0, "wrong": 0}

    async def one(i: int) -> None:
        k = key(i)
        sent = candidates([k["answer"], *k["wrong"]], rotate=i)
        reply = await client.request(f"verifier@sim:{model}", {
            "messages": query(i), "candidates": sent, "sim": k}, timeout=TIMEOUT_S)
        assert_parsed_ok(reply, 4)
        if any(n["code"] == "none_passed" for n in reply["notes"]):
            return  # everything was kept, with verdict False
        for c in reply["candidates"]:
            assert c["verdict"] is True and c["meta"]["verifier"] == f"verifier@sim:{model}"
            kept["right" if c["text"] == k["answer"] else "wrong"] += 1

    await fan_out(QUESTIONS, one)
    return kept["right"] / QUESTIONS, kept["wrong"] / (3 * QUESTIONS)


async def test_verifier_drops_wrong_candidates(mesh: str) -> None:
    async with AsyncClient(mesh) as client:
        strong_right, strong_wrong = await _verifier_accuracy(client, "strong")
        weak_right, weak_wrong = await _verifier_accuracy(client, "weak")
        # Only wrong answers on an easy question: the strong verifier passes none, keeps the
        # set (top_k of it) and says so.
        k = key(5, difficulty=0.0)
        reply = await client.request("verifier@sim:strong", {
            "messages": query(5), "candidates": candidates(k["wrong"]),
            "params": {"top_k": 2}, "sim": k})
    assert strong_right >= 0.8 and strong_wrong <= 0.2, (strong_right, strong_wrong)
    assert strong_right - strong_wrong > weak_right - weak_wrong + 0.2
    assert [c["id"] for c in reply["candidates"]] == ["c0", "c1"]
    assert all(c["verdict"] is False for c in reply["candidates"])
    assert [n["code"] for n in reply["notes"]] == ["none_passed"]


# -- unit tests: generator and evaluator --------------------------------------------------------

CODE_KEY = {
    "id": "code1",
    "answer": "```python\ndef add(a, b):\n    return a + b\n```",
    "wrong": ["```python\ndef add(a, b):\n    return a - b\n```"],
    "difficulty": 0.2,
    "tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0",
              "import math\nassert math.isclose(add(0.1, 0.2), 0.3)", "assert add(2, 2) == 4"],
}
CODE_QUERY = [{"role": "user", "content": "Write add(a, b) returning the sum."}]


async def test_unit_test_generator_text_and_code(mesh: str) -> None:
    checks = ["states the final number", "shows the addition", "uses no more than two lines"]
    async with AsyncClient(mesh) as client:
        text = await client.request("unit_test_generator@sim:strong", {
            "messages": query(1), "candidates": candidates(["a", "b"]),
            "params": {"num_tests": 2}, "sim": {**key(1), "tests": checks}})
        code = await client.request("unit_test_generator@sim:strong", {
            "messages": CODE_QUERY, "params": {"task": "code", "entry_point": "add"},
            "sim": CODE_KEY})
        # The generated asserts run for real: the right code passes them all, the wrong fails.
        tested = await client.request("code_tester", {
            "candidates": candidates([CODE_KEY["wrong"][0], CODE_KEY["answer"]]),
            "tests": code["tests"]})
    assert text["tests"] == checks[:2]
    assert [c["id"] for c in text["candidates"]] == ["c0", "c1"]  # passed through
    assert text["parse"][0]["method"] == "numbered_list"
    assert code["parse"][0]["method"] == "python_asserts"
    # Setup statements go in front of the asserts written after them.
    assert code["tests"] == ["assert add(1, 2) == 3", "assert add(-1, 1) == 0",
                             "import math\nassert math.isclose(add(0.1, 0.2), 0.3)",
                             "import math\nassert add(2, 2) == 4"]
    best, worst = tested["candidates"]
    assert (best["id"], best["tests_passed"], best["tests_total"]) == ("c1", 4, 4)
    assert (worst["tests_passed"], worst["verdict"]) == (0, False)


async def test_unit_test_evaluator_ranks_by_tests_passed(mesh: str) -> None:
    tests = ["states the final number", "the number is the sum", "is one sentence",
             "has no contradictions"]
    passed = {"right": 0, "wrong": 0}
    async with AsyncClient(mesh) as client:
        async def one(i: int) -> None:
            k = key(i)
            sent = candidates([k["answer"], *k["wrong"][:2]], rotate=i)
            reply = await client.request("unit_test_evaluator@sim:strong", {
                "messages": query(i), "candidates": sent, "tests": tests, "sim": k},
                timeout=TIMEOUT_S)
            got = reply["candidates"]
            assert_parsed_ok(reply, 3)
            assert sorted(c["id"] for c in got) == ["c0", "c1", "c2"]
            counts = [c["tests_passed"] for c in got]
            assert counts == sorted(counts, reverse=True)  # the ranking follows tests passed
            for c in got:
                assert c["tests_total"] == 4 and c["score"] == c["tests_passed"] / 4
                assert c["tests_passed"] == sum(c["meta"]["test_results"])
                assert c["verdict"] == (c["tests_passed"] == 4)
                passed["right" if c["text"] == k["answer"] else "wrong"] += c["tests_passed"]

        await fan_out(QUESTIONS, one)
        k = key(2)
        first = await client.request("unit_test_evaluator@sim:strong", {
            "messages": query(2), "candidates": candidates([k["wrong"][0], k["answer"]]),
            "tests": tests, "params": {"select": "first_pass"}, "sim": k})
    right_rate = passed["right"] / (4 * QUESTIONS)
    wrong_rate = passed["wrong"] / (8 * QUESTIONS)
    assert right_rate > 0.8 and wrong_rate < 0.2, (right_rate, wrong_rate)
    (chosen,) = first["candidates"]
    assert chosen["verdict"] is True and chosen["text"] == k["answer"]


async def test_unit_test_evaluator_runs_code_tests_in_the_sandbox(mesh: str) -> None:
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 0) == 0"]
    codes = {
        "minus": "def add(a, b):\n    return a - b",         # passes add(0, 0) only
        "right": "```python\ndef add(a, b):\n    return a + b\n```",
        "plus_one_if_big": "def add(a, b):\n    return a + b + (a > 1)",  # fails add(2, 2)
    }
    async with AsyncClient(mesh) as client:
        reply = await client.request("unit_test_evaluator@sim:medium", {
            "messages": CODE_QUERY,
            "candidates": [{"id": name, "text": code} for name, code in codes.items()],
            "tests": tests, "params": {"task": "code", "timeout_s": 5.0}})
        first = await client.request("unit_test_evaluator@sim:medium", {
            "messages": CODE_QUERY,
            "candidates": [{"id": n, "text": codes[n]} for n in ("minus", "plus_one_if_big")],
            "tests": tests, "params": {"task": "code", "select": "first_pass"}})
    assert [(c["id"], c["tests_passed"]) for c in reply["candidates"]] == [
        ("right", 3), ("plus_one_if_big", 2), ("minus", 1)]
    assert reply["usage"]["calls"] == 0 and reply["parse"] == []
    assert [c["id"] for c in first["candidates"]] == ["plus_one_if_big"]
    assert [n["code"] for n in first["notes"]] == ["no_full_pass"]


# -- majority vote ------------------------------------------------------------------------------

async def test_majority_vote_picks_the_most_common_final_answer(mesh: str) -> None:
    texts = ["6 times 7 is 41, I think.", "So the answer is 42.", "We get $\\boxed{42}$.",
             "Adding up: 40 + 2 = 42\n#### 42", "The answer is 41.", "The answer is 42.0"]
    async with AsyncClient(mesh) as client:
        reply = await client.request("majority_vote", {"candidates": candidates(texts)})
        two = await client.request("majority_vote", {
            "candidates": candidates(texts), "params": {"top_k": 2}})
        letters = await client.request("majority_vote", {"candidates": candidates(
            ["The answer is (B).", "Answer: C", "I'd say the answer is B.", "answer: (C)",
             "The answer is B"])})
        empty = await client.request("majority_vote", {"candidates": []})
    (winner,) = reply["candidates"]
    assert winner["id"] == "c1" and winner["answer"] == "42"
    assert winner["meta"]["votes"] == 4 and winner["score"] == 4 / 6
    assert winner["meta"]["vote_counts"] == {"41": 2, "42": 4}
    assert [c["answer"] for c in two["candidates"]] == ["42", "41"]
    assert letters["candidates"][0]["answer"] == "B"
    assert letters["candidates"][0]["meta"]["votes"] == 3
    assert empty["candidates"] == []


# -- code tester --------------------------------------------------------------------------------

HUMANEVAL_PROMPT = 'def double(x: int) -> int:\n    """Return twice x."""\n'
HUMANEVAL_CHECK = ("def check(candidate):\n    assert candidate(2) == 4\n"
                   "    assert candidate(-1) == -2\n")


async def test_code_tester_catches_failing_code_and_infinite_loops(mesh: str) -> None:
    tests = ["assert inc(1) == 2", "assert inc(-1) == 0", "assert inc(10) == 11"]
    codes = {
        "loops": "def inc(x):\n    while True:\n        pass",
        "syntax": "def inc(x) return x + 1",
        "exits": "import os\ndef inc(x):\n    os._exit(3)",
        "off": "def inc(x):\n    return x + 1 if x > 0 else x",
        "right": "Here you go:\n```python\ndef inc(x):\n    return x + 1\n```",
    }
    async with AsyncClient(mesh) as client:
        started = time.monotonic()
        reply = await client.request("code_tester", {
            "candidates": [{"id": name, "text": code} for name, code in codes.items()],
            "tests": tests, "params": {"timeout_s": 1.5}}, timeout=TIMEOUT_S)
        elapsed = time.monotonic() - started
        top = await client.request("code_tester", {
            "candidates": [{"id": name, "text": code} for name, code in codes.items()],
            "tests": tests, "params": {"timeout_s": 1.5, "top_k": 1}}, timeout=TIMEOUT_S)
        humaneval = await client.request("code_tester", {
            "candidates": [{"id": "body", "text": "    return 2 * x\n"},
                           {"id": "wrong", "text": "def double(x):\n    return x + 2"}],
            "tests": [HUMANEVAL_CHECK],
            "params": {"entry_point": "double", "prompt": HUMANEVAL_PROMPT}})
    got = {c["id"]: c for c in reply["candidates"]}
    assert [c["id"] for c in reply["candidates"]][:2] == ["right", "off"]
    assert (got["right"]["tests_passed"], got["right"]["verdict"]) == (3, True)
    assert got["off"]["tests_passed"] == 2
    status = {name: got[name]["meta"]["execution"]["status"] for name in codes}
    assert status == {"loops": "timeout", "syntax": "failed", "exits": "crashed",
                      "off": "failed", "right": "passed"}
    assert got["syntax"]["meta"]["execution"]["load_error"].startswith("SyntaxError")
    assert all(got[n]["tests_passed"] == 0 for n in ("loops", "syntax", "exits"))
    assert elapsed < 10  # the infinite loop was cut at its time limit, not waited out
    assert [c["id"] for c in top["candidates"]] == ["right"]
    assert [(c["id"], c["tests_passed"], c["tests_total"]) for c in humaneval["candidates"]] == [
        ("body", 1, 1), ("wrong", 0, 1)]
