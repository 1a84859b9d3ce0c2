"""ranker: orders the candidates best first and keeps the ``top_k`` best.

Params: ``top_k`` (default: all, reordered), ``mode`` ("listwise" default, or
"pairwise"), ``use_critiques`` (default true: show critiques next to candidates),
``temperature``, ``max_tokens``.

listwise: one call shows every candidate as ``[1]..[n]`` and asks for a line
``Ranking: [2] > [1] > [3]``. A ranking that lists at least ``top_k`` distinct
valid numbers is accepted (the unlisted follow in input order, method
"partial_ranking"); numbers out of range, repeats or too short a list are
re-asked. Fallback: input order (``fallback: "input_order"``).
Score: ``(n - 1 - position) / (n - 1)``.

pairwise: one call per unordered pair (n*(n-1)/2, concurrent) shows
"Response A" and "Response B" and asks for ``Better response: A`` or ``B``.
Candidates are ordered by wins, ties by input order. Fallback for a comparison:
a tie, half a win each (``fallback: "tie"``). Score: wins / (n - 1).

A single candidate is kept without a call. ``meta`` gets ``rank`` (1-based),
``ranker`` and, pairwise, ``wins``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
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
from itas.techniques.contract import Message, TechniqueReply

MODES = ("listwise", "pairwise")
SYSTEM = (
    "You are an impartial expert judge. You rank responses by how correct, complete and helpful "
    "they are for the request. Length and style matter only between responses that are "
    "otherwise equal, and the order in which responses are shown means nothing."
)
LIST_PROMPT = """## Request
{query}

## Responses
{blocks}

Rank all {n} responses from best to worst. Think briefly about which are correct, then finish \
with one line in exactly this form, using every response number once (with three responses, \
for example):

Ranking: [2] > [1] > [3]"""
LIST_HINT = "End with one line 'Ranking: [i] > [j] > ...' that lists every response number once."
PAIR_PROMPT = """## Request
{query}

{first}

{second}

Which response is better: more correct, complete and helpful for the request? Think briefly, \
then finish with one line in exactly this form:

