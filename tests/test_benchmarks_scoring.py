"""Scorer edge cases: how models actually write answers, and code that misbehaves."""

from __future__ import annotations

import time
from fractions import Fraction

import anyio
import pytest

from itas.answers import mathequiv
from itas.answers.choice import chosen_option
from itas.answers.mathequiv import equivalent, extract_answer
from itas.answers.numeric import extract_number
from itas.benchmarks import (
    BENCHMARKS,
    JudgeScorer,
    Question,
    Score,
    score_answer,
    scorer_for,
)
from itas.benchmarks.codeexec import CodeScorer
from itas.benchmarks.scoring import score_number
from itas.errors import ConfigError
from itas.execution.programs import extract_code, humaneval_program

pytestmark = pytest.mark.anyio


# ------------------------------------------------------------------ GSM8K


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("She makes 9 * 2 = $18 every day.\nThe answer is 72.", 72),
        ("... #### 1,234", 1234),
        ("The total is $1,234.50 in the end.", Fraction(246_9, 2)),
        ("So she pays 72 dollars.", 72),
        ("seventy-two", 72),
        ("The answer is seventy-two apples.", 72),
        ("one hundred and five", 105),
        ("The answer is: -3", -3),
        ("It dropped to -5 degrees.", -5),
        ("x is 5.0", 5),
        ("16-3=13", 13),
        (r"Therefore \boxed{18} is it, checked with 3 more steps", 18),
        ("About 50% of them", 50),
        ("3/4 of the cake", Fraction(3, 4)),
        ("The answer is 17, not seventeen", 17),
        ("The answer is 18. Check: 9 + 9 = 18 and 2 * 9 = 18, so 36 halves.", 18),
        ("nothing numeric here", None),
    ],
)
def test_numeric_extraction(text: str, value: Fraction | int | None) -> None:
    assert extract_number(text) == (None if value is None else Fraction(value))


def test_numeric_comparison() -> None:
    assert score_number("1,450,000", "The answer is 1450000.").correct
    assert not score_number("1,450,000", "The answer is 1449999.").correct
    assert score_number("5", "The answer is 5.00").correct
    assert score_number("0.3", "0.30000000000000004").correct
    missing = score_number("18", "I am not sure.")
    assert not missing.correct and "no number found" in missing.detail


# ------------------------------------------------------------------ MATH


@pytest.mark.parametrize(
    ("answer", "reference"),
    [
        (r"\dfrac12", r"\frac{1}{2}"),
        ("0.5", r"\frac12"),
        (r"\frac{\sqrt{3}}{3}", r"\frac{1}{\sqrt3}"),
        (r"90^\circ", "90"),
        ("90 degrees", r"90^{\circ}"),
        ("x=5", "5"),
        ("5.", "5"),
        ("Evelyn", r"\text{Evelyn}"),
        ("C", r"\text{(C)}"),
        ("10080", r"10,\!080"),
        ("32348", r"\$32,\!348"),
        ("864", r"864 \mbox{ inches}^2"),
        (r"(3, \pi/2)", r"\left( 3, \frac{\pi}{2} \right)"),
        ("-2, 1", "1,-2"),
        (r"1+\sqrt{19}, 1-\sqrt{19}", r"1 \pm \sqrt{19}"),
        ("2(k+1)", "2k+2"),
        ("-5i+6", "6 - 5i"),
        (
            r"\begin{pmatrix} -\frac13 \\ \frac23 \end{pmatrix}",
            r"\begin{pmatrix} -1/3 \\ 2/3 \end{pmatrix}",
        ),
        (r"\frac95", r"1\frac{4}{5}"),
        ("137.5", r"137 \frac{1}{2}"),
        (r"\frac{270}{7}", r"\frac{270}7\text{ degrees}"),
        (r"\sqrt{117}", r"3\sqrt{13}"),
        (r"\{-2, 1+\sqrt5, 1-\sqrt5\}", r"\{1\pm\sqrt{5},-2\}"),
        ("[-2,7]", r"x \in [-2,7]"),
        ("2x+3", "y = 2x + 3"),
        ("1267650600228229401496703205376", "2^{100}"),
    ],
)
def test_math_equivalent(answer: str, reference: str) -> None:
    assert equivalent(answer, reference)


