"""judge: grades responses for evaluation (an LLM judge), not for an architecture's flow.

Params: ``mode`` ("single" default, or "pairwise"), ``reference`` (optional
reference answer shown to the judge, MT-Bench's reference-guided grading for
math and code), ``temperature``, ``max_tokens``. Judges are usually run at
temperature 0; the eval sends it.

Official prompts: ``template`` (and ``system``) replace the project's prompts with a
benchmark's own, already filled in by the caller (``itas.evaluation.judging`` reads
FastChat's judge_prompts.jsonl and Arena-Hard's judge config) except for the answers,
which stand as ``ANSWER_SLOT`` (single) or ``FIRST_SLOT`` / ``SECOND_SLOT`` (pairwise)
and are put in here, per candidate and per game order. A template without its slots
is a bad request. The rating and verdict formats (``[[N]]``, ``[[A>B]]``) are the same
as those benchmarks', so parsing does not change.

single (MT-Bench single-answer grading): every candidate is rated on its own
(one call each, concurrent) from 1 to 10 for the last user message of the
conversation, in the format ``Rating: [[N]]``. The last ``[[N]]`` in the output
counts (method "brackets"); a line ``Rating: N`` or ``Rating: N/10`` without
brackets is accepted too (method "rating_line"). A rating outside 1..10 or no
rating is re-asked. Fallback: no rating (``fallback: "unrated"``): the
candidate's ``score`` and ``meta["rating"]`` stay None, so a failed judgement
never passes for a grade. Otherwise ``meta["rating"]`` is N and ``score`` N / 10.

pairwise (Arena-Hard): exactly two candidates, the response under evaluation
first and the baseline second. The judge sees them twice, as Assistant A / B in
the given order and then swapped (two concurrent calls), since LLM judges
favour a position. Each game ends with one of ``[[A>>B]]``, ``[[A>B]]``,
``[[A=B]]``, ``[[B>A]]``, ``[[B>>A]]`` (the last bracketed verdict counts; the
mirrored forms ``[[B<A]]`` etc. are read too). Per game the evaluated response
earns 1 for a win (strong or not), 0.5 for a tie, 0 for a loss; fallback for an
unreadable game: a tie (``fallback: "tie"``). The first candidate's ``score`` is
the mean over both games, ``verdict`` is score > 0.5, and ``meta["games"]`` lists
each game's order, verdict (as shown to the judge) and points; the baseline
gets ``1 - score``. Both candidates come back in the given order.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import ValidationInfo, field_validator

from itas.techniques.base import (
    Job,
    LLMParams,
    OutputFormatError,
    Parsed,
    Technique,
    gather,
    query_text,
)
from itas.techniques.contract import Candidate, Message, TechniqueReply, bad_request

ANSWER_SLOT = "<<ITAS:ANSWER>>"
FIRST_SLOT = "<<ITAS:ANSWER_A>>"
SECOND_SLOT = "<<ITAS:ANSWER_B>>"
MIN_RATING, MAX_RATING = 1, 10
JUDGEMENT_CHARS = 1000
POINTS = {"win": 1.0, "tie": 0.5, "loss": 0.0}
ORDERS = ("answer_first", "baseline_first")

SINGLE_SYSTEM = (
    "You are an impartial judge of answers written by AI assistants. You grade how helpful, "
    "correct, relevant, deep and clear an answer is for the user's request. Length, style and "
    "confident wording do not earn points; mistakes cost them."
)
SINGLE_PROMPT = """## Conversation
{query}
{reference}
## The assistant's answer to the last user message
{answer}

Grade the answer. Explain your judgement briefly and objectively first, then rate the answer \
from 1 (useless or wrong) to 10 (excellent) in exactly this format, on the last line:

Rating: [[N]]
(for example "Rating: [[6]]")."""
REFERENCE_BLOCK = "\n## Reference answer (correct; use it to check the assistant's answer)\n{ref}\n"
SINGLE_HINT = "End with one line 'Rating: [[N]]' where N is a whole number from 1 to 10."

PAIR_SYSTEM = (
    "You are an impartial judge comparing two AI assistants' answers to the same request. "
    "Answer the request yourself first, then judge which answer is more helpful, correct and "
    "complete. The order in which the answers are shown and their length mean nothing."
)
PAIR_PROMPT = """## Request
{query}

