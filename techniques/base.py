"""What every technique agent shares: settings, the request/reply cycle, and asking an LLM
for output in a format, with bounded re-asks and a recorded fallback.

Settings (a pool entry's ``settings``): ``provider`` and ``model`` (required for
techniques that call an LLM; optional, both or neither, for tool techniques,
where they only name the service), ``credit`` (requests served at once),
``parse_retries`` (re-asks after an unreadable output, default 2) and, for some
techniques, their own keys. Every other key goes to the provider
(``make_provider``), which rejects what it does not know.

Service name, the one rule: ``<technique>@<provider>:<model>``, or the bare
technique name for a tool technique without a model.

Parsing: a technique's parser raises ``OutputFormatError`` with a reason. The agent
then re-asks: the conversation grows by the model's reply and a short message
naming the problem and the format, which also gives the retry a new
response-cache key. After ``parse_retries`` re-asks the technique's documented
fallback applies and the reply's ``parse`` list says so. The loop is bounded
by construction; a provider error (after the provider's own retries) fails the
request with ``provider_error``.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import anyio

from itas.agents.base import Agent
from itas.agents.kinds import service_name
from itas.agents.providers import Provider, SimTask, make_provider
from itas.errors import AgentError, ConfigError, leaf_exceptions
from itas.techniques.contract import (
    Candidate,
    Message,
    Params,
    ParseRecord,
    TechniqueReply,
    TechniqueRequest,
    UsageTotals,
)

log = logging.getLogger("itas.techniques")

T = TypeVar("T")

AGENT_KEYS = frozenset({"provider", "model", "credit", "parse_retries"})
LLM_PARAMS = frozenset({"temperature", "max_tokens"})
DEFAULT_CREDIT = 16
DEFAULT_PARSE_RETRIES = 2
MAX_PARSE_RETRIES = 5
MAX_CREDIT = 10_000
DEFAULT_TEMPERATURE = 0.7
MAX_TEMPERATURE = 2.0
DEFAULT_MAX_TOKENS = 512
MAX_TOKENS_LIMIT = 1_000_000
DETAIL_CHARS = 160

REASK = (
    "I could not use your reply: {problem}.\n{format_hint}\n"
    "Please answer again, following that format exactly."
)


class OutputFormatError(Exception):
    """An LLM output that does not follow the asked format; the reason goes into the re-ask."""


@dataclass(frozen=True, slots=True)
class Parsed(Generic[T]):
    value: T
    method: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Asked(Generic[T]):
    value: T
    text: str
    finish_reason: str | None
    record: ParseRecord


def clip(text: str, limit: int = DETAIL_CHARS) -> str:
    """One line of at most ``limit`` characters, for parse details."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _int_setting(settings: Mapping[str, Any], key: str, default: int, low: int, high: int,
                 where: str) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where}: setting {key!r} must be an integer in [{low}, {high}], "
                          f"got {value!r}")
    return value


def _name_setting(settings: Mapping[str, Any], key: str, where: str) -> str | None:
    value = settings.get(key)
    if value is None:
        return None
    # Colons are fine (Ollama's "llama3:8b"): a service name splits at its first ':' only.
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ConfigError(f"{where}: setting {key!r} must be a non-empty name without "
                          f"spaces, got {value!r}")
    return value


class TechniqueAgent(Agent):
    """Base of the technique agents; a subclass implements ``run``."""

    technique: ClassVar[str]
    #: False for majority_vote and code_tester: no provider, no messages required.
    uses_llm: ClassVar[bool] = True
    #: Request parameters besides temperature/max_tokens (LLM techniques get those too).
    known_params: ClassVar[frozenset[str]] = frozenset()
    #: Agent settings of this technique besides AGENT_KEYS (not passed to the provider).
    own_settings: ClassVar[frozenset[str]] = frozenset()
    default_credit: ClassVar[int] = DEFAULT_CREDIT

    def __init__(self, settings: Mapping[str, Any]) -> None:
        where = f"agent {self.technique!r}"
        if not isinstance(settings, Mapping):
            raise ConfigError(f"{where}: settings must be a mapping")
        self.provider_name = _name_setting(settings, "provider", where)
        self.model = _name_setting(settings, "model", where)
        if self.uses_llm and (self.provider_name is None or self.model is None):
            raise ConfigError(f"{where}: settings 'provider' and 'model' are required "
                              "(e.g. provider: sim, model: strong)")
        if (self.provider_name is None) != (self.model is None):
            raise ConfigError(f"{where}: give both 'provider' and 'model', or neither")
        self.service = service_name(self.technique, self.provider_name, self.model)
        self.credit = _int_setting(settings, "credit", self.default_credit, 1, MAX_CREDIT, where)
        self.parse_retries = _int_setting(settings, "parse_retries", DEFAULT_PARSE_RETRIES, 0,
                                          MAX_PARSE_RETRIES, where)
        rest = {k: v for k, v in settings.items() if k not in AGENT_KEYS | self.own_settings}
        self.provider: Provider | None = None
        if self.uses_llm:
            assert self.provider_name is not None  # checked above
            self.provider = make_provider(self.provider_name, rest)
        elif rest:
            raise ConfigError(f"{where}: unknown setting(s) {sorted(rest)}; known: "
                              f"{', '.join(sorted(AGENT_KEYS | self.own_settings))}")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> TechniqueAgent:
        return cls(settings)

    async def aclose(self) -> None:
        if self.provider is not None:
            await self.provider.aclose()

    async def handle(self, body: Any) -> Any:
        request = TechniqueRequest.from_body(body, need_messages=self.uses_llm)
        known = self.known_params | (LLM_PARAMS if self.uses_llm else frozenset())
        job = Job(self, request, Params(request.params, known, self.technique))
        reply = await self.run(job)
        return reply.to_dict()

    @abc.abstractmethod
    async def run(self, job: Job) -> TechniqueReply:
        """Do one request's work through ``job`` and build the reply with ``job.reply``."""


