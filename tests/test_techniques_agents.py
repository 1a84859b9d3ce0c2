"""Every technique through a real broker and real agent processes with simulated models.

One broker and the pool file configs/pools/sim.yaml (started by the pool supervisor) serve
the whole module. Agents do not select: a judge returns every candidate it was given, with
its annotations (rank, verdict, test counts, answer), and the selection is the technique's
``merge`` on the orchestrator's side. So each reply here is read the way the orchestrator
reads it (``TechniqueReply.from_body`` and the technique's ``check_reply``) and then merged
with the technique's own ``merge``.

Simulated models are deterministic, so the statistical checks (a strong ranker puts the
right answer first more often than a weak one and than chance) give the same result on every
run; they would fail if the technique ignored the model's decision, parsed the wrong format
or mixed up candidates.
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
from itas.techniques import TECHNIQUES
from itas.techniques.base import Merged, Shard
from itas.techniques.contract import TechniqueReply, TechniqueRequest
from itas.techniques.verifier import SIM_REASONING
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


async def ask(client: AsyncClient, service: str, body: dict[str, Any]
              ) -> tuple[dict[str, Any], Merged]:
    """Send one request and read the reply as the orchestrator does: the shared contract,
    the technique's own check, then its merge (as if this were the component's only shard).
    Returns the raw reply and what the component leaves."""
    raw = await client.request(service, body, timeout=TIMEOUT_S)
    name, _, placement = service.partition("@")
    technique = TECHNIQUES[name]
    provider, _, model = placement.partition(":")
    fields = {"provider": provider, "model": model.partition("#")[0]} if placement else {}
    params = technique.params_model.model_validate(
        {"technique": name, **fields, **body.get("params", {})})
    request = TechniqueRequest.from_body(body)
    reply = TechniqueReply.from_body(raw)
    technique.check_reply(params, request, reply)
    shard = Shard(tuple(range(len(request.candidates))), request.sample_index)
    return raw, technique.merge(params, request.candidates, [(shard, reply)])


def ids(items: list[Any]) -> list[str]:
    return [c["id"] if isinstance(c, dict) else c.id for c in items]


# -- the pool --------------------------------------------------------------------------------

def test_pool_serves_every_service_of_the_sim_architectures() -> None:
    served = set(pool_services())
    assert len(SIM_ARCHITECTURES) >= 6
    for path in SIM_ARCHITECTURES:
        needed = set(load_architecture(path).services)
        assert needed <= served, f"{path.name} needs {sorted(needed - served)}"


async def test_bad_requests_get_clear_errors(mesh: str) -> None:
    three = candidates(["a", "b", "c"])
    async with AsyncClient(mesh) as client:
        cases = [
            ("ranker@sim:strong", {"messages": query(1), "candidates": [],
                                   "params": {"topk": 1, "top_k": 1}},
             "params.topk: Extra inputs are not permitted"),
            ("ranker@sim:strong", {"messages": query(1), "params": {"top_k": 1,
                                                                    "mode": "tournament"}},
             "params.mode: Input should be 'listwise' or 'pairwise'"),
            ("ranker@sim:strong", {"messages": query(1), "params": {}},
             "params.top_k: Field required"),
            ("ranker@sim:strong", {"messages": query(1), "params": {"top_k": 1, "mode":
                                                                    "pairwise"},
                                   "candidates": candidates([str(i) for i in range(65)])},
             "candidates: pairwise ranking of 65 candidates; at most 64"),
            # what the old agents took: n and select are gone, parse_retries is bounded
            ("generator@sim:strong", {"messages": query(1), "params": {"n": 3}},
             "params.n: Extra inputs are not permitted"),
            ("unit_test_evaluator@sim:strong", {"messages": query(1), "tests": ["t"],
                                                "params": {"select": "first_pass"}},
             "params.select: Extra inputs are not permitted"),
            ("critic@sim:medium", {"messages": query(1), "params": {"parse_retries": 9}},
             "params.parse_retries: Input should be less than or equal to 5"),
            ("code_tester", {"candidates": candidates(["x = 1"])}, "tests: required"),
            ("critic@sim:medium", {"messages": [], "candidates": candidates(["a"])},
             "messages: must hold the query"),
            ("verifier@sim:strong", {"messages": query(1), "candidates": [{"id": "a"}]},
             "candidates[0].text: missing; must be a string"),
            ("verifier@sim:strong", {"messages": query(1), "params": []},
             "params: must be a map, got list"),
            ("fuser@sim:strong", {"messages": query(1), "max_calls": -1},
             "max_calls: must be an integer in [0, "),
            # max_calls below the calls a request needs before any re-ask
            ("critic@sim:medium", {"messages": query(1), "candidates": three, "max_calls": 2},
             "max_calls: is 2, but this request needs 3 call(s) before any re-ask"),
            ("critic@sim:medium", {"messages": query(1), "candidates": three, "max_calls": 0,
                                   "params": {"batched": True}},
             "max_calls: is 0, but this request needs 1 call(s)"),
            ("verifier@sim:strong", {"messages": query(1), "candidates": three[:1],
                                     "max_calls": 1, "params": {"two_step": True}},
             "max_calls: is 1, but this request needs 2 call(s)"),
            ("ranker@sim:strong", {"messages": query(1), "candidates": three, "max_calls": 2,
                                   "params": {"top_k": 1, "mode": "pairwise"}},
             "max_calls: is 2, but this request needs 3 call(s)"),
        ]
        for service, body, expected in cases:
            with pytest.raises(RemoteError) as failure:
                await client.request(service, body, timeout=TIMEOUT_S)
            assert failure.value.code == "bad_request", (service, body)
            assert expected in failure.value.message, failure.value.message
            assert "Traceback" not in failure.value.message
        # The agents are still serving after bad input, and a tool needs no call at all.
        reply = await client.request("majority_vote", {"candidates": candidates(["7"]),
                                                       "max_calls": 0})
        assert reply["candidates"][0]["answer"] == "7" and reply["usage"]["calls"] == 0
        reply = await client.request("critic@sim:medium", {
            "messages": query(1), "candidates": three, "max_calls": 3, "sim": key(1)})
        assert_parsed_ok(reply, 3)  # max_calls == base: allowed


# -- generator ----------------------------------------------------------------------------------

async def test_generator_writes_one_sample_per_request_by_skill(mesh: str) -> None:
    correct = {"strong": 0, "weak": 0}
    samples = 3
    async with AsyncClient(mesh) as client:
        five, merged = await ask(client, "generator@sim:strong", {
            "messages": query(1), "sample_index": 5, "sim": key(1)})
        (candidate,) = five["candidates"]
        assert candidate["id"] == "generator@sim:strong#5"
        assert candidate["model"] == "generator@sim:strong"
        assert candidate["meta"] == {"sample_index": 5, "finish_reason": "stop"}
        assert ids(merged.candidates) == ["generator@sim:strong#5"]
        assert_parsed_ok(five, 1)
        # Sample k is the same answer whichever request asks for it; "samples" in a request
        # does not fan out (the orchestrator does), it is still one output.
        again = await client.request("generator@sim:strong", {
            "messages": query(1), "sample_index": 5, "sim": key(1),
            "params": {"samples": 3}})
        assert again["candidates"] == five["candidates"]
        texts = set()
        for index in range(8):
            got = await client.request("generator@sim:weak", {
                "messages": query(1), "sample_index": index, "sim": key(1),
                "params": {"temperature": 1.0}})
            assert ids(got["candidates"]) == [f"generator@sim:weak#{index}"]
            texts.add(got["candidates"][0]["text"])
        assert len(texts) > 1  # the sample index changes the sample

        async def one(i: int) -> None:
            for model in correct:
                for index in range(samples):
                    got, _ = await ask(client, f"generator@sim:{model}", {
                        "messages": query(i), "sample_index": index,
                        "params": {"temperature": 1.0}, "sim": key(i)})
                    correct[model] += is_correct(got["candidates"][0]["text"], key(i))

        await fan_out(QUESTIONS, one)
    total = samples * QUESTIONS
    assert correct["strong"] > 0.7 * total, correct
    assert correct["weak"] < 0.6 * total, correct
    assert correct["strong"] > correct["weak"] + 0.2 * total, correct


# -- critic -------------------------------------------------------------------------------------

async def test_critic_annotates_each_candidate_one_call_each_or_one_call_for_all(
        mesh: str) -> None:
    flagged = {(batched, kind): 0 for batched in (False, True) for kind in ("right", "wrong")}
    async with AsyncClient(mesh) as client:
        async def one(i: int) -> None:
            for batched in (False, True):
                sent = candidates([key(i)["answer"], *key(i)["wrong"][:2]], rotate=i)
                reply, merged = await ask(client, "critic@sim:medium", {
                    "messages": query(i), "candidates": sent, "sim": key(i),
                    "params": {"batched": batched}, "trace": True})
                got = reply["candidates"]
                assert ids(got) == ids(sent) == ids(merged.candidates)
                assert [c["text"] for c in got] == [c["text"] for c in sent]
                calls = 1 if batched else 3
                assert_parsed_ok(reply, calls)
                assert len(reply["prompts"]) == calls
                method = "numbered_sections" if batched else "sections"
                assert all(p["method"] == method for p in reply["parse"])
                if batched:  # one prompt shows every candidate, numbered
                    prompt = reply["prompts"][0][-1]["content"]
                    assert all(f"[{k}]\n{c['text']}" in prompt
                               for k, c in enumerate(sent, 1))
                for c in got:
                    assert c["critique"].startswith("Strengths:\n")
                    assert "\nWeaknesses:\n" in c["critique"]
                    assert c["meta"]["critic"] == "critic@sim:medium"
                    kind = "right" if c["text"] == key(i)["answer"] else "wrong"
                    flagged[batched, kind] += "appears incorrect" in c["critique"]

        await fan_out(QUESTIONS, one)
    # A medium critic calls most wrong answers wrong, and far fewer right ones; batched the
    # same, so the sections went to the right candidates.
    for batched in (False, True):
        assert flagged[batched, "wrong"] > 0.7 * 2 * QUESTIONS, flagged
        assert flagged[batched, "wrong"] / 2 - flagged[batched, "right"] > 0.4 * QUESTIONS, \
            flagged


# -- ranker -------------------------------------------------------------------------------------

async def _ranker_hits(client: AsyncClient, model: str, mode: str) -> int:
    hits = 0

    async def one(i: int) -> None:
        nonlocal hits
        k = key(i)
        sent = candidates([k["answer"], *k["wrong"]], rotate=i)
        reply, merged = await ask(client, f"ranker@sim:{model}", {
            "messages": query(i), "candidates": sent, "params": {"top_k": 2, "mode": mode},
            "sim": k})
        got = reply["candidates"]
        # Every candidate comes back, in input order, each with its rank.
        assert ids(got) == ids(sent)
        assert sorted(c["rank"] for c in got) == [1, 2, 3, 4]
        assert all(c["meta"]["ranker"] == f"ranker@sim:{model}" for c in got)
        if mode == "listwise":
            assert all(c["score"] is None for c in got)  # a position is not a measurement
        else:
            assert all(c["score"] == c["meta"]["wins"] / c["meta"]["comparisons_read"]
                       for c in got)
            assert all(c["meta"]["comparisons_read"] == 3 for c in got)
        assert_parsed_ok(reply, 1 if mode == "listwise" else 6)
        # The merge keeps the top 2 by rank.
        by_rank = sorted(got, key=lambda c: c["rank"])
        assert ids(merged.candidates) == ids(by_rank[:2])
        assert [c.rank for c in merged.candidates] == [1, 2]
        hits += merged.candidates[0].text == k["answer"]

    await fan_out(QUESTIONS, one)
    return hits


async def test_ranker_listwise_ranks_the_better_candidates_first(mesh: str) -> None:
    async with AsyncClient(mesh) as client:
        hits = {m: await _ranker_hits(client, m, "listwise") for m in ("strong", "weak")}
        one, merged = await ask(client, "ranker@sim:strong", {
            "messages": query(1), "candidates": candidates(["only"]), "params": {"top_k": 1}})
    # Chance (one right answer among four) is 10 of 40.
    assert hits["strong"] >= 0.75 * QUESTIONS, hits
    assert hits["strong"] >= hits["weak"] + 0.2 * QUESTIONS, hits
    # A single candidate is ranked without a call.
    assert one["usage"]["calls"] == 0 and one["candidates"][0]["rank"] == 1
    assert ids(merged.candidates) == ["c0"]


async def test_ranker_pairwise_ranks_by_wins(mesh: str) -> None:
    async with AsyncClient(mesh) as client:
        hits = {m: await _ranker_hits(client, m, "pairwise") for m in ("strong", "weak")}
        k = key(3)
        reply, merged = await ask(client, "ranker@sim:strong", {
            "messages": query(3), "candidates": candidates([k["answer"], *k["wrong"]]),
            "params": {"mode": "pairwise", "top_k": 4}, "sim": k})
    # Wrong-vs-wrong comparisons are coin flips, so pairwise trails listwise; chance is 10.
    assert hits["strong"] >= 0.6 * QUESTIONS, hits
    assert hits["strong"] >= hits["weak"] + 0.1 * QUESTIONS, hits
    wins = [c.meta["wins"] for c in merged.candidates]
    assert len(wins) == 4 and sum(wins) == 6 and wins == sorted(wins, reverse=True)
    assert [c.score for c in merged.candidates] == [w / 3 for w in wins]
    # Equal wins keep input order.
    order = [(-c["meta"]["wins"], int(c["id"][1:])) for c in reply["candidates"]]
    assert [c["rank"] for c in reply["candidates"]] == [sorted(order).index(o) + 1
                                                        for o in order]


# -- fuser --------------------------------------------------------------------------------------

async def test_fuser_writes_one_fused_answer_per_request(mesh: str) -> None:
    right = 0
    async with AsyncClient(mesh) as client:
        async def one(i: int) -> None:
            nonlocal right
            k = key(i)
            sent = candidates([k["answer"], k["answer"], k["wrong"][0]], rotate=i)
            reply, merged = await ask(client, "fuser@sim:strong", {
                "messages": query(i), "candidates": sent, "sim": k})
            (fused,) = reply["candidates"]
            assert fused["id"] == "fuser@sim:strong#0" and fused["model"] == "fuser@sim:strong"
            assert fused["meta"]["fused_from"] == ["c0", "c1", "c2"]
            assert ids(merged.candidates) == [fused["id"]]
            assert_parsed_ok(reply, 1)
            right += fused["text"] == k["answer"]

        await fan_out(QUESTIONS, one)
        k = key(7)
        sent = candidates([k["answer"], k["wrong"][0]])
        # n_outputs shapes the orchestrator's fan-out; one request is one output.
        short, _ = await ask(client, "fuser@sim:strong", {
            "messages": query(7), "candidates": sent, "params": {"n_outputs": 3, "length": 3},
            "sample_index": 2, "sim": k, "trace": True})
        longest, _ = await ask(client, "fuser@sim:strong", {
            "messages": query(7), "candidates": [*sent, {"id": "short", "text": "42"}],
            "params": {"length": "longest"}, "sim": k, "trace": True})
    assert right >= 0.8 * QUESTIONS
    (fused,) = short["candidates"]
    assert fused["id"] == "fuser@sim:strong#2" and fused["meta"]["sample_index"] == 2
    assert short["usage"]["calls"] == 1
    # Length control asks; it never cuts: the 4-word answer stays whole and is flagged.
    assert "Use at most 3 words." in short["prompts"][0][-1]["content"]
    assert fused["text"] in (k["answer"], k["wrong"][0]) and len(fused["text"].split()) == 4
    assert fused["meta"]["over_length"] == {"words": 4, "limit": 3}
    assert [n["code"] for n in short["notes"]] == ["over_length"]
    assert "kept whole" in short["notes"][0]["detail"]
    assert "Use at most 4 words." in longest["prompts"][0][-1]["content"]
    assert "over_length" not in longest["candidates"][0]["meta"] and longest["notes"] == []


# -- verifier -----------------------------------------------------------------------------------

async def _verifier_accuracy(client: AsyncClient, model: str) -> tuple[float, float]:
    kept = {"right": 0, "wrong": 0}

    async def one(i: int) -> None:
        k = key(i)
        sent = candidates([k["answer"], *k["wrong"]], rotate=i)
        reply, merged = await ask(client, f"verifier@sim:{model}", {
            "messages": query(i), "candidates": sent, "sim": k})
        assert_parsed_ok(reply, 4)
        got = reply["candidates"]
        assert ids(got) == ids(sent)  # every candidate back, with its verdict
        assert all(isinstance(c["verdict"], bool) for c in got)
        assert all(c["meta"]["verifier"] == f"verifier@sim:{model}" for c in got)
        passed = [c["id"] for c in got if c["verdict"]]
        if not passed:
            assert merged.problems and merged.problems[0].startswith("none_passed")
            return
        assert ids(merged.candidates) == passed and not merged.problems
        for c in merged.candidates:
            kept["right" if c.text == k["answer"] else "wrong"] += 1

    await fan_out(QUESTIONS, one)
    return kept["right"] / QUESTIONS, kept["wrong"] / (3 * QUESTIONS)


async def test_verifier_judges_every_candidate_and_the_merge_drops_the_wrong(mesh: str) -> None:
    async with AsyncClient(mesh) as client:
        strong_right, strong_wrong = await _verifier_accuracy(client, "strong")
        weak_right, weak_wrong = await _verifier_accuracy(client, "weak")
        # Only wrong answers on an easy question: the strong verifier passes none; the merge
        # keeps top_k of them and says so.
        k = key(5, difficulty=0.0)
        reply, merged = await ask(client, "verifier@sim:strong", {
            "messages": query(5), "candidates": candidates(k["wrong"]),
            "params": {"top_k": 2}, "sim": k})
    assert strong_right >= 0.8 and strong_wrong <= 0.2, (strong_right, strong_wrong)
    assert strong_right - strong_wrong > weak_right - weak_wrong + 0.2
    assert [c["verdict"] for c in reply["candidates"]] == [False, False, False]
    assert ids(merged.candidates) == ["c0", "c1"]
    none_passed = "none_passed: no candidate passed verification; the first 2 go on"
    assert merged.problems == [none_passed]


async def test_verifier_first_k_stops_once_enough_passed(mesh: str) -> None:
    """Verified in order, stopping after first_k passes: fewer calls than candidates."""
    async with AsyncClient(mesh) as client:
        async def one(i: int) -> None:
            k = key(i, difficulty=0.0)
            sent = candidates([k["wrong"][0], k["answer"], k["answer"], k["wrong"][1]])
            reply, merged = await ask(client, "verifier@sim:strong", {
                "messages": query(i), "candidates": sent, "sim": k,
                "params": {"first_k": 1}})
            verdicts = [c["verdict"] for c in reply["candidates"]]
            calls = reply["usage"]["calls"]
            assert calls < len(sent), verdicts
            assert verdicts[:calls].count(True) == 1 and verdicts[calls - 1] is True
            assert verdicts[calls:] == [None] * (len(sent) - calls)  # never verified
            assert_parsed_ok(reply, calls)
            assert [n["code"] for n in reply["notes"]] == ["early_stop"]
            assert f"after {calls} of 4 verified" in reply["notes"][0]["detail"]
            assert [c.text for c in merged.candidates] == [k["answer"]]

        await fan_out(QUESTIONS, one)
        # Nothing passes: every candidate is verified, no early stop.
        k = key(2, difficulty=0.0)
        none, merged = await ask(client, "verifier@sim:strong", {
            "messages": query(2), "candidates": candidates(k["wrong"]), "sim": k,
            "params": {"first_k": 2}})
    assert none["usage"]["calls"] == 3 and none["notes"] == []
    assert ids(merged.candidates) == ["c0", "c1"] and merged.problems


async def test_verifier_two_step_reasons_then_judges_with_the_reasoning(mesh: str) -> None:
    async with AsyncClient(mesh) as client:
        k = key(4, difficulty=0.0)
        sent = candidates([k["answer"], k["wrong"][0]])
        reply, merged = await ask(client, "verifier@sim:strong", {
            "messages": query(4), "candidates": sent[:1], "sim": k,
            "params": {"two_step": True}, "trace": True})
        both, _ = await ask(client, "verifier@sim:strong", {
            "messages": query(4), "candidates": sent, "sim": k, "params": {"two_step": True}})
    assert_parsed_ok(reply, 2)
    assert [p["method"] for p in reply["parse"]] == ["text", "verdict_line"]
    reasoning_prompt, verdict_prompt = (p[-1]["content"] for p in reply["prompts"])
    assert "Write only your reasoning" in reasoning_prompt and "Verdict:" not in reasoning_prompt
    assert f"## Reasoning about the response\n{SIM_REASONING}" in verdict_prompt
    assert k["answer"] in reasoning_prompt and k["answer"] in verdict_prompt
    (checked,) = reply["candidates"]
    assert checked["verdict"] is True and checked["meta"]["verification"] == SIM_REASONING
    assert ids(merged.candidates) == ["c0"]
    assert_parsed_ok(both, 4)  # two calls per candidate
    assert [c["verdict"] for c in both["candidates"]] == [True, False]


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
        text, passed_on = await ask(client, "unit_test_generator@sim:strong", {
            "messages": query(1), "candidates": candidates(["a", "b"]),
            "params": {"num_tests": 2}, "sim": {**key(1), "tests": checks}})
        code, _ = await ask(client, "unit_test_generator@sim:strong", {
            "messages": CODE_QUERY, "params": {"task": "code", "entry_point": "add"},
            "sim": CODE_KEY})
        # The generated asserts run for real: the right code passes them all, the wrong fails.
        tested, best = await ask(client, "code_tester", {
            "candidates": candidates([CODE_KEY["wrong"][0], CODE_KEY["answer"]]),
            "tests": code["tests"]})
    assert text["tests"] == checks[:2]
    assert "kept 2 of 2 asked" in text["parse"][0]["detail"]
    assert ids(passed_on.candidates) == ["c0", "c1"] and passed_on.tests == checks[:2]
    assert text["parse"][0]["method"] == "numbered_list"
    assert code["parse"][0]["method"] == "python_asserts"
    # Setup statements go in front of the asserts written after them.
    assert code["tests"] == ["assert add(1, 2) == 3", "assert add(-1, 1) == 0",
                             "import math\nassert math.isclose(add(0.1, 0.2), 0.3)",
                             "import math\nassert add(2, 2) == 4"]
    wrong, right = tested["candidates"]  # in input order
    assert (right["id"], right["tests_passed"], right["tests_total"]) == ("c1", 4, 4)
    assert (wrong["tests_passed"], wrong["verdict"]) == (0, False)
    assert ids(best.candidates) == ["c1", "c0"]  # the merge orders by tests passed


TEXT_TESTS = ["states the final number", "the number is the sum", "is one sentence",
              "has no contradictions"]


async def test_unit_test_evaluator_grades_every_candidate_and_the_merge_orders_them(
        mesh: str) -> None:
    passed = {"right": 0, "wrong": 0}
    async with AsyncClient(mesh) as client:
        async def one(i: int) -> None:
            k = key(i)
            sent = candidates([k["answer"], *k["wrong"][:2]], rotate=i)
            reply, merged = await ask(client, "unit_test_evaluator@sim:strong", {
                "messages": query(i), "candidates": sent, "tests": TEXT_TESTS, "sim": k,
                "params": {"top_k": 2}})
            got = reply["candidates"]
            assert_parsed_ok(reply, 3)
            assert ids(got) == ids(sent)
            for c in got:
                assert c["tests_total"] == 4 and c["score"] == c["tests_passed"] / 4
                assert c["tests_passed"] == sum(c["meta"]["test_results"])
                assert c["verdict"] == (c["tests_passed"] == 4)
                passed["right" if c["text"] == k["answer"] else "wrong"] += c["tests_passed"]
            order = sorted(got, key=lambda c: -c["tests_passed"])  # stable: ties in order
            assert ids(merged.candidates) == ids(order[:2])

        await fan_out(QUESTIONS, one)
    right_rate = passed["right"] / (4 * QUESTIONS)
    wrong_rate = passed["wrong"] / (8 * QUESTIONS)
    assert right_rate > 0.8 and wrong_rate < 0.2, (right_rate, wrong_rate)


async def test_unit_test_evaluator_first_k_stops_at_the_first_full_pass(mesh: str) -> None:
    async with AsyncClient(mesh) as client:
        async def one(i: int) -> None:
            k = key(i, difficulty=0.0)
            sent = candidates([k["wrong"][0], k["answer"], k["answer"], k["wrong"][1]])
            reply, merged = await ask(client, "unit_test_evaluator@sim:strong", {
                "messages": query(i), "candidates": sent, "tests": TEXT_TESTS, "sim": k,
                "params": {"first_k": 1}})
            calls = reply["usage"]["calls"]
            got = reply["candidates"]
            assert calls < len(sent)
            assert [c["verdict"] for c in got][calls - 1] is True
            assert all(c["tests_total"] is None for c in got[calls:])  # never evaluated
            assert [n["code"] for n in reply["notes"]] == ["early_stop"]
            assert [c.text for c in merged.candidates] == [k["answer"]]

        await fan_out(QUESTIONS, one)


async def test_unit_test_evaluator_runs_code_tests_in_the_sandbox(mesh: str) -> None:
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 0) == 0"]
    codes = {
        "minus": "def add(a, b):\n    return a - b",         # passes add(0, 0) only
        "right": "```python\ndef add(a, b):\n    return a + b\n```",
        "plus_one_if_big": "def add(a, b):\n    return a + b + (a > 1)",  # fails add(2, 2)
    }
    async with AsyncClient(mesh) as client:
        reply, merged = await ask(client, "unit_test_evaluator@sim:medium", {
            "messages": CODE_QUERY,
            "candidates": [{"id": name, "text": code} for name, code in codes.items()],
            "tests": tests, "params": {"task": "code", "timeout_s": 5.0}})
        # first_k with nobody passing everything: the merge falls back to most tests passed.
        first, chosen = await ask(client, "unit_test_evaluator@sim:medium", {
            "messages": CODE_QUERY,
            "candidates": [{"id": n, "text": codes[n]} for n in ("minus", "plus_one_if_big")],
            "tests": tests, "params": {"task": "code", "first_k": 1, "top_k": 1}})
    assert [(c["id"], c["tests_passed"]) for c in reply["candidates"]] == [
        ("minus", 1), ("right", 3), ("plus_one_if_big", 2)]
    assert [c.id for c in merged.candidates] == ["right", "plus_one_if_big", "minus"]
    assert reply["usage"]["calls"] == 0 and reply["parse"] == []
    assert [c["verdict"] for c in first["candidates"]] == [False, False]
    assert [c.id for c in chosen.candidates] == ["plus_one_if_big"]


# -- majority vote ------------------------------------------------------------------------------

async def test_majority_vote_reads_every_answer_and_the_merge_counts(mesh: str) -> None:
    texts = ["6 times 7 is 41, I think.", "So the answer is 42.", "We get $\\boxed{42}$.",
             "Adding up: 40 + 2 = 42\n#### 42", "The answer is 41.", "The answer is 42.0"]
    async with AsyncClient(mesh) as client:
        reply, merged = await ask(client, "majority_vote", {"candidates": candidates(texts)})
        _, two = await ask(client, "majority_vote", {
            "candidates": candidates(texts), "params": {"top_k": 2}})
        _, letters = await ask(client, "majority_vote", {"candidates": candidates(
            ["The answer is (B).", "Answer: C", "I'd say the answer is B.", "answer: (C)",
             "The answer is B"])})
        given, _ = await ask(client, "majority_vote", {"candidates": [
            {"id": "a", "text": "whatever", "answer": "  x\ny "}, {"id": "b", "text": "prose"}]})
        empty, nothing = await ask(client, "majority_vote", {"candidates": []})
    assert [c["answer"] for c in reply["candidates"]] == ["41", "42", "42", "42", "41", "42"]
    assert [c["meta"]["answer_method"] for c in reply["candidates"]] == [
        "last_number", "stated_number", "stated_number", "hash_marker", "stated_number",
        "stated_number"]
    (winner,) = merged.candidates
    assert winner.id == "c1" and winner.answer == "42"
    assert winner.meta["votes"] == 4 and winner.score == 4 / 6
    assert winner.meta["vote_counts"] == {"41": 2, "42": 4}
    assert [c.answer for c in two.candidates] == ["42", "41"]
    assert letters.candidates[0].answer == "B" and letters.candidates[0].meta["votes"] == 3
    assert [c["answer"] for c in given["candidates"]] == ["x y", "prose"]
    assert [n["code"] for n in given["notes"]] == ["no_final_answer"]
    assert empty["candidates"] == [] and nothing.candidates == []


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
    sent = [{"id": name, "text": code} for name, code in codes.items()]
    async with AsyncClient(mesh) as client:
        reply, merged = await ask(client, "code_tester", {
            "candidates": sent, "tests": tests, "params": {"timeout_s": 1.5}})
        _, top = await ask(client, "code_tester", {
            "candidates": sent, "tests": tests, "params": {"timeout_s": 1.5, "top_k": 1}})
        humaneval, _ = await ask(client, "code_tester", {
            "candidates": [{"id": "body", "text": "    return 2 * x\n"},
                           {"id": "wrong", "text": "def double(x):\n    return x + 2"}],
            "tests": [HUMANEVAL_CHECK],
            "params": {"entry_point": "double", "prompt": HUMANEVAL_PROMPT}})
        untested, kept = await ask(client, "code_tester", {
            "candidates": sent, "tests": [], "params": {"top_k": 2}})
    got = {c["id"]: c for c in reply["candidates"]}
    assert ids(reply["candidates"]) == list(codes)  # every candidate back, in input order
    assert ids(merged.candidates)[:2] == ["right", "off"]
    assert (got["right"]["tests_passed"], got["right"]["verdict"]) == (3, True)
    assert got["off"]["tests_passed"] == 2
    status = {name: got[name]["meta"]["execution"]["status"] for name in codes}
    assert status == {"loops": "timeout", "syntax": "failed", "exits": "crashed",
                      "off": "failed", "right": "passed"}
    assert got["syntax"]["meta"]["execution"]["load_error"].startswith("SyntaxError")
    assert all(got[n]["tests_passed"] == 0 for n in ("loops", "syntax", "exits"))
    # the infinite loop was cut at its time limit (status "timeout"), not waited out
    assert ids(top.candidates) == ["right"]
    assert [(c["id"], c["tests_passed"], c["tests_total"]) for c in humaneval["candidates"]] == [
        ("body", 1, 1), ("wrong", 0, 1)]
    assert [n["code"] for n in untested["notes"]] == ["no_tests"]
    assert ids(kept.candidates) == ["loops", "syntax"] and kept.problems
