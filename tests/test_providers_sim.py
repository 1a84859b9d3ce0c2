"""Simulated models: determinism, skill ordering, correlated errors, judging preferences."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
from typing import Any

import anyio
import pytest

from itas.agents.providers import SimTask, make_provider
from itas.agents.providers.sim import (
    NOTE_PREFIX,
    WRONG_DECAY,
    SimProvider,
    is_correct,
    p_solve,
    without_notes,
)
from itas.errors import ConfigError, ProviderError

pytestmark = pytest.mark.anyio

N_KEYS = 500
SIGMAS = 4.5  # tolerance for sampling error; the checks below are on means of ~500 draws


def keys(n: int = N_KEYS, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "id": f"q{i}",
            "answer": f"{i * 3}",
            "wrong": [f"{i * 3 + 1}", f"{i * 3 - 1}", f"{i * 3 + 10}"],
            "difficulty": rng.random(),
        }
        for i in range(n)
    ]


async def decide(
    p: SimProvider,
    role: str,
    key: dict[str, Any] | None,
    candidates: tuple[str, ...] = (),
    *,
    model: str = "m",
    sample_index: int = 0,
    temperature: float = 0.7,
    **extra: Any,
) -> Any:
    task = SimTask(role=role, key=key, candidates=candidates, render=json.dumps, extra=extra)
    result = await p.complete(
        [{"role": "user", "content": "q"}],
        model=model,
        sim=task,
        sample_index=sample_index,
        temperature=temperature,
    )
    decision = json.loads(result.text)
    # The answer past the working notes (see test_generated_texts_are_distinct...).
    return without_notes(decision) if role == "generate" and key is not None else decision


def within(observed: float, expected: float, n: int) -> bool:
    sd = math.sqrt(max(expected * (1 - expected), 1e-9) / n)
    return abs(observed - expected) <= SIGMAS * sd + 1e-9


async def test_same_inputs_same_outputs_and_samples_differ() -> None:
    p = SimProvider({"skill": 0.5, "seed": 3})
    key = keys(1)[0] | {"difficulty": 0.5}
    first = [await decide(p, "generate", key, sample_index=i) for i in range(40)]
    again = [
        await decide(SimProvider({"skill": 0.5, "seed": 3}), "generate", key, sample_index=i)
        for i in range(40)
    ]
    assert first == again
    assert len(set(first)) > 1  # p = 0.5: samples disagree
    other_seed = [
        await decide(SimProvider({"skill": 0.5, "seed": 4}), "generate", key, sample_index=i)
        for i in range(40)
    ]
    assert other_seed != first
    greedy = {await decide(p, "generate", key, sample_index=i, temperature=0) for i in range(10)}
    assert len(greedy) == 1  # temperature 0: every sample is the same


def test_deterministic_across_processes() -> None:
    """Seeds come from a stable hash, not Python's per-process salted hash()."""
    code = (
        "import anyio, json; from itas.agents.providers.sim import SimProvider;"
        "from itas.agents.providers import SimTask;"
        "p = SimProvider({'skill': 0.5});"
        "k = {'id': 'x', 'answer': '1', 'wrong': ['2', '3'], 'difficulty': 0.5};"
        "r = [anyio.run(lambda i=i: p.complete([], model='m', sample_index=i,"
        " sim=SimTask('generate', k))) for i in range(30)];"
        "print(json.dumps([c.text for c in r]))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1 and "[" in outputs.pop()


async def test_higher_skill_is_right_more_often_as_modelled() -> None:
    ks = keys()
    accuracy = {}
    for skill in (0.3, 0.8):
        p = SimProvider({"skill": skill})
        answers = [await decide(p, "generate", k) for k in ks]
        observed = sum(a == k["answer"] for a, k in zip(answers, ks, strict=True)) / len(ks)
        expected = sum(p_solve(skill, k["difficulty"]) for k in ks) / len(ks)
        assert within(observed, expected, len(ks)), (skill, observed, expected)
        accuracy[skill] = observed
    assert accuracy[0.8] > accuracy[0.3] + 0.2


async def test_wrong_answers_are_shared_across_models() -> None:
    ks = keys()
    a, b = SimProvider({"skill": 0.3}), SimProvider({"skill": 0.3})
    both_wrong = same = 0
    wrong_a = wrong_b = 0
    for k in ks:
        x = await decide(a, "generate", k, model="model-a")
        y = await decide(b, "generate", k, model="model-b")
        wrong_a += x != k["answer"]
        wrong_b += y != k["answer"]
        if x != k["answer"] and y != k["answer"]:
            both_wrong += 1
            same += x == y
    weights = [WRONG_DECAY**i for i in range(3)]
    expected_same = sum((w / sum(weights)) ** 2 for w in weights)
    assert within(same / both_wrong, expected_same, both_wrong)
    assert same / both_wrong > 1 / 3 + 0.1  # clearly above picking wrong answers uniformly
    # Errors also co-occur: hard questions are hard for both models.
    n = len(ks)
    assert both_wrong / n > (wrong_a / n) * (wrong_b / n) + 0.05


async def test_ranking_compare_and_critique_prefer_correct_candidates() -> None:
    ks = keys(300)
    top_correct = {}
    for skill in (0.2, 0.9):
        p = SimProvider({"skill": skill})
        hits = compare_hits = critique_hits = 0
        for k in ks:
            cands = (k["wrong"][0], k["answer"], k["wrong"][1])
            order = await decide(p, "rank", k, cands)
            assert sorted(order) == [0, 1, 2]
            hits += order[0] == 1
            compare_hits += await decide(p, "compare", k, (k["wrong"][0], k["answer"])) == 1
            verdicts = await decide(p, "critique", k, cands)
            critique_hits += sum(v == (i == 1) for i, v in enumerate(verdicts))
        expected_acc = sum(0.5 + 0.5 * p_solve(skill, k["difficulty"]) for k in ks) / len(ks)
        assert within(compare_hits / len(ks), expected_acc, len(ks))
        assert within(critique_hits / (3 * len(ks)), expected_acc, 3 * len(ks))
        top_correct[skill] = hits / len(ks)
    assert top_correct[0.9] > top_correct[0.2] + 0.15
    assert top_correct[0.9] > 1 / 3 + 0.3  # far better than a random order


async def test_fusion_helps_with_good_candidates_and_suffers_without() -> None:
    ks = keys(300)
    p = SimProvider({"skill": 0.6})
    solo = with_good = with_bad = 0
    for k in ks:
        solo += await decide(p, "generate", k) == k["answer"]
        good = (k["answer"], k["answer"], k["wrong"][0], k["answer"], k["wrong"][1])
        with_good += await decide(p, "fuse", k, good) == k["answer"]
        bad = (k["wrong"][0], k["wrong"][0], k["wrong"][1])
        with_bad += await decide(p, "fuse", k, bad) == k["answer"]
    assert with_good > solo + 30 and with_bad < solo - 30


async def test_unit_tests_judge_and_blind_roles() -> None:
    k = keys(1)[0] | {"tests": ["assert f(1) == 3", "assert f(2) == 6"], "difficulty": 0.0}
    p = SimProvider({"skill": 1.0})
    assert await decide(p, "write_tests", k) == k["tests"]
    generic = await decide(p, "write_tests", keys(1)[0])
    assert len(generic) >= 2 and all(isinstance(t, str) for t in generic)
    passed = await decide(p, "run_tests", k, (k["answer"],), tests=k["tests"])
    failed = await decide(p, "run_tests", k, (k["wrong"][0],), tests=k["tests"])
    assert passed == [True, True] and failed == [False, False]
    good = await decide(p, "judge", k, (k["answer"],))
    bad = await decide(p, "judge", k, (k["wrong"][0],))
    assert 7 <= good <= 10 and 1 <= bad <= 4
    blind = [await decide(p, "judge", None, ("some essay",), sample_index=i) for i in range(20)]
    assert all(1 <= s <= 10 for s in blind)
    text = await decide(p, "generate", None)
    assert text.startswith("Simulated answer:") and text == await decide(p, "generate", None)
    with pytest.raises(ProviderError, match="extra\\['tests'\\]"):
        await decide(p, "run_tests", k, (k["answer"],))
    with pytest.raises(ProviderError, match="exactly 2"):
        await decide(p, "compare", k, ("a", "b", "c"))
    with pytest.raises(ProviderError, match="unknown SimTask role"):
        await decide(p, "dance", k)


async def test_without_simtask_text_depends_on_the_messages() -> None:
    p = SimProvider({})
    a = await p.complete([{"role": "user", "content": "one"}], model="m")
    b = await p.complete([{"role": "user", "content": "two"}], model="m")
    assert a.text != b.text and a.text.startswith("Simulated answer:")


def test_is_correct_matches_whole_answers_only() -> None:
    key = {"answer": "The answer is 42.", "final": "42"}
    assert is_correct("  The answer   is 42. ", key)
    assert is_correct("so we get 42", key) and is_correct("#### 42", key)
    assert not is_correct("so we get 142", key) and not is_correct("42.5 in total", key)
    assert not is_correct("0.42", key)
    assert not is_correct("The answer is 43.", {"answer": "The answer is 42."})


async def test_latency_tokens_and_cost() -> None:
    p = SimProvider(
        {
            "latency": {"mean_s": 0.1, "jitter_s": 0.05},
            "tokens_per_answer": 100,
            "price_in_per_mtok": 1.0,
            "price_out_per_mtok": 10.0,
        }
    )
    messages = [{"role": "user", "content": "x" * 400}]
    outs = []
    for i in range(5):
        start = time.perf_counter()
        outs.append(await p.complete(messages, model="m", sample_index=i, max_tokens=50))
        assert time.perf_counter() - start >= 0.9 * outs[-1].usage.latency_s  # it really slept
    assert all(0.05 <= o.usage.latency_s <= 0.15 for o in outs)
    assert len({o.usage.latency_s for o in outs}) > 1
    assert all(o.usage.completion_tokens == 50 for o in outs)  # capped by max_tokens
    prompt_tokens = outs[0].usage.prompt_tokens
    assert prompt_tokens >= 100
    assert outs[0].usage.cost_usd == pytest.approx((prompt_tokens * 1.0 + 50 * 10.0) / 1e6)


async def test_max_concurrency_queues_calls() -> None:
    p = SimProvider({"latency": 0.05, "max_concurrency": 1})
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(lambda i=i: p.complete([], model="m", sample_index=i))
    assert time.perf_counter() - start >= 0.14  # three 0.05 s calls, one at a time


def test_sim_settings_errors_and_no_cache_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("ITAS_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("ITAS_CACHE", raising=False)
    assert isinstance(make_provider("sim", {"skill": 0.4}), SimProvider)
    for bad, match in [
        ({"skill": "high"}, "'skill' must be a number"),
        ({"latency": -1}, "'latency' must be seconds"),
        ({"tokens_per_answer": 0}, "'tokens_per_answer' must be in"),
        ({"skil": 0.4}, "unknown setting"),
    ]:
        with pytest.raises(ConfigError, match=match):
            make_provider("sim", bad)


async def test_malformed_answer_keys_are_named() -> None:
    p = SimProvider({})
    with pytest.raises(ProviderError, match="'q9' has no 'answer'"):
        await decide(p, "generate", {"id": "q9"})
    with pytest.raises(ProviderError, match="'difficulty' must be a number"):
        await decide(p, "generate", {"id": "q9", "answer": "1", "difficulty": "hard"})
    assert await decide(p, "generate", {"id": "q9", "answer": "1", "difficulty": None}) in (
        "1",
        "2",
        "0",
        "11",
    )


async def test_generated_texts_are_distinct_but_read_as_their_answer() -> None:
    """Same answer, other model or sample: another text (no shared judging prompts), which
    every answer reader and ``is_correct`` still read as that answer."""
    from itas.answers.choice import chosen_option
    from itas.answers.numeric import extract_number

    texts: dict[str, set[str]] = {}
    for k in keys(60):
        for model in ("a", "b"):
            p = SimProvider({"skill": 1.0})
            for i in range(3):
                task = SimTask(role="generate", key=k, render=str)
                result = await p.complete([{"role": "user", "content": "q"}], model=model,
                                          sim=task, sample_index=i)
                text = result.text
                answer = without_notes(text)
                assert text.startswith(NOTE_PREFIX) and answer in (k["answer"], *k["wrong"])
                assert is_correct(text, k) is (answer == k["answer"])
                assert extract_number(text) == extract_number(answer)
                assert not any(ch.isdigit() for ch in text.split("\n", 1)[0])
                texts.setdefault(k["id"], set()).add(text)
    assert all(len(found) == 6 for found in texts.values())  # 2 models x 3 samples
    letter = "Working notes: first check each step again.\nThe answer is C."
    assert chosen_option(letter, ["w", "x", "y", "z"]) == 2
    greedy = SimProvider({"skill": 1.0})
    same = {(await greedy.complete([{"role": "user", "content": "q"}], model="a",
                                   sim=SimTask(role="generate", key=keys(1)[0], render=str),
                                   sample_index=i, temperature=0)).text for i in range(4)}
    assert len(same) == 1
