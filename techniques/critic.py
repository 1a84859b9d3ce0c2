"""critic: a list of strengths and weaknesses for each candidate (Archon's critic).

One call per candidate, all concurrent; the critique goes into
``candidate.critique`` (replacing an earlier one) as ``Strengths:`` and
``Weaknesses:`` sections, and the candidates come back in the same order.
Later rankers, verifiers and fusers show it next to the candidate.

Parsing: both section headers must be present (markdown decoration allowed) with
something under each. Fallback after the re-asks: the raw output becomes the
critique (``fallback: "raw_text"``), since free-form criticism is still useful
to a fuser; an empty output leaves the critique unset.
"""

from __future__ import annotations

import re
from typing import Any

from itas.techniques.base import (
    Job,
    OutputFormatError,
    Parsed,
    TechniqueAgent,
    gather,
    query_text,
)
from itas.techniques.contract import Candidate, Message, TechniqueReply

SYSTEM = (
    "You are a meticulous reviewer of answers written by AI assistants. You judge correctness "
    "first, then completeness and clarity. You review; you never rewrite the answer."
)
PROMPT = """Here is a request and one response to it.

## Request
{query}

## Response
{response}

Review the response. Check each claim, step and calculation against the request, and say plainly \
if the final answer is wrong. Then write your review in exactly this form:

Strengths:
- <a specific strength>
Weaknesses:
- <a specific weakness, or "None found.">"""
FORMAT_HINT = ("Write a line 'Strengths:' followed by bullet points, then a line 'Weaknesses:' "
               "followed by bullet points.")
HEADER = r"(?im)^[ \t#*_>-]*{word}[ \t*_]*:?[ \t*_]*"
STRENGTHS_RE = re.compile(HEADER.format(word="strengths?"))
WEAKNESSES_RE = re.compile(HEADER.format(word="weakness(?:es)?"))

# What a simulated critic writes, by whether it took the response for correct.
SIM_GOOD = ("Strengths:\n- It addresses the request directly and states a final answer.\n"
            "- The steps check out; the final answer appears correct.\n"
            "Weaknesses:\n- Minor: the explanation could be more concise.")
SIM_BAD = ("Strengths:\n- It addresses the request directly and states a final answer.\n"
           "Weaknesses:\n- The final answer appears incorrect: a step of the reasoning does "
           "not hold.\n- It does not check its result against the request.")


def render_sim(decision: Any) -> str:
    return SIM_GOOD if decision and decision[0] else SIM_BAD


def parse_critique(text: str) -> Parsed[str]:
    strengths, weaknesses = STRENGTHS_RE.search(text), WEAKNESSES_RE.search(text)
    if strengths is None or weaknesses is None:
        missing = " and ".join(name for name, m in (("'Strengths:'", strengths),
                                                      ("'Weaknesses:'", weaknesses)) if m is None)
        raise OutputFormatError(f"no {missing} section")
    if strengths.start() < weaknesses.start():
        good = text[strengths.end():weaknesses.start()].strip()
        bad = text[weaknesses.end():].strip()
    else:
        bad = text[weaknesses.end():strengths.start()].strip()
        good = text[strengths.end():].strip()
    for name, section in (("Strengths", good), ("Weaknesses", bad)):
        if not section:
            raise OutputFormatError(f"the {name} section is empty")
    critique = f"Strengths:\n{good}\nWeaknesses:\n{bad}"
    return Parsed(critique, "sections", f"{len(critique.split())} words")


def critique_messages(query: list[Message], candidate: Candidate) -> list[Message]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPT.format(query=query_text(query),
                                                      response=candidate.text.strip())}]


class CriticAgent(TechniqueAgent):
    technique = "critic"

    async def run(self, job: Job) -> TechniqueReply:
        async def review(i: int, candidate: Candidate) -> None:
            asked = await job.ask(
                critique_messages(job.request.messages, candidate), role="critique",
                parse=parse_critique, fallback=lambda text: text.strip() or None,
                fallback_name="raw_text", format_hint=FORMAT_HINT,
                candidates=[candidate.text], render=render_sim, order=i, subject=candidate.id)
            candidate.critique = asked.value
            candidate.meta["critic"] = self.service

        await gather([lambda i=i, c=c: review(i, c) for i, c in enumerate(job.candidates)])
        return job.reply(job.candidates)
