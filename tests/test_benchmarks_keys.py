"""Answer keys for simulated models, graded by each benchmark's own scorer.

The key's "answer" must score as correct and every "wrong" as incorrect, on
samples of the real files (code benchmarks run in the real sandbox).
"""

from __future__ import annotations

import functools
from pathlib import Path

import anyio
import pytest

from itas.benchmarks import Question, difficulty, load_benchmark, scorer_for

pytestmark = pytest.mark.anyio

DATA = Path(__file__).parents[2] / "shared" / "data"
SAMPLES = {"gsm8k": 50, "math500": 50, "humaneval": 15, "mbpp": 15, "mixeval_hard_mc": 500}


@functools.cache
def sample(name: str) -> tuple[Question, ...]:
    return tuple(load_benchmark(name, limit=SAMPLES[name], seed=7, data_dir=DATA))


@pytest.mark.parametrize("name", sorted(SAMPLES))
async def test_answer_scores_correct_and_wrong_answers_do_not(name: str) -> None:
    scorer = scorer_for(name, limiter=anyio.CapacityLimiter(2))
    failures: list[str] = []

    async def grade(question: Question) -> None:
        key = question.answer_key
        assert key is not None
        right = await scorer.score(question, key["answer"])
        if not right.correct or right.value != 1.0:
            failures.append(f"{question.id} answer: {right.detail}")
        for i, text in enumerate(key["wrong"]):
            wrong = await scorer.score(question, text)
            if wrong.correct or wrong.value != 0.0:
                failures.append(f"{question.id} wrong[{i}]: {wrong.detail}")

    questions = sample(name)
    assert 0 < len(questions) <= SAMPLES[name]
    async with anyio.create_task_group() as tg:
        for question in questions:
            tg.start_soon(grade, question)
    assert not failures, failures


def test_keys_are_deterministic_and_shared() -> None:
    first = {q.id: q.answer_key for q in load_benchmark("gsm8k", limit=30, data_dir=DATA)}
    again = {q.id: q.answer_key for q in load_benchmark("gsm8k", limit=30, data_dir=DATA)}
    assert first == again
    difficulties = [key["difficulty"] for key in first.values()]
    assert all(0.0 <= d < 1.0 for d in difficulties) and len(set(difficulties)) == len(difficulties)
    some_id = next(iter(first))
    assert first[some_id]["difficulty"] == difficulty("gsm8k", some_id)


def test_wrong_code_answers_are_mutated_canonical_solutions() -> None:
    question = next(q for q in sample("humaneval"))
    key = question.answer_key
    assert (
        key["answer"].startswith("```python\n")
        and question.metadata["entry_point"] in key["answer"]
    )
    assert "return None" in key["wrong"][0]
    assert all(f"def {question.metadata['entry_point']}(" in w for w in key["wrong"])


def test_gsm8k_wrong_answers_are_slips_of_the_final_number() -> None:
    question = load_benchmark("gsm8k", data_dir=DATA)[0]  # Janet's ducks: 18
    key = question.answer_key
    assert key["answer"].endswith("The answer is 18.") and "<<" not in key["answer"]
    finals = [w.rsplit("The answer is ", 1)[1] for w in key["wrong"]]
    assert set(finals) <= {"17.", "19.", "180.", "36.", "28."} and len(finals) == 3