## Assistant A's answer
{first}

## Assistant B's answer
{second}

Compare the two answers. Explain briefly, then give your verdict on the last line as exactly \
one of:

[[A>>B]]  (A is much better)
[[A>B]]   (A is better)
[[A=B]]   (tie, about the same)
[[B>A]]   (B is better)
[[B>>A]]  (B is much better)"""
PAIR_HINT = "End with exactly one verdict: [[A>>B]], [[A>B]], [[A=B]], [[B>A]] or [[B>>A]]."

BRACKET_RE = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
RATING_LINE_RE = re.compile(
    r"(?im)^\W*rating\W*?[:=-][\s*_]*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\W*$")
VERDICT_RE = re.compile(r"\[\[\s*([AB])\s*(>>|>|=|<<|<)\s*([AB])\s*\]\]", re.IGNORECASE)

SIM_REASON = "Explanation: I checked the answer against the request, step by step."


def render_rating(rating: Any) -> str:
    return f"{SIM_REASON}\nRating: [[{int(rating)}]]"


def render_preference(choice: Any) -> str:
    """The simulated ``compare`` decision (0: the first shown is better) as a verdict."""
    return f"{SIM_REASON}\n[[{'A>B' if int(choice) == 0 else 'B>A'}]]"


def parse_rating(text: str) -> Parsed[int]:
    found, method = BRACKET_RE.findall(text), "brackets"
    if not found:
        found, method = RATING_LINE_RE.findall(text), "rating_line"
    if not found:
        raise OutputFormatError("there is no rating in the form 'Rating: [[N]]'")
    value = float(found[-1])
    if not value.is_integer() or not MIN_RATING <= value <= MAX_RATING:
        raise OutputFormatError(f"the rating {found[-1]} is not a whole number from 1 to 10")
    return Parsed(int(value), method, f"rating {int(value)}")


def parse_game(text: str) -> Parsed[tuple[str, str | None]]:
    """(outcome for Assistant A: "win", "tie" or "loss", the verdict as written)."""
    found = VERDICT_RE.findall(text)
    if not found:
        raise OutputFormatError("there is no verdict like [[A>B]], [[A=B]] or [[B>A]]")
    left, op, right = (part.upper() for part in found[-1])
    verdict = f"{left}{op}{right}"
    if left == right:
        raise OutputFormatError(f"the verdict [[{verdict}]] compares an answer with itself")
    if op == "=":
        return Parsed(("tie", verdict), "verdict", verdict)
    a_wins = (left == "A") == op.startswith(">")
    return Parsed(("win" if a_wins else "loss", verdict), "verdict", verdict)


def judgement_of(text: str) -> str:
    return text.strip()[:JUDGEMENT_CHARS]


def _fill(template: str, answers: dict[str, str]) -> str:
    """The slots replaced in one pass, so an answer that contains a slot's text is shown
    as written, never filled in."""
    pattern = re.compile("|".join(re.escape(slot) for slot in answers))
    return pattern.sub(lambda m: answers[m.group(0)], template)


def _official(system: str | None, prompt: str) -> list[Message]:
    """A benchmark's own prompt as messages (its system prompt first, when it has one)."""
    head: list[Message] = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": prompt}]


class JudgeParams(LLMParams):
    technique: Literal["judge"] = "judge"
    mode: Literal["single", "pairwise"] = "single"
    reference: str | None = None
    #: A benchmark's official judge prompt (with the answer slots) and system prompt.
    system: str | None = None
    template: str | None = None

    @field_validator("template")
    @classmethod
    def _template_has_its_slots(cls, template: str | None, info: ValidationInfo
                                ) -> str | None:
        mode = info.data.get("mode", "single")
        slots = (ANSWER_SLOT,) if mode == "single" else (FIRST_SLOT, SECOND_SLOT)
        if template is not None and not all(slot in template for slot in slots):
            raise ValueError(f"must hold {' and '.join(slots)} where the answers go")
        return template


