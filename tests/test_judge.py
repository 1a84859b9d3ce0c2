"""The judge technique and ``ServiceJudge``: real agent processes behind a real broker.

Two kinds of judge serve the module: ``judge@openai:fake``, the openai provider over real
HTTP against a local server whose "model" follows a rule the test sets (prefer the answer
that says 42, always say A, or write garbage), and the simulated judges of
configs/pools/sim_judge.yaml, whose verdicts follow the sim provider's documented model
(a judge perceives an answer's correctness with accuracy a = 0.5 + 0.5 * p_solve), so
their average grades are predicted and checked within sampling error.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from itas.agents.providers.sim import p_solve
from itas.benchmarks import load_benchmark
from itas.benchmarks.question import Question, user
from itas.client import AsyncClient
from itas.errors import ConfigError, RemoteError
from itas.evaluation.judging import JudgeError, ServiceJudge, judge_service
from itas.techniques.base import service_name
from itas.techniques.judge import OutputFormatError, parse_game, parse_rating
from tests.helpers import DATA_DIR, Processes
from tests.servers.fake_llm import FakeLLMServer
from tests.test_eval_cli import pool_entries, wait_for

pytestmark = pytest.mark.anyio

GARBAGE = "Both answers have their merits, honestly."
STRONG, WEAK = "judge@sim:strong", "judge@sim:weak"
TIMEOUT_S = 30.0
ANSWER_HEADER = "## The assistant's answer to the last user message\n"
A_RE = re.compile(r"## Assistant A's answer\n(.*?)\n\n## Assistant B's answer\n(.*?)\n\n"
                  r"Compare the two", re.DOTALL)


def prefer_42(prompt: str) -> str:
    """A rule-following "judge": the answer that says 42 is the good one."""
    pair = A_RE.search(prompt)
    if pair:
        a, b = ("42" in text for text in pair.groups())
        return "Checked both.\n" + ("[[A>B]]" if a > b else "[[B>A]]" if b > a else "[[A=B]]")
    answer = prompt.split(ANSWER_HEADER, 1)[1]
    return "Checked it.\nRating: [[9]]" if "42" in answer.split("\n\nGrade the answer")[0] \
        else "Checked it.\nRating: [[2]]"


class JudgeLLM(FakeLLMServer):
    """Answers with the queued texts first, then by ``policy`` of the last user message."""

    def __init__(self) -> None:
        super().__init__()
        self.script: collections.deque[str] = collections.deque()
        self.policy: Callable[[str], str] = prefer_42

    def openai_reply(self, request: dict[str, Any]) -> dict[str, Any]:
        reply = super().openai_reply(request)
        try:
            text = self.script.popleft()
        except IndexError:
            text = self.policy(request["messages"][-1]["content"])
        reply["choices"][0]["message"]["content"] = text
        return reply

    def bodies(self, since: int) -> list[dict[str, Any]]:
        return [post.json() for post in self.posts()[since:]]


@pytest.fixture(scope="module")
def llm() -> Iterator[JudgeLLM]:
    with JudgeLLM() as server:
        yield server


@pytest.fixture(scope="module")
def mesh(llm: JudgeLLM) -> Iterator[str]:
    processes = Processes()
    try:
        broker = processes.broker()
        processes.agent(broker.endpoint, "judge", {
            "provider": "openai", "model": "fake", "base_url": llm.url + "/v1", "cache": False})
        entries = pool_entries()
        for service in (STRONG, WEAK):
            processes.agent(broker.endpoint, "judge", dict(entries[service].settings))
        wait_for(broker.endpoint, [fake_service(llm), STRONG, WEAK])
        yield broker.endpoint
    finally:
        processes.stop_all()


def fake_service(llm: JudgeLLM) -> str:
    """The judge on the scripted server: its endpoint is part of its service name."""
    return service_name("judge", "openai", "fake", base_url=llm.url + "/v1")


@pytest.fixture
def fake_judge(llm: JudgeLLM) -> str:
    return fake_service(llm)


@pytest.fixture(autouse=True)
def reset(llm: JudgeLLM) -> Iterator[None]:
    llm.script.clear()
    llm.policy = prefer_42
    yield


def chat(qid: str, benchmark: str = "mt_bench", **fields: Any) -> Question:
    return Question(id=qid, benchmark=benchmark, messages=user("What is 6 * 7?"), **fields)


# -- parsing (pure) ----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "value", "method"), [
    ("Fine work.\nRating: [[7]]", 7, "brackets"),
    ("[[ 10 ]]", 10, "brackets"),
    ("An example: Rating: [[3]]. My verdict: Rating: [[8]]", 8, "brackets"),
    ("Solid.\nRating: 8/10", 8, "rating_line"),
    ("**Rating:** 4", 4, "rating_line"),
])
def test_rating_formats(text: str, value: int, method: str) -> None:
    parsed = parse_rating(text)
    assert (parsed.value, parsed.method) == (value, method)


@pytest.mark.parametrize("text", ["Rating: [[0]]", "[[11]]", "Rating: [[7.5]]", "Good answer.",
                                  "I would give it a seven"])
def test_unreadable_ratings_are_format_errors(text: str) -> None:
    with pytest.raises(OutputFormatError):
        parse_rating(text)


@pytest.mark.parametrize(("text", "outcome", "verdict"), [
    ("[[A>>B]]", "win", "A>>B"), ("reasons\n[[A>B]]", "win", "A>B"), ("[[A=B]]", "tie", "A=B"),
    ("[[B>A]]", "loss", "B>A"), ("[[B>>A]]", "loss", "B>>A"), ("[[B<A]]", "win", "B<A"),
    ("[[a<<b]]", "loss", "A<<B"), ("[[A>B]] at first, but on reflection [[B>A]]", "loss", "B>A"),
])
def test_verdict_formats(text: str, outcome: str, verdict: str) -> None:
    assert parse_game(text).value == (outcome, verdict)


@pytest.mark.parametrize("text", ["A is better", "[[A>A]]", "[[C]]", "Verdict: A>B"])
def test_unreadable_verdicts_are_format_errors(text: str) -> None:
    with pytest.raises(OutputFormatError):
        parse_game(text)


def test_judge_service_names() -> None:
    assert judge_service("sim:strong") == STRONG
    assert judge_service("judge@openai:gpt-4o") == "judge@openai:gpt-4o"
    with pytest.raises(ConfigError, match="PROVIDER:MODEL"):
        judge_service("strong")


# -- single-answer grading ---------------------------------------------------------------------

async def test_single_grading_with_reference_and_turns(mesh: str, llm: JudgeLLM, fake_judge: str) -> None:
    question = Question(
        id="q1", benchmark="mt_bench", messages=user("What is 6 * 7?"),
        reference=["42", "SECOND-TURN-REFERENCE"], turns=("What is 6 * 7?", "And 6 * 8?"),
        answer_key={"id": "x", "answer": "SECRET-KEY"})
    turn2 = dataclasses.replace(question, messages=question.conversation(["It is 42."]),
                                turns=(), metadata={"turn": 2})
    before = len(llm.posts())
    async with AsyncClient(mesh) as client:
        judge = ServiceJudge(client, fake_judge)
        good = await judge(question, "6 * 7 = 42.")
        bad = await judge(turn2, "6 * 8 = 47.")
        usage = judge.take_usage(question)
    assert (good.value, good.correct) == (0.9, None) and "rating 9/10" in good.detail
    assert (bad.value, bad.detail.startswith("turn 2: rating 2/10")) == (0.2, True)
    first, second = llm.bodies(before)
    assert first["temperature"] == 0.0 and second["temperature"] == 0.0
    prompt2 = second["messages"][-1]["content"]
    assert "[user]\nWhat is 6 * 7?" in prompt2 and "[assistant]\nIt is 42." in prompt2
    assert "SECOND-TURN-REFERENCE" in prompt2 and "6 * 8 = 47." in prompt2
    assert "SECRET-KEY" not in json.dumps(llm.bodies(before))
    assert usage["calls"] == 2 and usage["tokens"] > 0  # both turns share the question


async def test_unreadable_rating_is_re_asked_then_unrated(mesh: str, llm: JudgeLLM, fake_judge: str) -> None:
    before = len(llm.posts())
    llm.script.extend(["Rating: [[11]]", "Rating: 7/10"])
    async with AsyncClient(mesh) as client:
        reply = await client.request(fake_judge, {"messages": user("Q?"), "candidates": [
            {"id": "a", "text": "answer"}]}, timeout=TIMEOUT_S)
        assert len(llm.bodies(before)) == 2
        (record,) = reply["parse"]
        assert (record["ok"], record["method"], record["retries"]) == (True, "rating_line", 1)
        assert "not a whole number from 1 to 10" in llm.bodies(before)[1]["messages"][-1][
            "content"]
        assert reply["candidates"][0]["meta"]["rating"] == 7
        assert reply["candidates"][0]["score"] == 0.7

        llm.script.extend([GARBAGE] * 3)
        before = len(llm.posts())
        with pytest.raises(JudgeError, match="no readable rating"):
            await ServiceJudge(client, fake_judge)(chat("q2"), "answer")
    assert len(llm.bodies(before)) == 3  # one call, two re-asks, then the fallback


async def test_unrated_reply_records_its_fallback(mesh: str, llm: JudgeLLM, fake_judge: str) -> None:
    llm.script.extend([GARBAGE] * 3)
    async with AsyncClient(mesh) as client:
        reply = await client.request(fake_judge, {"messages": user("Q?"), "candidates": [
            {"id": "a", "text": "answer"}]}, timeout=TIMEOUT_S)
    (record,) = reply["parse"]
    assert (record["ok"], record["fallback"], record["retries"]) == (False, "unrated", 2)
    candidate = reply["candidates"][0]
    assert candidate["score"] is None and candidate["meta"]["rating"] is None


# -- pairwise ----------------------------------------------------------------------------------

async def test_pairwise_plays_both_orders(mesh: str, llm: JudgeLLM, fake_judge: str) -> None:
    question = chat("p1", "arena_hard")
    before = len(llm.posts())
    async with AsyncClient(mesh) as client:
        judge = ServiceJudge(client, fake_judge, baselines={"p1": "It is 41."})
        win = await judge(question, "It is 42.")
        bodies = llm.bodies(before)
        loss = await ServiceJudge(client, fake_judge, baselines={"p1": "It is 42."})(
            question, "It is 41.")
        llm.policy = lambda _prompt: "[[A>B]]"  # a judge that always favours the first shown
        biased = await judge(question, "It is 42.")
    assert (win.value, win.correct) == (1.0, True) and (loss.value, loss.correct) == (0.0, False)
    assert "answer_first: A>B" in win.detail and "baseline_first: B>A" in win.detail
    firsts = sorted(A_RE.search(b["messages"][-1]["content"]).group(1) for b in bodies)
    assert firsts == ["It is 41.", "It is 42."]  # each answer shown first once
    assert (biased.value, biased.correct) == (0.5, False)  # position bias cancels out


async def test_pairwise_unreadable_games_are_ties(mesh: str, llm: JudgeLLM, fake_judge: str) -> None:
    llm.policy = lambda _prompt: GARBAGE
    async with AsyncClient(mesh) as client:
        reply = await client.request(fake_judge, {
            "messages": user("Q?"), "params": {"mode": "pairwise"},
            "candidates": [{"id": "answer", "text": "x"}, {"id": "baseline", "text": "y"}]},
            timeout=TIMEOUT_S)
    assert [(p["ok"], p["fallback"]) for p in reply["parse"]] == [(False, "tie")] * 2
    answer, baseline = reply["candidates"]
    assert (answer["score"], baseline["score"]) == (0.5, 0.5)
    assert [g["verdict"] for g in answer["meta"]["games"]] == [None, None]


async def test_baseline_from_reference_or_missing(mesh: str, fake_judge: str) -> None:
    alpaca = chat("a1", "alpaca_eval", reference="It is 41.")
    async with AsyncClient(mesh) as client:
        judge = ServiceJudge(client, fake_judge)
        assert (await judge(alpaca, "It is 42.")).value == 1.0
        with pytest.raises(JudgeError, match="baseline"):
            await judge(chat("none", "arena_hard"), "It is 42.")


@pytest.mark.parametrize(("body", "problem"), [
    ({"params": {"mode": "pairwise"}, "candidates": [{"id": "a", "text": "x"}]},
     "exactly two candidates"),
    ({"params": {"mode": "listwise"}, "candidates": [{"id": "a", "text": "x"}]}, "params.mode"),
    ({"candidates": []}, "needs the answer"),
])
async def test_bad_requests_name_the_field(mesh: str, body: dict[str, Any], problem: str, fake_judge: str) -> None:
    async with AsyncClient(mesh) as client:
        with pytest.raises(RemoteError, match="bad_request") as caught:
            await client.request(fake_judge, {"messages": user("Q?"), **body}, timeout=TIMEOUT_S)
    assert problem in str(caught.value)


# -- simulated judges --------------------------------------------------------------------------

def accuracy(skill: float, difficulty: float) -> float:
    return 0.5 + 0.5 * p_solve(skill, difficulty)


def within(observed: float, means: list[float], variances: list[float]) -> tuple[bool, str]:
    n = len(means)
    expected, se = sum(means) / n, math.sqrt(sum(variances)) / n
    return abs(observed - expected) <= 3 * se, f"{observed:.3f} vs {expected:.3f} ± {se:.3f}"


async def test_sim_judges_grade_as_their_skill_predicts(mesh: str) -> None:
    questions = load_benchmark("gsm8k", limit=30, data_dir=DATA_DIR)
    entries = pool_entries()
    pairwise_means: dict[str, float] = {}
    async with AsyncClient(mesh) as client:
        for service in (STRONG, WEAK):
            skill = float(entries[service].settings["skill"])
            acc = [accuracy(skill, q.answer_key["difficulty"]) for q in questions]
            judge = ServiceJudge(client, service)
            right = [await judge(q, q.answer_key["answer"]) for q in questions]
            wrong = [await judge(q, q.answer_key["wrong"][0]) for q in questions]
            # Rated 7..10 (mean 8.5) when taken for correct, else 1..4 (mean 2.5).
            var = [1.25 + 36 * a * (1 - a) for a in acc]
            ok, why = within(sum(10 * s.value for s in right) / 30, [2.5 + 6 * a for a in acc],
                             var)
            assert ok, f"{service} on right answers: {why}"
            ok, why = within(sum(10 * s.value for s in wrong) / 30,
                             [8.5 - 6 * a for a in acc], var)
            assert ok, f"{service} on wrong answers: {why}"
            # Pairwise right vs wrong: the answer wins each game with probability a.
            arena = [dataclasses.replace(q, benchmark="arena_hard") for q in questions]
            pair = ServiceJudge(client, service,
                                baselines={q.id: q.answer_key["wrong"][0] for q in arena})
            scores = [(await pair(q, q.answer_key["answer"])).value for q in arena]
            pairwise_means[service] = sum(scores) / 30
            ok, why = within(pairwise_means[service], acc, [a * (1 - a) / 2 for a in acc])
            assert ok, f"{service} pairwise: {why}"
    assert pairwise_means[STRONG] > pairwise_means[WEAK]

