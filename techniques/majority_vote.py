r"""majority_vote: self-consistency; the final answer most candidates agree on wins.

Params: ``top_k`` (how many distinct answers to return, most votes first; default 1).

Each candidate's final answer is its ``answer`` field when set, else extracted
from its text with the benchmark scorers' extractors, most explicit first:
an option letter after "answer is"/"Answer:"; the last ``\boxed{}`` or the text
after "answer is" (numbers canonicalised: "1,000.0" and "$1000" both vote for
"1000"; other math normalised as the MATH scorer does; a sentence gives its
number, else its lowercased words); a number after
``####``; the last number in the text; else the whole text, lowercased with
spaces collapsed (so identical free-text answers still agree).

The winner is represented by the first candidate (in input order) that gave
it; ties between answers go to the one seen first. Each returned candidate gets
``answer`` (the canonical vote key), ``score`` (vote share) and ``meta``:
``votes``, ``vote_counts`` (every answer's count) and ``answer_method``. No LLM.
"""

from __future__ import annotations

import collections
import re
from typing import ClassVar

from itas.answers.mathequiv import extract_answer, normalize
from itas.answers.numeric import NUMBER_RE, extract_number, format_number, numbers
from itas.techniques.base import Job, TechniqueAgent
from itas.techniques.contract import TechniqueReply

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


class MajorityVoteAgent(TechniqueAgent):
    technique = "majority_vote"
    uses_llm = False
    default_credit = 64
    known_params: ClassVar[frozenset[str]] = frozenset({"top_k"})

    async def run(self, job: Job) -> TechniqueReply:
        top_k = job.params.integer("top_k", 1, low=1)
        candidates = job.candidates
        keys = []
        for candidate in candidates:
            if candidate.answer is not None:
                keys.append((" ".join(candidate.answer.split()), "given"))
            else:
                keys.append(vote_key(candidate.text))
        counts = collections.Counter(key for key, _ in keys)
        first_seen: dict[str, int] = {}
        for i, (key, _) in enumerate(keys):
            first_seen.setdefault(key, i)
        ranked = sorted(counts, key=lambda k: (-counts[k], first_seen[k]))[:top_k]
        winners = []
        for key in ranked:
            i = first_seen[key]
            candidate = candidates[i]
            candidate.answer = key
            candidate.score = counts[key] / len(candidates)
            candidate.meta.update(votes=counts[key], vote_counts=dict(counts),
                                  answer_method=keys[i][1], voter=self.service)
            winners.append(candidate)
        unreadable = sum(1 for _, method in keys if method == "whole_text")
        if unreadable:
            job.note("no_final_answer", f"{unreadable} of {len(candidates)} candidate(s) state "
                                        "no final answer; their whole text was compared")
        return job.reply(winners)
