"""fuser: merges the candidates (with their critiques) into new, better answers.

Params: ``n_outputs`` (fused answers, default 1, written concurrently with sample
indices ``sample_index + k``), ``length`` (a word cap, or "longest": the word
count of the longest candidate, Archon's length control), ``use_critiques``
(default true), ``temperature``, ``max_tokens``.

Length control: the prompt asks for at most that many words; an answer that is
longer anyway is cut after that many words, with ``meta["truncated_from"]`` set to
its word count and a ``truncated`` note, so the cap is a promise.

Output ids: ``<service>#<sample index>:fuse-<8 hex of the input ids>``; ``meta``
has ``fused_from`` (input ids), ``sample_index`` and ``finish_reason``. An empty
output is re-asked; the fallback is the first candidate's text
(``fallback: "first_candidate"``): the upstream best, never an empty answer.
"""

from __future__ import annotations

import hashlib
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
from itas.techniques.contract import Candidate, Message, TechniqueReply, bad_request

MAX_OUTPUTS = 64
LONGEST = "longest"
SYSTEM = (
    "You synthesize several candidate responses to a request into one response of the highest "
    "quality. Candidates may be wrong, partly or entirely: evaluate them critically, keep what "
    "is correct, fix or drop what is not."
)
PROMPT = """## Request
{query}

## Candidate responses
{blocks}

Write one response to the request that is better than each candidate: accurate, complete and \
clearly organized. Do not copy a candidate blindly, and do not mention that there were \
candidates.{length_rule} Reply with the response only."""
LENGTH_RULE = " Use at most {words} words."
FORMAT_HINT = "Reply with the synthesized response to the request, and nothing else."
WORD_RE = re.compile(r"\S+")


def words(text: str) -> int:
    return len(WORD_RE.findall(text))


def cut_to_words(text: str, limit: int) -> str:
    """The text up to the end of its ``limit``-th word, formatting kept."""
    for count, match in enumerate(WORD_RE.finditer(text), 1):
        if count == limit:
            return text[: match.end()]
    return text


def parse_fused(text: str) -> Parsed[str]:
    answer = text.strip()
    if not answer:
        raise OutputFormatError("the reply was empty")
    return Parsed(answer, "text", f"{words(answer)} words")


def fused_id(service: str, index: int, sources: list[Candidate]) -> str:
    digest = hashlib.blake2b("\x1f".join(c.id for c in sources).encode(), digest_size=4)
    return f"{service}#{index}:fuse-{digest.hexdigest()}"


def _length_limit(job: Job) -> int | None:
    value: Any = job.params.get("length")
    if value is None:
        return None
    if value == LONGEST:
        return max((words(c.text) for c in job.candidates), default=0) or None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_request("params.length", f"must be a word count >= 1 or 'longest', got {value!r}")
    return value


class FuserAgent(TechniqueAgent):
    technique = "fuser"
    known_params: ClassVar[frozenset[str]] = frozenset({"n_outputs", "length", "use_critiques"})

    async def run(self, job: Job) -> TechniqueReply:
        n_outputs = job.params.integer("n_outputs", 1, low=1, high=MAX_OUTPUTS) or 1
        critiques = job.params.flag("use_critiques", True)
        limit = _length_limit(job)
        sources = job.candidates
        if not sources:
            job.note("no_candidates", "nothing to fuse; no output")
            return job.reply([])
        blocks = "\n\n".join(candidate_block(i + 1, c, with_critique=critiques)
                             for i, c in enumerate(sources))
        rule = LENGTH_RULE.format(words=limit) if limit else ""
        prompt = PROMPT.format(query=query_text(job.request.messages), blocks=blocks,
                               length_rule=rule)
        messages: list[Message] = [{"role": "system", "content": SYSTEM},
                                   {"role": "user", "content": prompt}]
        base = job.request.sample_index

        async def fuse(k: int) -> Candidate:
            index = base + k
            asked = await job.ask(
                messages, role="fuse", parse=parse_fused, fallback=lambda _t: sources[0].text,
                fallback_name="first_candidate", format_hint=FORMAT_HINT,
                candidates=[c.text for c in sources], sample_index=index, order=k,
                subject=f"output {index}")
            fused = Candidate(
                id=fused_id(self.service, index, sources), text=asked.value, model=self.service,
                meta={"fused_from": [c.id for c in sources], "sample_index": index,
                      "finish_reason": asked.finish_reason})
            if limit is not None and words(fused.text) > limit:
                fused.meta["truncated_from"] = words(fused.text)
                fused.text = cut_to_words(fused.text, limit)
                job.note("truncated", f"{fused.id}: {fused.meta['truncated_from']} words cut "
                                      f"to the length limit of {limit}")
            return fused

        outputs = await gather([lambda k=k: fuse(k) for k in range(n_outputs)])
        return job.reply(outputs)