@pytest.mark.parametrize(
    ("answer", "reference"),
    [
        ("(3,4)", "(3,4]"),
        ("y^3+3y-6", "x^3+3x-6"),
        (r"(-\infty,1]", r"(-\infty, 0]"),
        ("53_8", "52_8"),
        (r"\frac44", r"\frac43"),
        ("11111111102", r"11,\! 111,\! 111,\! 100"),
        ("(1,2,3)", "(1,2)"),
        ("E", "e"),
        ("B", "(C)"),
    ],
)
def test_math_not_equivalent(answer: str, reference: str) -> None:
    assert not equivalent(answer, reference)


def test_math_extraction() -> None:
    text = (
        r"So $x = \boxed{\frac{\sqrt{2}}{2}}$, and we also check "
        r"\boxed{\left( 3, \frac{\pi}{2} \right)}."
    )
    assert extract_answer(text) == r"\left( 3, \frac{\pi}{2} \right)"
    assert extract_answer(r"so the result is \boxed 5.") == "5."
    assert extract_answer(
        "Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct."
    ) == (r"\frac{3}{4}")
    assert extract_answer("no final answer") is None


def test_math_input_is_not_evaluated_as_python() -> None:
    assert not equivalent("__import__('os').system('touch /tmp/itas-pwned')", "0")
    assert not equivalent("x.__class__", "x")
    started = time.monotonic()
    assert not equivalent("9^{9^{9^{9}}}", "1")  # refused, not computed
    assert time.monotonic() - started < 5  # a guard against a hang, not a speed target


def test_math_without_sympy_falls_back_to_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mathequiv, "_sympy", lambda: None)
    assert equivalent(r"\dfrac{1}{2}", r"\frac12")
    assert equivalent(r"90^\circ", "90")
    assert not equivalent("0.5", r"\frac12")  # needs sympy to decide


async def test_math_scorer() -> None:
    question = Question(
        "q", "math500", [{"role": "user", "content": "?"}], reference=r"\frac{3}{2}"
    )
    assert (await scorer_for("math500").score(question, r"It is \boxed{1.5}")).correct
    missing = await scorer_for("math500").score(question, "it is 1.5")
    assert not missing.correct and "no final answer" in missing.detail


# ----------------------------------------------------------- multiple choice

OPTIONS = [
    "expansionary monetary policy.",
    "contractionary monetary policy.",
    "a weak dollar.",
    "fiscal policy.",
]


@pytest.mark.parametrize(
    ("text", "index"),
    [
        ("B", 1),
        ("(B)", 1),
        ("B. contractionary monetary policy.", 1),
        ("The answer is (C).", 2),
        ("Answer: D", 3),
        ("**B**", 1),
        (r"\boxed{A}", 0),
        ("A likely cause is contractionary monetary policy.", 1),
        ("I think it is A, no wait, the answer is B", 1),
        ("Either (A) or (B).", None),
        ("The answer is E.", None),
        ("No idea.", None),
    ],
)
def test_choice_extraction(text: str, index: int | None) -> None:
    assert chosen_option(text, OPTIONS) == index


async def test_mixeval_scorer_dispatches_on_problem_type() -> None:
    mc = Question(
        "mc-0",
        "mixeval_hard",
        [{"role": "user", "content": "?"}],
        reference=[1],
        metadata={"problem_type": "multiple-choice", "options": OPTIONS},
    )
    ff = Question(
        "ff-0",
        "mixeval_hard",
        [{"role": "user", "content": "?"}],
        reference=["367"],
        metadata={"problem_type": "free-form"},
    )
    scorer = scorer_for("mixeval_hard")
    assert (await scorer.score(mc, "The answer is B.")).correct
    assert not (await scorer.score(mc, "The answer is A.")).correct
    with pytest.raises(ConfigError, match="judge"):
        await scorer.score(ff, "367")

    async def judge(question: Question, answer_text: str) -> Score:
        return Score(0.9, None, f"judged {question.id}")

    judged = await scorer_for("mixeval_hard", judge=judge).score(ff, "367")
    assert judged == Score(0.9, None, "judged ff-0")


# ------------------------------------------------------------------ judges


async def test_judge_benchmarks_need_a_judge() -> None:
    question = Question("81", "mt_bench", [{"role": "user", "content": "Write a poem."}])
    scorer = scorer_for("mt_bench")
    assert isinstance(scorer, JudgeScorer) and scorer.needs_judge
    with pytest.raises(ConfigError, match="'mt_bench' is scored by an LLM judge"):
        await scorer.score(question, "A poem.")
    calls: list[str] = []

    async def judge(q: Question, answer_text: str) -> Score:
        calls.append(answer_text)
        return Score(0.7, None, "7/10")

    assert (await score_answer(question, "A poem.", judge=judge)).value == 0.7
    assert calls == ["A poem."]