Better response: A
(or "Better response: B")"""
PAIR_HINT = "End with one line 'Better response: A' or 'Better response: B'."
RANKING_LINE_RE = re.compile(r"(?im)^[ \t*_#>-]*ranking\b[^\n]*$")
NUMBER_RE = re.compile(r"\[(\d+)\]")
BETTER_RE = re.compile(r"(?im)^\W*better(?:\s+response)?\W*?[:=-]\W*([AB])\b")
SIM_REASON = "Reasoning: I checked each response against the request and its final answer."


def render_ranking(order: Any) -> str:
    return f"{SIM_REASON}\nRanking: " + " > ".join(f"[{i + 1}]" for i in order)


def render_better(choice: Any) -> str:
    return f"{SIM_REASON}\nBetter response: {'AB'[int(choice)]}"


def ranking_parser(n: int, need: int) -> Callable[[str], Parsed[list[int]]]:
    """Parser of a listwise ranking of ``n`` responses that must name at least ``need``."""

    def parse(text: str) -> Parsed[list[int]]:
        lines = RANKING_LINE_RE.findall(text)
        if not lines:  # no "Ranking:" label: the last line with two or more [k]
            lines = [ln for ln in text.splitlines() if len(NUMBER_RE.findall(ln)) >= min(2, n)]
        if not lines:
            raise OutputFormatError("there is no 'Ranking:' line")
        numbers = [int(x) for x in NUMBER_RE.findall(lines[-1])]
        bad = [x for x in numbers if not 1 <= x <= n]
        if bad:
            raise OutputFormatError(f"response number {bad[0]} does not exist; there are {n}")
        if len(set(numbers)) != len(numbers):
            raise OutputFormatError("a response number appears more than once")
        if len(numbers) < need:
            raise OutputFormatError(f"the ranking lists {len(numbers)} of {n} responses")
        order = [x - 1 for x in numbers]
        missing = [i for i in range(n) if i not in order]
        method = "ranking_line" if not missing else "partial_ranking"
        return Parsed(order + missing, method, " > ".join(f"[{x}]" for x in numbers))

    return parse


def parse_better(text: str) -> Parsed[float]:
    """1.0 when response A wins, 0.0 when B does."""
    found = BETTER_RE.findall(text)
    if not found:
        raise OutputFormatError("there is no 'Better response: A' or 'Better response: B' line")
    return Parsed(1.0 if found[-1].upper() == "A" else 0.0, "better_line", f"winner {found[-1]}")


class RankerAgent(TechniqueAgent):
    technique = "ranker"
    known_params: ClassVar[frozenset[str]] = frozenset({"top_k", "mode", "use_critiques"})

    async def run(self, job: Job) -> TechniqueReply:
        candidates = job.candidates
        n = len(candidates)
        top_k = job.params.integer("top_k", None, low=1)
        mode = job.params.choice("mode", "listwise", MODES)
        critiques = job.params.flag("use_critiques", True)
        keep = n if top_k is None else min(top_k, n)
        if n <= 1:
            order, scores = list(range(n)), [1.0] * n
        elif mode == "listwise":
            order = await self._listwise(job, keep, critiques)
            scores = [0.0] * n
            for position, i in enumerate(order):
                scores[i] = (n - 1 - position) / (n - 1)
        else:
            wins = await self._pairwise(job, critiques)
            order = sorted(range(n), key=lambda i: (-wins[i], i))
            scores = [w / (n - 1) for w in wins]
            for i, c in enumerate(candidates):
                c.meta["wins"] = wins[i]
        kept = []
        for position, i in enumerate(order[:keep]):
            candidate = candidates[i]
            candidate.score = scores[i]
            candidate.meta.update(rank=position + 1, ranker=self.service)
            kept.append(candidate)
        return job.reply(kept)

    async def _listwise(self, job: Job, keep: int, critiques: bool) -> list[int]:
        candidates = job.candidates
        blocks = "\n\n".join(candidate_block(i + 1, c, with_critique=critiques)
                             for i, c in enumerate(candidates))
        prompt = LIST_PROMPT.format(query=query_text(job.request.messages), blocks=blocks,
                                    n=len(candidates))
        messages: list[Message] = [{"role": "system", "content": SYSTEM},
                                   {"role": "user", "content": prompt}]
        asked = await job.ask(
            messages, role="rank", parse=ranking_parser(len(candidates), keep),
            fallback=lambda _text: list(range(len(candidates))), fallback_name="input_order",
            format_hint=LIST_HINT, candidates=[c.text for c in candidates],
            render=render_ranking, subject="ranking")
        return asked.value

    async def _pairwise(self, job: Job, critiques: bool) -> list[float]:
        candidates = job.candidates
        pairs = list(itertools.combinations(range(len(candidates)), 2))
        query = query_text(job.request.messages)

        async def compare(k: int, i: int, j: int) -> float:
            prompt = PAIR_PROMPT.format(
                query=query, first=candidate_block("A", candidates[i], with_critique=critiques),
                second=candidate_block("B", candidates[j], with_critique=critiques))
            messages: list[Message] = [{"role": "system", "content": SYSTEM},
                                       {"role": "user", "content": prompt}]
            asked = await job.ask(
                messages, role="compare", parse=parse_better, fallback=lambda _text: 0.5,
                fallback_name="tie", format_hint=PAIR_HINT,
                candidates=[candidates[i].text, candidates[j].text], render=render_better,
                order=k, subject=f"{candidates[i].id} vs {candidates[j].id}")
            return asked.value

        outcomes = await gather([lambda k=k, i=i, j=j: compare(k, i, j)
                                 for k, (i, j) in enumerate(pairs)])
        wins = [0.0] * len(candidates)
        for (i, j), a_won in zip(pairs, outcomes, strict=True):
            wins[i] += a_won
            wins[j] += 1.0 - a_won
        return wins
