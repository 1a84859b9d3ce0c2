"""generator: samples answers to the query from one model.

Params: ``temperature``, ``max_tokens``, ``n`` (samples in this request, default 1,
drawn concurrently; ``samples``, the architecture spec's name, is an alias, and
``n`` wins when both are given, so a spec's component can be sent as it is with
``n: 1`` per fanned-out request). Sample k of the request has sample index
``request.sample_index + k`` and candidate id ``<service>#<sample index>``, so the
orchestrator can fan out one request per sample (n=1, sample_index=k) or ask for
several at once and get the same ids either way.

The model gets the user's conversation unchanged: a generator is the model
answering the user, nothing more. An empty output is re-asked; after the retries
the empty text is kept (``fallback: "empty_text"``) so the sample count holds.
``meta`` records ``finish_reason`` and ``sample_index``.
"""

from __future__ import annotations

from typing import ClassVar

from itas.techniques.base import Job, OutputFormatError, Parsed, TechniqueAgent, gather
from itas.techniques.contract import Candidate, TechniqueReply

MAX_SAMPLES = 256
FORMAT_HINT = "Answer the request above directly."


def parse_answer(text: str) -> Parsed[str]:
    if not text.strip():
        raise OutputFormatError("the reply was empty")
    return Parsed(text, "text", f"{len(text.split())} words")


class GeneratorAgent(TechniqueAgent):
    technique = "generator"
    known_params: ClassVar[frozenset[str]] = frozenset({"n", "samples"})

    async def run(self, job: Job) -> TechniqueReply:
        samples = job.params.integer("samples", 1, low=1, high=MAX_SAMPLES)
        n = job.params.integer("n", samples, low=1, high=MAX_SAMPLES) or 1
        base = job.request.sample_index

        async def sample(k: int) -> Candidate:
            index = base + k
            asked = await job.ask(
                job.request.messages, role="generate", parse=parse_answer,
                fallback=lambda text: text, fallback_name="empty_text",
                format_hint=FORMAT_HINT, sample_index=index, order=k,
                subject=f"sample {index}")
            return Candidate(
                id=f"{self.service}#{index}", text=asked.value, model=self.service,
                meta={"sample_index": index, "finish_reason": asked.finish_reason})

        candidates = await gather([lambda k=k: sample(k) for k in range(n)])
        return job.reply(candidates)
