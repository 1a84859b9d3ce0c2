"""An LLM judge behind a broker service: the ``Judge`` that judge-scored benchmarks plug in.

    async with AsyncClient(broker) as client:
        judge = ServiceJudge(client, judge_service("sim:strong"))
        scorer = scorer_for("mt_bench", judge=judge)

Requests go to a ``judge`` agent (``itas.techniques.judge``) through any
``Caller``: an ``AsyncClient`` (the broker) or an ``InProcessCaller``.

* Single-answer grading (MT-Bench, MixEval free-form, anything not pairwise):
  the judge rates the answer 1..10 for the last user message of
  ``question.messages``; the score is rating / 10 (0.72 is an MT-Bench 7.2),
  ``correct`` None. A reference answer is shown when the question has one
  (MT-Bench math/code: one per turn, picked by ``metadata["turn"]``; MixEval:
  the accepted answers). For a later turn, the caller passes a question whose
  ``messages`` are the conversation so far (see ``evaluate``).
* Pairwise (``PAIRWISE_BENCHMARKS``: Arena-Hard, AlpacaEval): the judge compares
  the answer with a baseline answer in both orders; the score is the answer's
  points (win 1, tie 0.5, loss 0) averaged over the two games, ``correct`` is a
  win (score > 0.5). The baseline is the question's ``reference`` when it is a
  text (AlpacaEval ships one), else ``baselines[question.id]`` (Arena-Hard: the
  answers of a baseline architecture, see ``evaluate.collect_answers``).

The judge's answer key (``sim``) is the question's, so a simulated judge
perceives correctness like a simulated critic. A judge that could not give a
readable rating after its re-asks (the agent's "unrated" fallback) raises
``JudgeError``: the evaluation records the question as an error (score 0)
rather than inventing a grade. Judge usage is kept per question (``take_usage``)
so an evaluation can report what judging cost apart from the architecture.

With ``prompts`` (``itas.evaluation.official``: FastChat's judge_prompts.jsonl, an
Arena-Hard judge config) the judge is sent the benchmark's own prompts instead of the
project's, rendered here except for the answers, so its ratings and verdicts mean what
the published ones mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from itas.benchmarks.question import Question
from itas.benchmarks.score import JudgeScorer, Score, Scorer
from itas.errors import ConfigError, ItasError
from itas.evaluation.official import JudgePrompts
from itas.orchestrator.runner import Caller
from itas.techniques.contract import UsageTotals

PAIRWISE_BENCHMARKS = frozenset({"arena_hard", "alpaca_eval"})
JUDGE_TECHNIQUE = "judge"
DEFAULT_JUDGE_TIMEOUT_S = 300.0
JUDGE_TEMPERATURE = 0.0
RATING_SCALE = 10


class JudgeError(ItasError):
    """The judge replied, but without a usable judgement (no readable rating)."""


def judge_service(name: str) -> str:
    """``sim:strong`` -> ``judge@sim:strong``; a full service name passes through."""
    if "@" in name:
        return name
    provider, sep, model = name.partition(":")
    if not sep or not provider or not model:
        raise ConfigError(f"judge {name!r}: give PROVIDER:MODEL (e.g. sim:strong) or a "
                          "service name (e.g. judge@openai:gpt-4o-mini)")
    return f"{JUDGE_TECHNIQUE}@{provider}:{model}"


def is_pairwise(benchmark: str) -> bool:
    return benchmark in PAIRWISE_BENCHMARKS


def rating_scale(scorer: Scorer, questions: Sequence[Question]) -> int | None:
    """``RATING_SCALE`` when every question is graded by a single-answer judge rating
    (MT-Bench, a judged benchmark of one's own), so reports can show the mean rating on the
    benchmark's own 1-10 scale, as published numbers are; None otherwise."""
    if isinstance(scorer, JudgeScorer) and not any(is_pairwise(q.benchmark) for q in questions):
        return RATING_SCALE
    return None


def reference_for(question: Question) -> str | None:
    """What the judge may compare with: a text, one per turn (MT-Bench) or accepted answers."""
    ref = question.reference
    if isinstance(ref, str):
        return ref or None
    if isinstance(ref, Sequence) and ref and all(isinstance(r, str) for r in ref):
        if question.benchmark == "mt_bench":
            turn = int(question.metadata.get("turn", 1))
            return ref[turn - 1] if turn <= len(ref) else None
        return "Accepted answers: " + "; ".join(ref)
    return None


class ServiceJudge:
    """A ``Judge`` (see ``itas.benchmarks.score``) served by a judge agent."""

    def __init__(self, caller: Caller, service: str, *,
                 baselines: Mapping[str, str] | None = None,
                 timeout: float = DEFAULT_JUDGE_TIMEOUT_S,
                 temperature: float = JUDGE_TEMPERATURE,
                 max_tokens: int | None = None,
                 prompts: JudgePrompts | None = None) -> None:
        self.caller = caller
        self.service = service
        self.baselines = dict(baselines or {})
        self.prompts = prompts
        self.timeout = timeout
        self.params: dict[str, Any] = {"temperature": temperature}
        if max_tokens is not None:
            self.params["max_tokens"] = max_tokens
        self._usage: dict[tuple[str, str], UsageTotals] = {}

    def baseline_for(self, question: Question) -> str:
        if isinstance(question.reference, str) and question.reference:
            return question.reference
        baseline = self.baselines.get(question.id)
        if baseline is None:
            # One question without a baseline (its baseline run failed) is that question's
            # error, not the whole evaluation's.
            raise JudgeError(f"{question.benchmark}/{question.id}: no baseline answer to "
                             "compare with (give baselines, e.g. itas eval --baseline ARCH; "
                             "or the baseline architecture failed on this question)")
        return baseline

    async def __call__(self, question: Question, answer_text: str) -> Score:
        if is_pairwise(question.benchmark):
            return await self._pairwise(question, answer_text)
        return await self._single(question, answer_text)

    def take_usage(self, question: Question) -> dict[str, Any]:
        """What judging ``question`` cost so far (all turns), and forget it."""
        usage = self._usage.pop((question.benchmark, question.id), None)
        return (usage or UsageTotals()).to_dict()

    async def _ask(self, question: Question, candidates: list[dict[str, str]],
                   params: dict[str, Any]) -> dict[str, Any]:
        body = {"messages": question.messages, "candidates": candidates,
                "params": {**self.params, **params}, "sim": question.answer_key}
        reply: dict[str, Any] = (await self.caller.call(self.service, body,
                                                        timeout=self.timeout)).body
        self._usage.setdefault((question.benchmark, question.id), UsageTotals()).merge(
            reply.get("usage"))
        judged = reply.get("candidates")
        if not isinstance(judged, list) or len(judged) != len(candidates):
            raise JudgeError(f"{self.service}: expected {len(candidates)} judged candidate(s) "
                             f"for {question.benchmark}/{question.id}, got {judged!r:.200}")
        return reply

    async def _single(self, question: Question, answer_text: str) -> Score:
        params: dict[str, Any] = {"mode": "single"}
        reference = reference_for(question)
        if self.prompts is not None:
            per_turn = question.reference if question.benchmark == "mt_bench" and isinstance(
                question.reference, list) else [reference] if reference else []
            prompt, values = self.prompts.for_single(question, per_turn)
            params.update(system=prompt.system, template=prompt.render(values))
        elif reference:
            params["reference"] = reference
        reply = await self._ask(question, [{"id": "answer", "text": answer_text}], params)
        meta = reply["candidates"][0].get("meta") or {}
        rating = meta.get("rating")
        if not isinstance(rating, int):
            parse = "; ".join(str(p.get("detail", "")) for p in reply.get("parse", []))
            raise JudgeError(f"{self.service} gave no readable rating for "
                             f"{question.benchmark}/{question.id} ({parse or 'no detail'})")
        turn = question.metadata.get("turn")
        where = f"turn {turn}: " if turn else ""
        return Score(rating / RATING_SCALE, None, f"{where}rating {rating}/10 by {self.service}")

    async def _pairwise(self, question: Question, answer_text: str) -> Score:
        candidates = [{"id": "answer", "text": answer_text},
                      {"id": "baseline", "text": self.baseline_for(question)}]
        params: dict[str, Any] = {"mode": "pairwise"}
        if self.prompts is not None:
            prompt, values = self.prompts.for_pairwise(question)
            params.update(system=prompt.system, template=prompt.render(values))
        reply = await self._ask(question, candidates, params)
        answer = reply["candidates"][0]
        score = answer.get("score")
        if not isinstance(score, int | float):
            raise JudgeError(f"{self.service} gave no pairwise score for "
                             f"{question.benchmark}/{question.id}")
        games = (answer.get("meta") or {}).get("games") or []
        shown = ", ".join(f"{g.get('order')}: {g.get('verdict') or 'unreadable'}"
                          for g in games)
        return Score(float(score), score > 0.5,
                     f"vs baseline {float(score):.2f} ({shown}) by {self.service}")