class Job:
    """One request in progress: its parameters, the LLM calls it makes and their records."""

    def __init__(self, agent: TechniqueAgent, request: TechniqueRequest, params: Params) -> None:
        self.agent = agent
        self.request = request
        self.params = params
        self.usage = UsageTotals()
        self.notes: list[dict[str, str]] = []
        self._records: list[tuple[int, ParseRecord]] = []
        if agent.uses_llm:
            self.temperature = params.number("temperature", DEFAULT_TEMPERATURE, low=0.0,
                                             high=MAX_TEMPERATURE)
            self.max_tokens = params.integer("max_tokens", DEFAULT_MAX_TOKENS, low=1,
                                             high=MAX_TOKENS_LIMIT) or DEFAULT_MAX_TOKENS

    @property
    def candidates(self) -> list[Candidate]:
        return self.request.candidates

    def note(self, code: str, detail: str) -> None:
        self.notes.append({"code": code, "detail": detail})

    def reply(self, candidates: list[Candidate], tests: list[str] | None = None) -> TechniqueReply:
        records = [r for _, r in sorted(self._records, key=lambda item: item[0])]
        return TechniqueReply(candidates, tests, records, self.usage, self.notes)

    async def ask(
        self,
        messages: Sequence[Message],
        *,
        role: str,
        parse: Callable[[str], Parsed[T]],
        fallback: Callable[[str], T],
        fallback_name: str,
        format_hint: str,
        candidates: Sequence[str] = (),
        render: Callable[[Any], str] = str,
        extra: dict[str, Any] | None = None,
        sample_index: int | None = None,
        order: int = 0,
        subject: str = "",
    ) -> Asked[T]:
        """One LLM output in a format: call, parse, re-ask up to ``parse_retries`` times, then
        fall back. ``order`` places the parse record in the reply; ``subject`` names what the
        output was about (a candidate id, a pair) in the record's detail."""
        provider = self.agent.provider
        assert provider is not None and self.agent.model is not None
        sim = SimTask(role=role, key=self.request.sim, candidates=tuple(candidates),
                      render=render, extra=extra or {})
        index = self.request.sample_index if sample_index is None else sample_index
        prefix = f"{subject}: " if subject else ""
        conversation = list(messages)
        problem = ""
        text = ""
        finish: str | None = None
        for attempt in range(self.agent.parse_retries + 1):
            completion = await provider.complete(
                conversation, model=self.agent.model, temperature=self.temperature,
                max_tokens=self.max_tokens, sample_index=index, sim=sim)
            self.usage.add(completion.usage)
            text, finish = completion.text, completion.finish_reason
            try:
                parsed = parse(text)
            except OutputFormatError as exc:
                problem = str(exc)
                conversation = [*messages, {"role": "assistant", "content": text},
                                {"role": "user", "content": REASK.format(
                                    problem=problem, format_hint=format_hint)}]
                continue
            record = ParseRecord(True, parsed.method, attempt, None, prefix + parsed.detail)
            self._records.append((order, record))
            return Asked(parsed.value, text, finish, record)
        retries = self.agent.parse_retries
        log.warning("%s: %sunparseable after %d attempt(s) (%s); fallback %s",
                    self.agent.service, prefix, retries + 1, problem, fallback_name)
        record = ParseRecord(False, "fallback", retries, fallback_name,
                             f"{prefix}{problem}; last output: {clip(text)!r}")
        self._records.append((order, record))
        return Asked(fallback(text), text, finish, record)


async def gather(thunks: Sequence[Callable[[], Awaitable[T]]],
                 limiter: anyio.CapacityLimiter | None = None) -> list[T]:
    """Run the thunks concurrently; results in input order.

    A failure cancels the rest and is re-raised unwrapped (an ``AgentError`` first),
    so the runtime sends its code rather than an opaque task-group error.
    """
    results: list[Any] = [None] * len(thunks)

    async def one(i: int, thunk: Callable[[], Awaitable[T]]) -> None:
        if limiter is None:
            results[i] = await thunk()
        else:
            async with limiter:
                results[i] = await thunk()

    try:
        async with anyio.create_task_group() as tg:
            for i, thunk in enumerate(thunks):
                tg.start_soon(one, i, thunk)
    except BaseExceptionGroup as group:
        leaves = list(leaf_exceptions(group))
        chosen = (next((e for e in leaves if isinstance(e, AgentError)), None)
                  or next((e for e in leaves if isinstance(e, Exception)), None))
        if chosen is None:
            raise
        raise chosen from group
    return results


# -- prompt pieces shared by the techniques -------------------------------------------------

def query_text(messages: Sequence[Message]) -> str:
    """The user's query as prompt text: the message itself, or a labelled transcript."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    turns = [f"[{m['role']}]\n{m['content']}" for m in messages]
    return ("(A conversation; the responses answer its last user message.)\n\n"
            + "\n\n".join(turns))


def candidate_block(number: int | str, candidate: Candidate, *, with_critique: bool) -> str:
    """One candidate as the judging and fusing prompts show it."""
    block = f"### Response [{number}]\n{candidate.text.strip()}"
    if with_critique and candidate.critique:
        block += f"\n\n### Critique of response [{number}]\n{candidate.critique.strip()}"
    return block
