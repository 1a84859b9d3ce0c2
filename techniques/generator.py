"""generator: samples answers to the query from one model.

Parameters: ``samples`` (how many answers, default 1) and the LLM fields. Flow: needs no
candidates, writes ``samples`` new ones. Fan-out: one request per sample, sample index k, so
replicas share the samples and sample k is the same answer however the calls are spread (the
index is part of the response-cache key and of a simulated model's seed).

The model gets the user's conversation unchanged: a generator is the model answering the
user, nothing more (with generated unit tests in the query where an earlier layer wrote them
and ``tests_in_prompt`` is on). An empty output is re-asked; after the re-asks the empty text
is kept (``fallback: "empty_text"``) so the sample count holds. ``meta`` records
``finish_reason`` and ``sample_index``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from itas.techniques.base import (
    ArchonForm,
    Job,
    LLMParams,
    Material,
    OutputFormatError,
    Parsed,
    Shard,
    Technique,
)
from itas.techniques.contract import Candidate, TechniqueReply

MAX_SAMPLES = 1024
FORMAT_HINT = "Answer the request above directly."


class GeneratorParams(LLMParams):
    technique: Literal["generator"] = "generator"
    samples: int = Field(1, ge=1, le=MAX_SAMPLES, strict=True)


def parse_answer(text: str) -> Parsed[str]:
    if not text.strip():
        raise OutputFormatError("the reply was empty")
    return Parsed(text, "text", f"{len(text.split())} words")


class Generator(Technique[GeneratorParams]):
    name = "generator"
    params_model = GeneratorParams
    summary = "samples answers from one model"
    needs_candidates = False
    keeps_candidates = False
    reply_shape = "writes_one"
    archon = ArchonForm(renamed={"samples": None})

    def shards(self, p: GeneratorParams, n: int) -> list[Shard]:
        return [Shard((), k) for k in range(p.samples)]

    def request_calls(self, p: GeneratorParams, k: int) -> int:
        return 1

    def out_range(self, p: GeneratorParams, n: int) -> tuple[int, int]:
        return (p.samples, p.samples)

    def prompt_tokens(self, p: GeneratorParams, n: int, m: Material) -> int:
        return p.samples * (m.conversation + m.tests)

    def written_tokens(self, p: GeneratorParams, incoming: int) -> int:
        return p.max_tokens

    async def run(self, job: Job[GeneratorParams]) -> TechniqueReply:
        index = job.request.sample_index
        asked = await job.ask(
            job.request.messages, role="generate", parse=parse_answer,
            fallback=lambda text: text, fallback_name="empty_text", format_hint=FORMAT_HINT,
            subject=f"sample {index}")
        service = job.agent.service
        return job.reply([Candidate(
            id=f"{service}#{index}", text=asked.value, model=service,
            meta={"sample_index": index, "finish_reason": asked.finish_reason})])


TECHNIQUE = Generator()
