"""fuser: merges the candidates (with their critiques) into new, better answers.

Parameters: ``n_outputs`` (fused answers, default 1), ``length`` (a word count, or "longest":
as long as the longest candidate; Archon's ``length_control``), ``use_critiques`` (default
true) and the LLM fields. Flow: needs candidates, writes ``n_outputs`` new ones (critiques do
not carry over). Fan-out: one request per output, each showing every candidate, sample index
k.

Length control is an instruction in the prompt, as Archon means it, never a cut: an answer
that is longer anyway is kept whole, with ``meta["over_length"]`` (its word count and the
limit) and an ``over_length`` note, so a final line such as "THE ANSWER IS 42." is never lost.

Output ``meta``: ``fused_from`` (input ids), ``sample_index``, ``finish_reason``. An empty
output is re-asked; the fallback is the first candidate's text (``fallback:
"first_candidate"``): the upstream best, never an empty answer.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, StrictBool, field_validator

from itas.techniques.base import (
    ArchonForm,
    Job,
    LLMParams,
    Material,
    OutputFormatError,
    Parsed,
    Shard,
    Technique,
    candidate_block,
    query_text,
)
from itas.techniques.contract import Candidate, Message, TechniqueReply

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


class FuserParams(LLMParams):
    technique: Literal["fuser"] = "fuser"
    n_outputs: int = Field(1, ge=1, le=MAX_OUTPUTS, strict=True)
    length: int | Literal["longest"] | None = None
    use_critiques: StrictBool = True

    @field_validator("length", mode="before")
    @classmethod
    def _word_count_or_longest(cls, value: Any) -> Any:
        if value is None or value == LONGEST:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("must be a word count >= 1 or 'longest'")
        return value


def words(text: str) -> int:
    return len(WORD_RE.findall(text))


#: A heading a small model copies from the prompt's blocks (``### Response [3]``) before
#: its answer; it is the prompt's label, not part of the answer.
ECHOED_HEADING_RE = re.compile(
    r"\A\s*#{1,6}[ \t]*(?:final |fused |synthesi[sz]ed )?(?:response|answer)"
    r"(?:[ \t]*\[\d+\])?[ \t]*:?[ \t]*\n", re.IGNORECASE)


def parse_fused(text: str) -> Parsed[str]:
    """The answer as written, less a heading echoed from the prompt (said in the detail)."""
    answer = text.strip()
    if not answer:
        raise OutputFormatError("the reply was empty")
    echoed = ECHOED_HEADING_RE.match(answer)
    if echoed and answer[echoed.end():].strip():
        rest = answer[echoed.end():].strip()
        return Parsed(rest, "text", f"{words(rest)} words (removed the heading "
                                    f"{echoed.group().strip()!r} copied from the prompt)")
    return Parsed(answer, "text", f"{words(answer)} words")


def length_limit(p: FuserParams, candidates: list[Candidate]) -> int | None:
    if p.length == LONGEST:
        return max((words(c.text) for c in candidates), default=0) or None
    return p.length if isinstance(p.length, int) else None


def _archon_length(raw: dict[str, Any]) -> dict[str, Any]:
    """Archon's ``length_control`` (a boolean) as itas's ``length``."""
    if "length" in raw:
        control = raw.pop("length")
        if not isinstance(control, bool):
            raise ValueError("'length_control' must be true or false")
        if control:
            raw["length"] = LONGEST
    return raw


class Fuser(Technique[FuserParams]):
    name = "fuser"
    params_model = FuserParams
    summary = "merges the candidates into new answers"
    keeps_candidates = False
    reply_shape = "writes_one"
    archon = ArchonForm(renamed={"samples": "n_outputs", "length_control": "length"},
                        convert=_archon_length)

    def shards(self, p: FuserParams, n: int) -> list[Shard]:
        if not n:
            return []
        return [Shard(tuple(range(n)), k) for k in range(p.n_outputs)]

    def request_calls(self, p: FuserParams, k: int) -> int:
        return 1 if k else 0

    def out_range(self, p: FuserParams, n: int) -> tuple[int, int]:
        return (p.n_outputs, p.n_outputs) if n else (0, 0)

    def prompt_tokens(self, p: FuserParams, n: int, m: Material) -> int:
        shown = m.annotated if p.use_critiques else m.candidate
        return p.n_outputs * (m.overhead + m.tests + n * shown) if n else 0

    def written_tokens(self, p: FuserParams, incoming: int) -> int:
        return p.max_tokens

    async def run(self, job: Job[FuserParams]) -> TechniqueReply:
        sources = job.candidates
        if not sources:
            job.note("no_candidates", "nothing to fuse; no output")
            return job.reply([])
        limit = length_limit(job.params, sources)
        blocks = "\n\n".join(candidate_block(i + 1, c, with_critique=job.params.use_critiques)
                             for i, c in enumerate(sources))
        rule = LENGTH_RULE.format(words=limit) if limit else ""
        prompt = PROMPT.format(query=query_text(job.request.messages), blocks=blocks,
                               length_rule=rule)
        messages: list[Message] = [{"role": "system", "content": SYSTEM},
                                   {"role": "user", "content": prompt}]
        index = job.request.sample_index
        asked = await job.ask(
            messages, role="fuse", parse=parse_fused, fallback=lambda _t: sources[0].text,
            fallback_name="first_candidate", format_hint=FORMAT_HINT,
            candidates=[c.text for c in sources], subject=f"output {index}")
        service = job.agent.service
        fused = Candidate(
            id=f"{service}#{index}", text=asked.value, model=service,
            meta={"fused_from": [c.id for c in sources], "sample_index": index,
                  "finish_reason": asked.finish_reason})
        if limit is not None and words(fused.text) > limit:
            fused.meta["over_length"] = {"words": words(fused.text), "limit": limit}
            job.note("over_length", f"output {index}: {words(fused.text)} words, over the "
                                    f"asked {limit}; kept whole")
        return job.reply([fused])


TECHNIQUE = Fuser()
