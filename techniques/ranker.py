"""ranker: orders the candidates best first and keeps the ``top_k`` best.

Parameters: ``top_k`` (required), ``mode`` ("listwise" default, or "pairwise"),
``use_critiques`` (show critiques next to candidates; default true, false for Archon configs,
whose ranker shows them only when asked) and the LLM fields. Flow: needs candidates, leaves
``min(top_k, n)`` of them, critiques riding on. Fan-out: one request for all candidates.

listwise: one call shows every candidate as ``[1]..[n]`` and asks for a line
``Ranking: [2] > [1] > [3]``. A ranking that lists at least ``top_k`` distinct valid numbers is
accepted (the unlisted follow in input order, method "partial_ranking"); numbers out of range,
repeats or too short a list are re-asked. Fallback: input order (``fallback: "input_order"``).
pairwise: one call per unordered pair, n*(n-1)/2, concurrent, shows "Response A" and
"Response B" and asks for ``Better response: A`` or ``B``; candidates are ordered by wins,
ties by input order; an unreadable comparison counts as a tie (``fallback: "tie"``).

Each candidate gets ``rank`` (1 = best); pairwise, ``score`` is its win rate over the
comparisons that were read (none read: no score). Listwise rankings give no score: a position
is not a measurement. A single candidate is kept without a call. The merge keeps the
``top_k`` best ranks; when the request failed, the first ``top_k`` in input order, which the
trace names as a fallback. Whenever the order is the input order for want of a ranking (the
listwise output never parsed, no pairwise comparison was read, or the request failed), every
candidate's ``meta["fallback"]`` says ``"input order"``, and the trace shows that instead of
ranks that would read as the model's judgement.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
from collections.abc import Callable, Sequence
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
    annotate,
    candidate_block,
    gather,
    query_text,
)
from itas.techniques.contract import (
    Candidate,
    ContractError,
    Message,
    TechniqueReply,
    TechniqueRequest,
)

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
MAX_PAIRWISE_CANDIDATES = 64
INPUT_ORDER = "input order"  # meta["fallback"] when no ranking was read


class RankerParams(LLMParams):
    technique: Literal["ranker"] = "ranker"
    top_k: Count
    mode: Literal["listwise", "pairwise"] = "listwise"
    use_critiques: StrictBool = True


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


class Ranker(Technique[RankerParams]):
    name = "ranker"
    params_model = RankerParams
    summary = "orders the candidates (listwise or pairwise) and keeps the top k"
    archon = ArchonForm(renamed={"top_k": None, "use_critiques": None},
                        ignored=frozenset({"samples", "ranker_batch_size"}),
                        pattern={"use_critiques": False})

    def shards(self, p: RankerParams, n: int) -> list[Shard]:
        return [Shard(tuple(range(n)))] if n else []

    def request_calls(self, p: RankerParams, k: int) -> int:
        if k <= 1:
            return 0
        return math.comb(k, 2) if p.mode == "pairwise" else 1

    def out_range(self, p: RankerParams, n: int) -> tuple[int, int]:
        kept = min(p.top_k, n)
        return (kept, kept)

    def prompt_tokens(self, p: RankerParams, n: int, m: Material) -> int:
        shown = 2 if p.mode == "pairwise" else n
        per_call = m.overhead + m.tests + shown * (m.annotated if p.use_critiques
                                                   else m.candidate)
        return self.calls(p, n) * per_call

    def flow_problem(self, p: RankerParams, reachable: int) -> str | None:
        if p.mode == "pairwise" and reachable > MAX_PAIRWISE_CANDIDATES:
            return (f"pairwise ranking of up to {reachable} candidates; at most "
                    f"{MAX_PAIRWISE_CANDIDATES} (use mode: listwise, or fewer candidates)")
        return super().flow_problem(p, reachable)

    def check_reply(self, p: RankerParams, request: TechniqueRequest,
                    reply: TechniqueReply) -> None:
        super().check_reply(p, request, reply)
        ranks = sorted(c.rank for c in reply.candidates if c.rank is not None)
        if ranks != list(range(1, len(request.candidates) + 1)):
            raise ContractError("reply.candidates.rank", "must rank the candidates 1..n, "
                                                         f"each once; got {ranks}")

    def merge(self, p: RankerParams, incoming: Sequence[Candidate],
              results: Sequence[tuple[Shard, TechniqueReply | None]]) -> Merged:
        if not incoming:
            return Merged([])
        if not any(reply for _, reply in results):
            return Merged([dataclasses.replace(c, meta={**c.meta, "fallback": INPUT_ORDER})
                           for c in incoming[: p.top_k]],
                          problems=["fallback: input order (the ranking request failed)"])
        ranked = sorted(annotate(incoming, results), key=lambda c: c.rank or 0)
        return Merged(ranked[: p.top_k])

    async def run(self, job: Job[RankerParams]) -> TechniqueReply:
        candidates = job.candidates
        n = len(candidates)
        scores: list[float | None]
        ranked = True  # False: the order is the input order, for want of a ranking
        if n <= 1:
            order, scores = list(range(n)), [None] * n
        elif job.params.mode == "listwise":
            order, ranked = await self._listwise(job, min(job.params.top_k, n))
            scores = [None] * n
        else:
            if n > MAX_PAIRWISE_CANDIDATES:
                raise ContractError("candidates", f"pairwise ranking of {n} candidates; "
                                                  f"at most {MAX_PAIRWISE_CANDIDATES}")
            wins, read_wins, read = await self._pairwise(job)
            order = sorted(range(n), key=lambda i: (-wins[i], i))
            # The score counts only comparisons that were read: a tie made up for an
            # unreadable one is no evidence (and would push the rate above 1).
            scores = [read_wins[i] / read[i] if read[i] else None for i in range(n)]
            ranked = any(read)
            for i, c in enumerate(candidates):
                c.meta.update(wins=wins[i], comparisons_read=read[i])
        for position, i in enumerate(order):
            candidate = candidates[i]
            candidate.rank = position + 1
            candidate.score = scores[i]
            candidate.meta["ranker"] = job.agent.service
            if not ranked:
                candidate.meta["fallback"] = INPUT_ORDER
        return job.reply(candidates)

    async def _listwise(self, job: Job[RankerParams], keep: int) -> tuple[list[int], bool]:
        """The order, and whether it is the model's (False: the input order, as a fallback)."""
        candidates = job.candidates
        blocks = "\n\n".join(candidate_block(i + 1, c, with_critique=job.params.use_critiques)
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
        return asked.value, asked.record.ok

    async def _pairwise(self, job: Job[RankerParams]
                        ) -> tuple[list[float], list[float], list[int]]:
        """Per candidate: wins for the order (an unreadable comparison is half a win each),
        wins in the comparisons that were read, and how many of those there were."""
        candidates = job.candidates
        pairs = list(itertools.combinations(range(len(candidates)), 2))
        outcomes = await gather([functools.partial(self._compare, job, k, i, j)
                                 for k, (i, j) in enumerate(pairs)])
        wins = [0.0] * len(candidates)
        read_wins = [0.0] * len(candidates)
        read = [0] * len(candidates)
        for (i, j), (a_won, parsed) in zip(pairs, outcomes, strict=True):
            wins[i] += a_won  # the fallback's 0.5 for an unreadable one: a tie
            wins[j] += 1.0 - a_won
            if parsed:
                read_wins[i] += a_won
                read_wins[j] += 1.0 - a_won
                read[i] += 1
                read[j] += 1
        return wins, read_wins, read

    async def _compare(self, job: Job[RankerParams], k: int, i: int, j: int
                       ) -> tuple[float, bool]:
        candidates = job.candidates
        critiques = job.params.use_critiques
        prompt = PAIR_PROMPT.format(
            query=query_text(job.request.messages),
            first=candidate_block("A", candidates[i], with_critique=critiques),
            second=candidate_block("B", candidates[j], with_critique=critiques))
        messages: list[Message] = [{"role": "system", "content": SYSTEM},
                                   {"role": "user", "content": prompt}]
        asked = await job.ask(
            messages, role="compare", parse=parse_better, fallback=lambda _text: 0.5,
            fallback_name="tie", format_hint=PAIR_HINT,
            candidates=[candidates[i].text, candidates[j].text], render=render_better,
            order=k, subject=f"{candidates[i].id} vs {candidates[j].id}")
        return asked.value, asked.record.ok


TECHNIQUE = Ranker()
