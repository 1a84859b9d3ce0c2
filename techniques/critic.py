"""critic: strengths and weaknesses of each candidate (Archon's critic).

Parameters: ``batched`` (default false) and the LLM fields. Flow: needs candidates and
annotates them (``critique``); a layer of critics passes its candidates on, so a critic cannot
share a layer with a technique that writes candidates (``itas.spec`` checks it).

Fan-out: one request per candidate, each one call (itas's default: replicas share the work,
and a long list never has to fit one context), or with ``batched: true`` one request and one
call for all candidates, as Archon does (configs loaded from Archon's JSON use it). Later
rankers, verifiers and fusers show the critique next to the candidate.

Parsing: each critique has a ``Strengths:`` and a ``Weaknesses:`` section with something
under each (markdown decoration allowed); batched, each candidate's critique starts with its
number ``[k]``. Fallback after the re-asks: per candidate, the raw output becomes the critique
(``fallback: "raw_text"``), since free-form criticism still helps a fuser; batched, the
sections that could be read are kept and the others left without a critique
(``fallback: "sections_found"``).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Literal

from pydantic import StrictBool

from itas.techniques.base import (
    ArchonForm,
    Job,
    LLMParams,
    Material,
    OutputFormatError,
    Parsed,
    Shard,
    Technique,
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
BATCH_PROMPT = """Here is a request and {n} responses to it, numbered [1] to [{n}].

## Request
{query}

## Responses
{blocks}

Review every response on its own. Check each claim, step and calculation against the request, \
and say plainly if a final answer is wrong. Write one review per response, in order, each in \
exactly this form:

[1]
Strengths:
- <a specific strength>
Weaknesses:
- <a specific weakness, or "None found.">"""
FORMAT_HINT = ("Write a line 'Strengths:' followed by bullet points, then a line 'Weaknesses:' "
               "followed by bullet points.")
BATCH_HINT = ("For each response k, write a line '[k]', then 'Strengths:' with bullet points "
              "and 'Weaknesses:' with bullet points.")
HEADER = r"(?im)^[ \t#*_>-]*{word}[ \t*_]*:?[ \t*_]*"
STRENGTHS_RE = re.compile(HEADER.format(word="strengths?"))
WEAKNESSES_RE = re.compile(HEADER.format(word="weakness(?:es)?"))
NUMBER_LINE_RE = re.compile(r"(?m)^[ \t#*_>-]*\[(\d+)\][ \t*_:.-]*")

# What a simulated critic writes, by whether it took the response for correct.
SIM_GOOD = ("Strengths:\n- It addresses the request directly and states a final answer.\n"
            "- The steps check out; the final answer appears correct.\n"
            "Weaknesses:\n- Minor: the explanation could be more concise.")
SIM_BAD = ("Strengths:\n- It addresses the request directly and states a final answer.\n"
           "Weaknesses:\n- The final answer appears incorrect: a step of the reasoning does "
           "not hold.\n- It does not check its result against the request.")


class CriticParams(LLMParams):
    technique: Literal["critic"] = "critic"
    batched: StrictBool = False


def render_sim(decision: Any) -> str:
    return SIM_GOOD if decision and decision[0] else SIM_BAD


def render_sim_batch(decision: Any) -> str:
    return "\n\n".join(f"[{i}]\n{SIM_GOOD if ok else SIM_BAD}"
                       for i, ok in enumerate(decision, 1))


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


def batch_sections(text: str, n: int) -> dict[int, str]:
    """Readable critiques by 1-based response number (a later section for a number wins).
    Every numbered line ends the section before it, even a number out of range, so no
    response is credited with text written under another number."""
    marks = list(NUMBER_LINE_RE.finditer(text))
    found: dict[int, str] = {}
    for i, mark in enumerate(marks):
        if not 1 <= int(mark.group(1)) <= n:
            continue
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        try:
            found[int(mark.group(1))] = parse_critique(text[mark.end():end]).value
        except OutputFormatError:
            continue
    return found


def batch_parser(n: int) -> Any:
    def parse(text: str) -> Parsed[dict[int, str]]:
        found = batch_sections(text, n)
        missing = [k for k in range(1, n + 1) if k not in found]
        if missing:
            raise OutputFormatError("no readable review for response(s) "
                                    + ", ".join(f"[{k}]" for k in missing))
        return Parsed(found, "numbered_sections", f"{n} reviews")

    return parse


def critique_messages(query: list[Message], candidate: Candidate) -> list[Message]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPT.format(query=query_text(query),
                                                      response=candidate.text.strip())}]


class Critic(Technique[CriticParams]):
    name = "critic"
    params_model = CriticParams
    summary = "writes strengths and weaknesses of each candidate"
    produces = False
    archon = ArchonForm(ignored=frozenset({"samples"}), pattern={"batched": True})

    def shards(self, p: CriticParams, n: int) -> list[Shard]:
        if p.batched:
            return [Shard(tuple(range(n)))] if n else []
        return [Shard((i,)) for i in range(n)]

    def request_calls(self, p: CriticParams, k: int) -> int:
        return min(k, 1) if p.batched else k

    def prompt_tokens(self, p: CriticParams, n: int, m: Material) -> int:
        if p.batched:
            return m.overhead + m.tests + n * m.candidate if n else 0
        return n * (m.overhead + m.tests + m.candidate)

    def critique_tokens(self, p: CriticParams) -> int:
        return p.max_tokens

    async def run(self, job: Job[CriticParams]) -> TechniqueReply:
        candidates = job.candidates
        if job.params.batched and candidates:
            await self._batched(job)
        else:
            await gather([functools.partial(self._one, job, i, c)
                          for i, c in enumerate(candidates)])
        for candidate in candidates:
            candidate.meta["critic"] = job.agent.service
        return job.reply(candidates)

    async def _one(self, job: Job[CriticParams], i: int, candidate: Candidate) -> None:
        asked = await job.ask(
            critique_messages(job.request.messages, candidate), role="critique",
            parse=parse_critique, fallback=lambda text: text.strip() or None,
            fallback_name="raw_text", format_hint=FORMAT_HINT, candidates=[candidate.text],
            render=render_sim, order=i, subject=candidate.id)
        candidate.critique = asked.value

    async def _batched(self, job: Job[CriticParams]) -> None:
        candidates = job.candidates
        n = len(candidates)
        blocks = "\n\n".join(f"[{i}]\n{c.text.strip()}" for i, c in enumerate(candidates, 1))
        prompt = BATCH_PROMPT.format(n=n, query=query_text(job.request.messages), blocks=blocks)
        messages: list[Message] = [{"role": "system", "content": SYSTEM},
                                   {"role": "user", "content": prompt}]
        asked = await job.ask(
            messages, role="critique", parse=batch_parser(n),
            fallback=lambda text: batch_sections(text, n), fallback_name="sections_found",
            format_hint=BATCH_HINT, candidates=[c.text for c in candidates],
            render=render_sim_batch, subject=f"{n} candidates")
        for k, candidate in enumerate(candidates, 1):
            candidate.critique = asked.value.get(k)


TECHNIQUE = Critic()
