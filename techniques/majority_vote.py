r"""majority_vote: self-consistency; the final answer most candidates agree on wins.

Parameters: ``top_k`` (how many distinct answers go on, most votes first; default 1). No LLM.
Flow: needs candidates, leaves between 1 and ``top_k`` of them. Fan-out: one request for all
candidates; the agent reads each candidate's final answer, the merge counts the votes.

Each candidate's final answer is its ``answer`` field when set, else extracted from its text
with the answer readers of ``itas.answers`` (the benchmarks' scorers read answers the same
way), most explicit first: an option letter after "answer is"/"Answer:"; the last
``\boxed{}`` or the text after "answer is" (numbers canonicalised: "1,000.0" and "$1000" both
vote for "1000"; other math normalised as the MATH scorer does; a sentence gives its number,
else its lowercased words); a number after ``####``; the last number in the text; else the
whole text, lowercased with spaces collapsed (so identical free-text answers still agree).

The winner is represented by the first candidate (in input order) that gave it; ties between
answers go to the one seen first. Each kept candidate gets ``answer`` (the canonical vote
key), ``score`` (vote share) and ``meta``: ``votes``, ``vote_counts`` (every answer's count)
and ``answer_method``. When the request failed, the first candidate goes on and the trace
says so.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from itas.answers.mathequiv import extract_answer, normalize
from itas.answers.numeric import NUMBER_RE, extract_number, format_number, numbers
from itas.techniques.base import Job, Merged, Shard, Technique, ToolParams, judged_only
from itas.techniques.contract import Candidate, ContractError, TechniqueReply, TechniqueRequest

# "(B)" anywhere after the marker, or a bare capital letter that ends the statement; not
# the "A" of "the answer is A bit more".
OPTION_RE = re.compile(
    r"(?i:answer\s*(?:is|:))\s*\**\s*(?:\(([A-J])\)|([A-J])(?=\s*(?:[.,;:!*)]|$)))", re.MULTILINE)
HASH_RE = re.compile(r"####")
# Two plain words in a row (not LaTeX commands): the stated answer is prose.
PROSE_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}\s+[a-zA-Z]{2,}")
PURE_NUMBER_RE = re.compile(r"\s*" + NUMBER_RE.pattern + r"\s*[.%]?\s*")


def vote_key(text: str) -> tuple[str, str]:
    """The canonical final answer of ``text`` and how it was found."""
    option = OPTION_RE.findall(text)
    if option:
        return "".join(option[-1]), "option"
    stated = extract_answer(text)  # last \boxed{} or the text after "answer is"
    if stated is not None:
        canonical = normalize(stated)
        value = extract_number(canonical) if PURE_NUMBER_RE.fullmatch(canonical) else None
        if value is None and PROSE_RE.search(stated):  # a sentence, not a formula
            value = extract_number(stated)
            if value is None:
                return " ".join(stated.lower().split()).rstrip("."), "stated_text"
        if value is not None:
            return format_number(value), "stated_number"
        return canonical, "stated"
    if HASH_RE.search(text):
        value = extract_number(text)
        if value is not None:
            return format_number(value), "hash_marker"
    if numbers(text):
        value = extract_number(text)
        if value is not None:
            return format_number(value), "last_number"
    return " ".join(text.lower().split()).rstrip("."), "whole_text"


class MajorityVoteParams(ToolParams):
    technique: Literal["majority_vote"] = "majority_vote"
    top_k: int = Field(1, ge=1, strict=True)


class MajorityVote(Technique[MajorityVoteParams]):
    name = "majority_vote"
    params_model = MajorityVoteParams
    summary = "keeps the final answer most candidates agree on"
    uses_llm = False

    def shards(self, p: MajorityVoteParams, n: int) -> list[Shard]:
        return [Shard(tuple(range(n)))] if n else []

    def out_range(self, p: MajorityVoteParams, n: int) -> tuple[int, int]:
        return (min(1, n), min(p.top_k, n))

    def flow_problem(self, p: MajorityVoteParams, reachable: int) -> str | None:
        return None  # top_k is "at most this many answers"; fewer distinct ones are fine

    def check_reply(self, p: MajorityVoteParams, request: TechniqueRequest,
                    reply: TechniqueReply) -> None:
        super().check_reply(p, request, reply)
        if any(c.answer is None for c in reply.candidates):
            raise ContractError("reply.candidates.answer", "every candidate needs its answer")

    def merge(self, p: MajorityVoteParams, incoming: Sequence[Candidate],
              results: Sequence[tuple[Shard, TechniqueReply | None]]) -> Merged:
        voters = judged_only(incoming, results)
        if not voters:
            return Merged(list(incoming[:1]), problems=[
                "fallback: first candidate (the vote request failed)"] if incoming else [])
        counts = collections.Counter(c.answer for c in voters)
        first_seen: dict[str | None, int] = {}
        for i, c in enumerate(voters):
            first_seen.setdefault(c.answer, i)
        ranked = sorted(counts, key=lambda k: (-counts[k], first_seen[k]))[: p.top_k]
        winners = []
        for key in ranked:
            winner = voters[first_seen[key]]
            winner.score = counts[key] / len(voters)
            winner.meta.update(votes=counts[key],
                               vote_counts={str(k): v for k, v in counts.items()})
            winners.append(winner)
        return Merged(winners)

    async def run(self, job: Job[MajorityVoteParams]) -> TechniqueReply:
        unreadable = 0
        for candidate in job.candidates:
            if candidate.answer is not None:
                candidate.answer, method = " ".join(candidate.answer.split()), "given"
            else:
                candidate.answer, method = vote_key(candidate.text)
            unreadable += method == "whole_text"
            candidate.meta.update(answer_method=method, voter=job.agent.service)
        if unreadable:
            job.note("no_final_answer", f"{unreadable} of {len(job.candidates)} candidate(s) "
                                        "state no final answer; their whole text was compared")
        return job.reply(job.candidates)


TECHNIQUE = MajorityVote()
