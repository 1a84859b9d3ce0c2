"""verifier: checks each candidate with step-by-step reasoning and keeps those that pass.

Params: ``top_k`` (keep at most this many passing candidates, in input order;
default all), ``use_critiques`` (default true), ``temperature``, ``max_tokens``.

One call per candidate, all concurrent. The model reasons, then ends with
``Verdict: PASS`` or ``Verdict: FAIL``; a last line that is only PASS/FAIL is
accepted too (method "last_line"). ``candidate.verdict`` gets the result and
``meta["verification"]`` the reasoning (clipped). Fallback for an unreadable
verdict: FAIL (``fallback: "fail_closed"``): an unverified answer is not a
verified one.

When no candidate passes, the verifier keeps the incoming candidates (the first
``top_k`` when set, so the bound the planner relies on holds), each with
``verdict`` False, and adds the note ``none_passed``: a layer never empties a
non-empty flow (Archon does the same), and downstream techniques can still read
the verdicts.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from itas.techniques.base import (
    Job,
    OutputFormatError,
    Parsed,
    TechniqueAgent,
    candidate_block,
    gather,
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
FORMAT_HINT = "Finish with one line, either 'Verdict: PASS' or 'Verdict: FAIL'."
VERDICT_RE = re.compile(r"(?im)^\W*verdict\W*?[:=-]\W*(pass|fail)\b")
LAST_LINE_RE = re.compile(r"^\W*(pass|fail)\W*$", re.IGNORECASE)

SIM_PASS = ("Reasoning: I worked through the request; each step of the response holds and its "
            "final answer matches mine.\nVerdict: PASS")
SIM_FAIL = ("Reasoning: I worked through the request; a step of the response does not hold, "
            "so its final answer cannot be right.\nVerdict: FAIL")


def render_sim(decision: Any) -> str:
    return SIM_PASS if decision and decision[0] else SIM_FAIL


def parse_verdict(text: str) -> Parsed[bool]:
    found = VERDICT_RE.findall(text)
    if found:
        return Parsed(found[-1].lower() == "pass", "verdict_line", found[-1].upper())
    lines = [ln for ln in text.splitlines() if ln.strip()]
    last = LAST_LINE_RE.match(lines[-1]) if lines else None
    if last:
        return Parsed(last.group(1).lower() == "pass", "last_line", last.group(1).upper())
    raise OutputFormatError("there is no 'Verdict: PASS' or 'Verdict: FAIL' line")


def reasoning_of(text: str) -> str:
    """What the verifier wrote before its last verdict line."""
    verdicts = list(VERDICT_RE.finditer(text))
    body = text[: verdicts[-1].start()] if verdicts else text
    return body.strip()[:REASONING_CHARS]


class VerifierAgent(TechniqueAgent):
    technique = "verifier"
    known_params: ClassVar[frozenset[str]] = frozenset({"top_k", "use_critiques"})

    async def run(self, job: Job) -> TechniqueReply:
        top_k = job.params.integer("top_k", None, low=1)
        critiques = job.params.flag("use_critiques", True)
        query = query_text(job.request.messages)

        async def verify(i: int, candidate: Candidate) -> None:
            block = candidate_block(1, candidate, with_critique=critiques)
            messages: list[Message] = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": PROMPT.format(query=query, block=block)}]
            asked = await job.ask(
                messages, role="verify", parse=parse_verdict, fallback=lambda _t: False,
                fallback_name="fail_closed", format_hint=FORMAT_HINT,
                candidates=[candidate.text], render=render_sim, order=i, subject=candidate.id)
            candidate.verdict = asked.value
            candidate.meta.update(verifier=self.service, verification=reasoning_of(asked.text))

        await gather([lambda i=i, c=c: verify(i, c) for i, c in enumerate(job.candidates)])
        passed = [c for c in job.candidates if c.verdict]
        if job.candidates and not passed:
            kept = job.candidates[:top_k]
            job.note("none_passed", f"no candidate passed verification; kept the first "
                                    f"{len(kept)} of {len(job.candidates)} with verdict False")
            return job.reply(kept)
        return job.reply(passed[:top_k])