class Judge(Technique[JudgeParams]):
    name = "judge"
    params_model = JudgeParams
    summary = "grades answers for evaluation (an LLM judge)"
    in_specs = False

    def request_calls(self, p: JudgeParams, k: int) -> int:
        return 2 if p.mode == "pairwise" else k

    async def run(self, job: Job[JudgeParams]) -> TechniqueReply:
        if not job.candidates:
            raise bad_request("candidates", "the judge needs the answer(s) to grade")
        p = job.params
        if p.mode == "single":
            await self._single(job, p.reference, p.template, p.system)
        else:
            await self._pairwise(job, p.template, p.system)
        return job.reply(job.candidates)

    async def _single(self, job: Job[JudgeParams], reference: str | None,
                      template: str | None, system: str | None) -> None:
        query = query_text(job.request.messages)
        ref = REFERENCE_BLOCK.format(ref=reference.strip()) if reference else ""

        async def grade(i: int, candidate: Candidate) -> None:
            if template is not None:
                messages = _official(system, _fill(template, {
                    ANSWER_SLOT: candidate.text.strip()}))
            else:
                prompt = SINGLE_PROMPT.format(query=query, reference=ref,
                                              answer=candidate.text.strip())
                messages = [{"role": "system", "content": SINGLE_SYSTEM},
                            {"role": "user", "content": prompt}]
            asked = await job.ask(
                messages, role="judge", parse=parse_rating, fallback=lambda _t: None,
                fallback_name="unrated", format_hint=SINGLE_HINT, candidates=[candidate.text],
                render=render_rating, order=i, subject=candidate.id)
            rating = asked.value
            candidate.score = None if rating is None else rating / MAX_RATING
            candidate.meta.update(judge=job.agent.service, rating=rating,
                                  judgement=judgement_of(asked.text))

        await gather([functools.partial(grade, i, c) for i, c in enumerate(job.candidates)])

    async def _pairwise(self, job: Job[JudgeParams], template: str | None,
                        system: str | None) -> None:
        if len(job.candidates) != 2:
            raise bad_request("candidates", "pairwise judging needs exactly two candidates "
                              f"(the answer, then the baseline), got {len(job.candidates)}")
        answer, baseline = job.candidates
        query = query_text(job.request.messages)

        def game(order: int, first: Candidate, second: Candidate
                 ) -> Callable[[], Awaitable[tuple[str, str | None, str]]]:
            async def play() -> tuple[str, str | None, str]:
                if template is not None:
                    messages = _official(system, _fill(template, {
                        FIRST_SLOT: first.text.strip(), SECOND_SLOT: second.text.strip()}))
                else:
                    prompt = PAIR_PROMPT.format(query=query, first=first.text.strip(),
                                                second=second.text.strip())
                    messages = [{"role": "system", "content": PAIR_SYSTEM},
                                {"role": "user", "content": prompt}]
                asked = await job.ask(
                    messages, role="compare", parse=parse_game,
                    fallback=lambda _t: ("tie", None), fallback_name="tie",
                    format_hint=PAIR_HINT, candidates=[first.text, second.text],
                    render=render_preference, order=order,
                    subject=f"{first.id} (A) vs {second.id} (B)")
                outcome, verdict = asked.value
                return outcome, verdict, judgement_of(asked.text)
            return play

        games = await gather([game(0, answer, baseline), game(1, baseline, answer)])
        # In the swapped game the answer is Assistant B: it earns what A loses.
        points = [POINTS[games[0][0]], 1.0 - POINTS[games[1][0]]]
        score = sum(points) / len(points)
        answer.score, answer.verdict = score, score > 0.5
        baseline.score, baseline.verdict = 1.0 - score, score < 0.5
        answer.meta.update(judge=job.agent.service, games=[
            {"order": order, "verdict": verdict, "points": p, "judgement": text}
            for order, (_, verdict, text), p in zip(ORDERS, games, points, strict=True)])


TECHNIQUE = Judge()