def test_every_benchmark_has_a_scorer() -> None:
    for name in BENCHMARKS:
        assert hasattr(scorer_for(name), "score")
    for name in ("gsm8k", "math500", "humaneval", "mbpp"):
        assert not scorer_for(name).needs_judge
    with pytest.raises(ConfigError, match="unknown benchmark 'nope'"):
        scorer_for("nope")
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        Score(1.5, True)


# -------------------------------------------------------------------- code

PROMPT = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'
CHECK = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"


def _humaneval(reference: str = CHECK) -> Question:
    return Question(
        "HumanEval/x",
        "humaneval",
        [{"role": "user", "content": PROMPT}],
        reference=reference,
        metadata={"prompt": PROMPT, "entry_point": "add"},
    )


def _mbpp(tests: list[str]) -> Question:
    return Question(
        "1",
        "mbpp",
        [{"role": "user", "content": "Write add."}],
        reference=tests,
        metadata={"entry_point": "add", "test_setup_code": ""},
    )


def test_code_extraction() -> None:
    reply = (
        "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\n"
        "Usage:\n```python\nprint(add(1, 2))\n```"
    )
    assert extract_code(reply, "add").startswith("def add")
    assert extract_code("Sure! Here is the code:\ndef add(a, b):\n    return a + b\n") == (
        "def add(a, b):\n    return a + b\n"
    )
    assert extract_code("```py\nx = 1\n") == "x = 1\n"  # unterminated fence
    body_only = humaneval_program(PROMPT, "    return a + b\n", "add")
    assert body_only == PROMPT + "    return a + b\n"
    unindented = humaneval_program(PROMPT, "```python\nreturn a + b\n```", "add")
    assert unindented.endswith("    return a + b\n")


@pytest.mark.parametrize(
    "reply",
    [
        "```python\ndef add(a, b):\n    return a + b\n```",
        "    return a + b\n",
        "return a + b",
        "Here it is:\n\ndef add(a: int, b: int) -> int:\n    return b + a\n",
    ],
)
async def test_humaneval_accepts_full_functions_and_bodies(reply: str) -> None:
    score = await CodeScorer(timeout_s=10).score(_humaneval(), reply)
    assert score.correct, score.detail


async def test_code_scorer_failures() -> None:
    scorer = CodeScorer(timeout_s=1.5, memory_mb=128)
    wrong = await scorer.score(_humaneval(), "```python\ndef add(a, b):\n    return a - b\n```")
    assert not wrong.correct and wrong.value == 0.0 and "failed" in wrong.detail
    hangs = await scorer.score(_humaneval(), "def add(a, b):\n    while True:\n        pass\n")
    assert not hangs.correct and hangs.detail.startswith("timeout")
    crashes = await scorer.score(_humaneval(), "import os\nos._exit(1)\n")
    assert not crashes.correct and crashes.detail.startswith("crashed")
    hog = "def add(a, b):\n    x = bytearray(1 << 30)\n    return a + b\n"
    eats = await scorer.score(_humaneval(), hog)
    assert not eats.correct and eats.detail.startswith("memory")
    online = (
        "def add(a, b):\n    import urllib.request\n"
        "    urllib.request.urlopen('http://93.184.215.14', timeout=2)\n    return a + b\n"
    )
    offline = await scorer.score(_humaneval(), online)
    assert not offline.correct and offline.detail.startswith("failed")


async def test_mbpp_counts_asserts() -> None:
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 0) == 1"]
    score = await CodeScorer(timeout_s=10).score(_mbpp(tests), "def add(a, b):\n    return a + b\n")
    assert not score.correct and "2/3 tests passed" in score.detail
    assert (
        await CodeScorer(timeout_s=10).score(_mbpp(tests[:2]), "def add(a, b): return a + b")
    ).correct


async def test_code_scorer_limits_concurrency() -> None:
    limiter = anyio.CapacityLimiter(1)
    scorer = scorer_for("mbpp", limiter=limiter)
    results: list[bool | None] = []

    async def one() -> None:
        results.append(
            (
                await scorer.score(_mbpp(["assert add(1, 1) == 2"]), "def add(a, b): return a + b")
            ).correct
        )

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
    assert results == [True, True, True] and limiter.borrowed_tokens == 0
