"""verifier: checks each candidate with step-by-step reasoning and keeps those that pass.

Parameters: ``top_k`` (keep at most this many, default all), ``first_k`` (Archon's early
stop: verify the candidates in order and stop once ``first_k`` passed), ``use_critiques``
(default true), ``two_step`` (default false; true for Archon configs) and the LLM fields.
Flow: needs candidates, leaves between 1 and ``min(top_k, first_k, n)`` of them (critiques
riding on). Fan-out: one request per candidate, all at once; with ``first_k``, one request
for all, verified in order. One call per candidate, or two with ``two_step`` (Archon's
verifier: the model first writes its reasoning about the response, then a second call judges
response and reasoning together).

The verdict call ends with ``Verdict: PASS`` or ``Verdict: FAIL``; a last line that is only
PASS/FAIL is accepted too (method "last_line"). ``candidate.verdict`` gets the result and
``meta["verification"]`` the reasoning (clipped). Fallback for an unreadable verdict: FAIL
(``fallback: "fail_closed"``): an unverified answer is not a verified one.

Selection (the merge, the one place it happens): the candidates that passed, in input order,
at most ``top_k`` (and ``first_k``). When none passed (or every request failed), that many of
the first incoming candidates go on, with the problem ``none_passed`` in the trace: a verifier never empties a
non-empty flow (Archon forwards the candidates too), and it never leaves more than ``top_k``,
which is what the static plan promised.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import StrictBool

from itas.techniques.base import (
    ArchonForm,
    Count,
    Job,
    LLMParams,
    Material,
    Merged,
    OutputFormatError,
    Parsed,
    Shard,
    Technique,
    candidate_block,
    gather,
    judged_only,
    query_text,
)
from itas.techniques.contract import Candidate, Message, TechniqueReply

REASONING_CHARS = 1000
SYSTEM = (
    "You are a rigorous verifier. You decide whether a response to a request is correct and "
    "fully answers it. You reason step by step before deciding, and confident wording does "
    "not sway you."
)
PROMPT = """## Request
{query}

{block}

Verify the response: work through the request yourself, check each step and the final answer \
of the response, and note anything it leaves out. Then finish with one line in exactly this form:

Verdict: PASS
(if the response is correct and complete), or

Verdict: FAIL
(otherwise)."""
REASON_PROMPT = """## Request
{query}

{block}

Work through the request yourself and explain, step by step, whether each claim and the final \
answer of the response hold and whether it leaves anything out. Write only your reasoning; do \
not give a verdict yet."""
VERDICT_PROMPT = """## Request
{query}

{block}

## Reasoning about the response
{reasoning}

Given the request, the response and the reasoning above (check that the reasoning itself is \
sound), decide whether the response is correct and complete. Finish with one line in exactly \
this form:

Verdict: PASS
(or "Verdict: FAIL")."""
FORMAT_HINT = "Finish with one line, either 'Verdict: PASS' or 'Verdict: FAIL'."
REASON_HINT = "Write your step-by-step reasoning about the response."
VERDICT_RE = re.compile(r"(?im)^\W*verdict\W*?[:=-]\W*(pass|fail)\b")
LAST_LINE_RE = re.compile(r"^\W*(pass|fail)\W*$", re.IGNORECASE)

SIM_PASS = ("Reasoning: I worked through the request; each step of the response holds and its "
            "final answer matches mine.\nVerdict: PASS")
SIM_FAIL = ("Reasoning: I worked through the request; a step of the response does not hold, "
            "so its final answer cannot be right.\nVerdict: FAIL")
SIM_REASONING = ("I worked through the request step by step and compared each step and the "
                 "final answer of the response with mine.")


class VerifierParams(LLMParams):
    technique: Literal["verifier"] = "verifier"
    top_k: Count | None = None
    first_k: Count | None = None
    use_critiques: StrictBool = True
    two_step: StrictBool = False

    def keep(self, n: int) -> int:
        """How many candidates it leaves at most, of ``n``."""
        return min([k for k in (self.top_k, self.first_k) if k] + [n])


def render_sim(decision: Any) -> str:
    return SIM_PASS if decision and decision[0] else SIM_FAIL


def render_reasoning(_decision: Any) -> str:
    return SIM_REASONING


def parse_verdict(text: str) -> Parsed[bool]:
    found = VERDICT_RE.findall(text)
    if found:
        return Parsed(found[-1].lower() == "pass", "verdict_line", found[-1].upper())
    lines = [ln for ln in text.splitlines() if ln.strip()]
    last = LAST_LINE_RE.match(lines[-1]) if lines else None
    if last:
        return Parsed(last.group(1).lower() == "pass", "last_line", last.group(1).upper())
    raise OutputFormatError("there is no 'Verdict: PASS' or 'Verdict: FAIL' line")


def parse_reasoning(text: str) -> Parsed[str]:
    if not text.strip():
        raise OutputFormatError("the reply was empty")
    return Parsed(text.strip(), "text", f"{len(text.split())} words")


def reasoning_of(text: str) -> str:
    """What the verifier wrote before its last verdict line."""
    verdicts = list(VERDICT_RE.finditer(text))
    body = text[: verdicts[-1].start()] if verdicts else text
    return body.strip()[:REASONING_CHARS]


class Verifier(Technique[VerifierParams]):
    name = "verifier"
    params_model = VerifierParams
    summary = "keeps the candidates whose reasoning checks out"
    archon = ArchonForm(renamed={"first_k": None}, ignored=frozenset({"samples"}),
                        pattern={"two_step": True, "use_critiques": False})

    def shards(self, p: VerifierParams, n: int) -> list[Shard]:
        if p.first_k is not None:
            return [Shard(tuple(range(n)))] if n else []
        return [Shard((i,)) for i in range(n)]

    def request_calls(self, p: VerifierParams, k: int) -> int:
        return k * (2 if p.two_step else 1)

    def min_calls(self, p: VerifierParams, n: int) -> int:
        if p.first_k is None:
            return self.calls(p, n)
        return self.request_calls(p, min(p.first_k, n))

    def out_range(self, p: VerifierParams, n: int) -> tuple[int, int]:
        return (min(1, n), p.keep(n))

    def prompt_tokens(self, p: VerifierParams, n: int, m: Material) -> int:
        shown = m.annotated if p.use_critiques else m.candidate
        one = m.overhead + m.tests + shown
        if p.two_step:  # the verdict call also shows the reasoning
            return n * (2 * one + p.max_tokens)
        return n * one

    def merge(self, p: VerifierParams, incoming: Sequence[Candidate],
              results: Sequence[tuple[Shard, TechniqueReply | None]]) -> Merged:
        keep = p.keep(len(incoming))
        passed = [c for c in judged_only(incoming, results) if c.verdict]
        if passed or not incoming:
            return Merged(passed[:keep])
        problem = (f"none_passed: no candidate passed verification; the first "
                   f"{min(keep, len(incoming))} go on")
        return Merged(list(incoming[:keep]), problems=[problem])

    async def run(self, job: Job[VerifierParams]) -> TechniqueReply:
        if job.params.first_k is None:
            await gather([functools.partial(self._verify, job, i, c)
                          for i, c in enumerate(job.candidates)])
            return job.reply(job.candidates)
        passed = 0
        for i, candidate in enumerate(job.candidates):
            await self._verify(job, i, candidate)
            passed += bool(candidate.verdict)
            if passed >= job.params.first_k:
                job.note("early_stop", f"{passed} passed after {i + 1} of "
                                       f"{len(job.candidates)} verified")
                break
        return job.reply(job.candidates)

    async def _verify(self, job: Job[VerifierParams], i: int, candidate: Candidate) -> None:
        query = query_text(job.request.messages)
        block = candidate_block(1, candidate, with_critique=job.params.use_critiques)
        reasoning = ""
        if job.params.two_step:
            reasoned = await job.ask(
                [{"role": "system", "content": SYSTEM},
                 {"role": "user", "content": REASON_PROMPT.format(query=query, block=block)}],
                role="verify", parse=parse_reasoning, fallback=lambda t: t.strip(),
                fallback_name="raw_text", format_hint=REASON_HINT, candidates=[candidate.text],
                render=render_reasoning, order=2 * i, subject=f"{candidate.id} reasoning")
            reasoning = reasoned.value
            prompt = VERDICT_PROMPT.format(query=query, block=block, reasoning=reasoning)
        else:
            prompt = PROMPT.format(query=query, block=block)
        messages: list[Message] = [{"role": "system", "content": SYSTEM},
                                   {"role": "user", "content": prompt}]
        asked = await job.ask(
            messages, role="verify", parse=parse_verdict, fallback=lambda _t: False,
            fallback_name="fail_closed", format_hint=FORMAT_HINT, candidates=[candidate.text],
            render=render_sim, order=2 * i + 1, subject=candidate.id)
        candidate.verdict = asked.value
        candidate.meta.update(verifier=job.agent.service,
                              verification=(reasoning or reasoning_of(asked.text))
                              [:REASONING_CHARS])


TECHNIQUE = Verifier()
