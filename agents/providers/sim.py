"""The ``sim`` provider: deterministic simulated models for load tests, CI and search studies.

A simulated model reads no prose. The technique hands it a ``SimTask`` (role,
the question's answer key, the candidates) and a ``render`` function; the
simulated model makes a decision and ``render`` writes it in the technique's
own output format, so the technique's parser runs exactly as with a real model.

The behaviour model (settings in brackets):

* Solving. A simulated model of skill s (``skill``, 0..1) answers a question of
  difficulty d (key ``difficulty``, 0..1, default 0.5) correctly with
  probability ``p_solve = 1 / (1 + exp(-SLOPE * (s - d)))``. Otherwise it gives
  one of the key's ``wrong`` answers, the first ones far more often
  (weights ``WRONG_DECAY ** i``): all simulated models share these "popular
  mistakes", so their errors correlate the way real models' do and majority
  voting is not magically perfect. Hard questions are hard for every model.
* Judging. When it critiques, verifies, ranks, compares, judges or runs tests,
  it perceives each candidate's true correctness (see ``is_correct``) with
  accuracy ``acc = 0.5 + 0.5 * p_solve``: a model that could not solve the
  question judges it at chance, one that surely could judges it perfectly.
  Ranking puts perceived-correct candidates first; comparing picks the
  perceived-correct one (overall right with probability ``acc`` when exactly
  one is correct); a judge scores perceived-correct answers 7..10, others 1..4.
* Distinct texts. Every generated response starts with a line of working notes
  (``NOTE_PREFIX`` and a few words drawn for the model, the question and the sample),
  then the answer. Two models, or two samples, that reach the same answer still write
  different texts, as real ones do, so requests built from them (critiques, rankings,
  fusions) differ too, and a response cache cannot answer one architecture's judging
  calls with another's. The notes hold no digits, letters on their own or the word
  "answer", so every answer extractor reads the answer after them; ``is_correct`` reads
  past them. At temperature 0 all samples of a model write the same notes.
* Fusing. The fuser perceives each candidate as above and copies one of those
  it takes for correct (duplicates count, so it leans to the majority). When it
  takes none for correct it solves the question itself, misled by the
  candidates: ``p = FUSE_MISLED * p_solve``. So fusion helps when good
  candidates exist and the fuser is skilled, and can hurt otherwise.
* Unit tests. ``write_tests`` returns the key's ``tests`` when it has them,
  else generic checks; ``run_tests`` reports per test in ``extra["tests"]``
  whether the first candidate passes (a correct candidate passes each test
  with probability ``acc``, a wrong one with ``1 - acc``).
* No key. Without an answer key (open-ended questions) it writes a
  deterministic plausible text and judges at random.

Determinism: every decision draws from a generator seeded with a hash of
(``seed``, model, key id or the messages, role, sample index, candidates).
Same inputs, same outputs, in any process. At temperature 0 the sample index is
left out, so all samples of a call agree, as with a greedy real model.

Latency (``latency``: seconds, or ``{"mean_s", "jitter_s"}`` for a uniform
spread) is slept with ``anyio.sleep``; in a request that streams (a partial sink is
open, ``itas.agents.partials``), the text goes out word by word over that same latency,
so a streamed sim answer starts one word's time after the call does. Usage reports ``tokens_per_answer``
completion tokens, prompt tokens estimated at ``CHARS_PER_TOKEN`` characters
each, and a cost from ``price_in_per_mtok`` / ``price_out_per_mtok`` (default 0).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from itas.agents import partials
from itas.agents.providers.base import Completion, Message, Provider, SimTask, Usage
from itas.agents.providers.config import check_keys, integer, number
from itas.agents.providers.prices import Price
from itas.errors import ConfigError, ProviderError

SLOPE = 6.0
DEFAULT_DIFFICULTY = 0.5
WRONG_DECAY = 0.3
FUSE_MISLED = 0.7
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
DEFAULT_TOKENS_PER_ANSWER = 64
MAX_PLAUSIBLE_WORDS = 60
GOOD_SCORES = (7, 10)
BAD_SCORES = (1, 4)
UNKNOWN_SCORES = (3, 8)
GENERIC_TESTS = (
    "the answer addresses every part of the question",
    "the answer is consistent with the facts stated in the question",
    "the final result is stated explicitly",
)
ROLES = frozenset(
    {
        "generate",
        "critique",
        "rank",
        "compare",
        "fuse",
        "verify",
        "write_tests",
        "run_tests",
        "judge",
    }
)
SIM_KEYS = frozenset(
    {
        "skill",
        "latency",
        "tokens_per_answer",
        "seed",
        "max_concurrency",
        "price_in_per_mtok",
        "price_out_per_mtok",
    }
)
NOTE_PREFIX = "Working notes:"
NOTE_WORDS = 5
_NOTE_VOCABULARY = (
    "first", "restate", "the", "question", "carefully", "then", "list", "known", "facts",
    "check", "each", "step", "again", "before", "writing", "result", "keep", "units",
    "consistent", "compare", "with", "estimate", "look", "for", "edge", "cases", "simplify",
    "where", "possible", "verify", "final", "line", "recompute", "quickly", "trace",
    "reasoning", "slowly", "note", "assumptions", "plainly",
)
_FILLER = (
    "the approach weighs each step against the evidence in the question and checks the result "
    "before it commits so the answer follows from a short chain of reasoning that a reader can "
    "verify with the numbers and facts given here while noting the one assumption it makes"
)


def p_solve(skill: float, difficulty: float) -> float:
    """Probability that a simulated model of ``skill`` solves a question of ``difficulty``."""
    return 1.0 / (1.0 + math.exp(-SLOPE * (skill - difficulty)))


def _norm(text: str) -> str:
    return " ".join(text.split())


def without_notes(text: str) -> str:
    """``text`` without the working-notes line a simulated model starts with."""
    if text.startswith(NOTE_PREFIX):
        return text.split("\n", 1)[1] if "\n" in text else ""
    return text


def with_notes(text: str, rng: random.Random) -> str:
    """``text`` after a line of working notes drawn from ``rng`` (see the module doc)."""
    words = [rng.choice(_NOTE_VOCABULARY) for _ in range(NOTE_WORDS)]
    return f"{NOTE_PREFIX} {' '.join(words)}.\n{text}"


def is_correct(candidate: str, key: Mapping[str, Any]) -> bool:
    """A candidate is correct if, past its working notes, it equals the key's answer
    (whitespace-normalized) or, when the key has a ``final`` field, contains that final
    answer as a whole token."""
    candidate = without_notes(candidate)
    if _norm(candidate) == _norm(str(key["answer"])):
        return True
    final = key.get("final")
    if final is None:
        return False
    pattern = r"(?<![\w.])" + re.escape(_norm(str(final))) + r"(?![\w]|\.\d)"
    return re.search(pattern, _norm(candidate)) is not None


def wrong_answers(key: Mapping[str, Any]) -> list[str]:
    """The key's wrong answers, or made-up ones (numeric: off by a little) when it has none."""
    wrong = [str(w) for w in key.get("wrong") or ()]
    if wrong:
        return wrong
    target = str(key.get("final", key["answer"])).strip()
    try:
        value = float(target)
    except ValueError:
        return [f"(simulated wrong answer {i})" for i in range(1, 4)]
    fmt = (lambda v: str(int(v))) if value.is_integer() else str
    return [fmt(value + delta) for delta in (1, -1, 10)]


def _difficulty(key: Mapping[str, Any]) -> float:
    if "answer" not in key:
        raise ProviderError("sim", f"answer key {key.get('id', '?')!r} has no 'answer' field")
    value = key.get("difficulty")
    if value is None:
        return DEFAULT_DIFFICULTY
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ProviderError(
            "sim",
            f"answer key {key.get('id', '?')!r}: 'difficulty' must be a number, got {value!r}",
        ) from None


def _rng(*parts: Any) -> random.Random:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return random.Random(int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big"))


def _latency_setting(settings: Mapping[str, Any]) -> tuple[float, float]:
    value = settings.get("latency", 0.0)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"mean_s", "jitter_s"})
        if unknown:
            raise ConfigError(
                f"provider 'sim': setting 'latency' has unknown key(s) {unknown}; "
                "known: mean_s, jitter_s"
            )
        mean = number("sim", value, "mean_s", 0.0, low=0)
        jitter = number("sim", value, "jitter_s", 0.0, low=0)
        return mean, jitter
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(
            "provider 'sim': setting 'latency' must be seconds >= 0 or "
            f"{{mean_s: ..., jitter_s: ...}}, got {value!r}"
        )
    return float(value), 0.0


class SimProvider(Provider):
    """A simulated model; the ``model`` name of a call is part of its identity (seed)."""

    name = "sim"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        check_keys("sim", settings, SIM_KEYS)
        self.skill = number("sim", settings, "skill", 0.5, low=0.0, high=1.0)
        self.latency_mean_s, self.latency_jitter_s = _latency_setting(settings)
        self.tokens_per_answer = integer(
            "sim", settings, "tokens_per_answer", DEFAULT_TOKENS_PER_ANSWER, low=1, high=1_000_000
        )
        self.seed = integer("sim", settings, "seed", 0, low=-(2**63), high=2**63)
        self.price = Price(
            number("sim", settings, "price_in_per_mtok", 0.0, low=0),
            number("sim", settings, "price_out_per_mtok", 0.0, low=0),
        )
        limit = settings.get("max_concurrency")
        self._limiter = (
            anyio.CapacityLimiter(integer("sim", settings, "max_concurrency", 1, low=1))
            if limit is not None
            else None
        )
        self.base_url: str | None = None

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        temperature: float = 0.7,
        max_tokens: int = 512,
        sample_index: int = 0,
        sim: SimTask | None = None,
    ) -> Completion:
        task = sim or SimTask(role="generate", key=None)
        if task.role not in ROLES:
            raise ProviderError(
                "sim", f"unknown SimTask role {task.role!r}; known: {sorted(ROLES)}"
            )
        about = (
            str(task.key.get("id", task.key.get("answer")))
            if task.key
            else hashlib.blake2b(json.dumps(list(messages)).encode(), digest_size=8).hexdigest()
        )
        identity = (
            self.seed,
            model,
            about,
            task.role,
            sample_index if temperature > 0 else None,
            list(task.candidates),
            task.extra,
        )
        decision = self._decide(task, _rng(*identity))
        text = task.render(decision)
        latency = max(
            0.0,
            self.latency_mean_s
            + _rng(*identity, "latency").uniform(-self.latency_jitter_s, self.latency_jitter_s),
        )
        async with self._limiter if self._limiter else contextlib.nullcontext():
            sink = partials.current()
            if sink is None:
                await anyio.sleep(latency)
            else:  # stream word by word over the same latency, as a real model would
                words = text.split(" ")
                began = anyio.current_time()
                for i, word in enumerate(words, 1):  # on a schedule: no drift from sleeps
                    await anyio.sleep(max(0.0, began + latency * i / len(words)
                                          - anyio.current_time()))
                    await sink.text(word if i == 1 else " " + word)
        prompt_tokens = sum(
            len(m.get("content", "")) // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE for m in messages
        )
        completion_tokens = min(self.tokens_per_answer, max_tokens)
        usage = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=latency,
            cost_usd=self.price.cost(prompt_tokens, completion_tokens),
        )
        return Completion(text=text, usage=usage, finish_reason="stop")

    # -- decisions -------------------------------------------------------------------------

    def _decide(self, task: SimTask, rng: random.Random) -> Any:
        key, candidates = task.key, list(task.candidates)
        if key is None:
            return self._decide_blind(task, rng, candidates)
        solve = p_solve(self.skill, _difficulty(key))
        acc = 0.5 + 0.5 * solve
        truth = [is_correct(c, key) for c in candidates]
        perceived = [t if rng.random() < acc else not t for t in truth]
        role = task.role
        if role == "generate":
            text = str(key["answer"]) if rng.random() < solve else self._wrong(key, rng)
            return with_notes(text, rng)
        if role in ("critique", "verify"):
            return perceived
        if role == "rank":
            order = list(range(len(candidates)))
            rng.shuffle(order)
            return sorted(order, key=lambda i: not perceived[i])
        if role == "compare":
            self._need(task, 2, exact=True)
            if perceived[0] != perceived[1]:
                return 0 if perceived[0] else 1
            return rng.randrange(2)
        if role == "fuse":
            trusted = [i for i, p in enumerate(perceived) if p]
            if trusted:
                pick = rng.choice(trusted)
                return str(key["answer"]) if truth[pick] else candidates[pick]
            return (
                str(key["answer"]) if rng.random() < FUSE_MISLED * solve else self._wrong(key, rng)
            )
        if role == "write_tests":
            return [str(t) for t in key.get("tests") or GENERIC_TESTS]
        if role == "run_tests":
            self._need(task, 1)
            correct = truth[0]
            return [correct if rng.random() < acc else not correct for _ in self._tests(task)]
        # judge
        self._need(task, 1)
        return rng.randint(*(GOOD_SCORES if perceived[0] else BAD_SCORES))

    def _decide_blind(self, task: SimTask, rng: random.Random, candidates: list[str]) -> Any:
        role = task.role
        if role == "generate":
            return self._plausible_text(rng)
        if role in ("critique", "verify"):
            return [rng.random() < 0.5 for _ in candidates]
        if role == "rank":
            order = list(range(len(candidates)))
            rng.shuffle(order)
            return order
        if role == "compare":
            self._need(task, 2, exact=True)
            return rng.randrange(2)
        if role == "fuse":
            return rng.choice(candidates) if candidates else self._plausible_text(rng)
        if role == "write_tests":
            return list(GENERIC_TESTS)
        if role == "run_tests":
            return [rng.random() < 0.5 for _ in self._tests(task)]
        return rng.randint(*UNKNOWN_SCORES)

    @staticmethod
    def _wrong(key: Mapping[str, Any], rng: random.Random) -> str:
        options = wrong_answers(key)
        return rng.choices(options, weights=[WRONG_DECAY**i for i in range(len(options))])[0]

    def _plausible_text(self, rng: random.Random) -> str:
        vocabulary = _FILLER.split()
        start = rng.randrange(len(vocabulary))
        count = min(self.tokens_per_answer, MAX_PLAUSIBLE_WORDS)
        words = [vocabulary[(start + i) % len(vocabulary)] for i in range(count)]
        return "Simulated answer: " + " ".join(words).capitalize() + "."

    @staticmethod
    def _need(task: SimTask, count: int, *, exact: bool = False) -> None:
        have = len(task.candidates)
        if have < count or (exact and have != count):
            wanted = f"exactly {count}" if exact else f"at least {count}"
            raise ProviderError(
                "sim", f"role {task.role!r} needs {wanted} candidate(s), got {have}"
            )

    @staticmethod
    def _tests(task: SimTask) -> list[Any]:
        tests = task.extra.get("tests")
        if not isinstance(tests, list | tuple):
            raise ProviderError("sim", "role 'run_tests' needs the tests in SimTask.extra['tests']")
        return list(tests)
