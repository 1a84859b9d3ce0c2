"""What a technique is: one class that owns everything about it, read by every part of itas.

A technique module defines a parameter model (a pydantic class, the one schema the spec, the
agent and the search all validate with) and a ``Technique`` subclass with:

- its **flow role**: does it need candidates, does it write the layer's candidate list or
  annotate the candidates passing through, does it need or write unit tests;
- its **fan-out**: ``shards(params, n)`` says which requests the orchestrator sends for n
  incoming candidates (one per sample, per candidate, or one for all), and
  ``request_calls(params, k)`` how many LLM calls one request about k candidates makes before
  any re-ask. Everything about calls is derived from these two: the static plan
  (``itas.plan``), the orchestrator's budget and the agent's own cap;
- its **bounds**: ``out_range`` (candidates left, least and most) and the token pieces the
  static cost bound composes;
- the **contract** of its replies (``check_reply``) and how they **merge** back into the
  candidate set (``merge``): every selection rule (keep the top k, keep what passed, order by
  tests passed, count votes) lives in ``merge`` and nowhere else;
- its **agent side**: ``run(job)``, with its prompts, parser and simulated-model renderer;
- how **Archon** names it (``archon``), read by ``itas.archon``.

Calls and re-asks. Every LLM output a technique asks for is parsed; an unreadable one is
re-asked (the conversation grows by the model's reply and a message naming the problem), up
to ``parse_retries`` times, then the technique's documented fallback applies. So one request
makes between ``request_calls`` and ``request_calls * (1 + parse_retries)`` calls. The
orchestrator tells each request how many it may make (``max_calls``, from the query's
budget); the ``Job`` below never exceeds it: a re-ask that does not fit is not made, and the
fallback applies with a parse record saying why. A provider error (after the provider's own
retries) fails the request with ``provider_error``.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

import anyio
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    model_validator,
)

from itas.agents.providers.base import Provider, SimTask
from itas.agents.providers.registry import PROVIDERS
from itas.errors import AgentError, leaf_exceptions
from itas.techniques.contract import (
    Candidate,
    ContractError,
    Message,
    ParseRecord,
    TechniqueReply,
    TechniqueRequest,
    UsageTotals,
    bad_request,
    clip_messages,
)

log = logging.getLogger("itas.techniques")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
P = TypeVar("P", bound="ComponentParams")

DEFAULT_TEMPERATURE = 0.7
MAX_TEMPERATURE = 2.0
DEFAULT_MAX_TOKENS = 512
#: finish_reason of an output cut at max_tokens (OpenAI, Gemini, Bedrock say "length",
#: Anthropic "max_tokens").
TRUNCATED_FINISHES = frozenset({"length", "max_tokens"})
MAX_TOKENS = 1_000_000
DEFAULT_PARSE_RETRIES = 2
MAX_PARSE_RETRIES = 5
DETAIL_CHARS = 160
#: Token bounds count text at this many characters per token (English averages about 4), plus
#: a few tokens per chat message for the role markers.
CHARS_PER_TOKEN_BOUND = 3
TOKENS_PER_MESSAGE = 8
#: Bound on a technique's own prompt text (system message, instructions, format hints): every
#: template is checked against it by the test suite.
INSTRUCTION_TOKENS = 600
#: Providers whose services are named without an endpoint (see ``endpoint_tag``).
ENDPOINTLESS = frozenset({"local", "sim"})

REASK = (
    "I could not use your reply: {problem}.\n{format_hint}\n"
    "Please answer again, following that format exactly."
)
TESTS_IN_QUERY = "\n\nYour response should pass the following unit tests:\n{tests}"

# An env var *name*: a pasted key ("sk-...") fails the pattern and is never echoed back.
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Url = Annotated[str, Field(pattern=r"^https?://\S+$")]
Count = Annotated[int, Field(ge=1, strict=True)]


def service_name(technique: str, provider: str | None, model: str | None, *,
                 base_url: str | None = None, api_key_env: str | None = None) -> str:
    """The one naming rule for technique services: ``technique@provider:model``, the bare
    technique for tools run without a model, and ``#<endpoint tag>`` after it when the
    component names an endpoint (``endpoint_tag``). Specs and agents both use it, so what an
    architecture calls is exactly what an agent registers, endpoint included: one model on
    two servers is two services."""
    name = technique if model is None else f"{technique}@{provider}:{model}"
    tag = endpoint_tag(provider, base_url, api_key_env)
    return f"{name}#{tag}" if tag else name


def endpoint_tag(provider: str | None, base_url: str | None, api_key_env: str | None
                 ) -> str | None:
    """``<host>-<8 hex>`` naming a non-default endpoint (its URL and the *name* of its key
    variable, never the key), or None for the provider's default. The embedded model and the
    simulated ones have no endpoints to tell apart: whatever URL a deployment gives the local
    model server is the local model."""
    if provider in ENDPOINTLESS or (base_url is None and api_key_env is None):
        return None
    url = (base_url or "").rstrip("/")
    digest = hashlib.blake2b(f"{url}\n{api_key_env or ''}".encode(), digest_size=4).hexdigest()
    host = urllib.parse.urlsplit(url).hostname if url else "default"
    return f"{host}-{digest}"


def estimate_tokens(text: str) -> int:
    """Upper-bound estimate of the tokens of ``text`` (see ``CHARS_PER_TOKEN_BOUND``)."""
    return -(-len(text) // CHARS_PER_TOKEN_BOUND)


def conversation_tokens(messages: Sequence[Message]) -> int:
    return sum(estimate_tokens(m["content"]) + TOKENS_PER_MESSAGE for m in messages)


# -- parameters ------------------------------------------------------------------------------

def check_provider(value: str) -> str:
    if value not in PROVIDERS:
        raise ValueError(f"unknown provider {value!r}{suggest(value, PROVIDERS)}; "
                         f"known providers: {', '.join(PROVIDERS)}")
    return value


#: A provider name from ``itas.agents.providers.PROVIDERS``, checked with a clear message.
ProviderName = Annotated[str, AfterValidator(check_provider)]


class ComponentParams(BaseModel):
    """One component of an architecture: which technique, on which agent, with what settings.

    Subclasses add the technique's own fields. The placement fields say where a component
    runs, not how, and are not sent to the agent, which knows its own provider and model.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    PLACEMENT: ClassVar[frozenset[str]] = frozenset(
        {"technique", "provider", "model", "base_url", "api_key_env"})

    technique: str
    provider: ProviderName | None = None
    model: str | None = None

    @property
    def service_name(self) -> str:
        """The broker service that serves this component: ``technique@provider:model``."""
        return service_name(self.technique, self.provider, self.model,
                            base_url=getattr(self, "base_url", None),
                            api_key_env=getattr(self, "api_key_env", None))

    def wire_params(self) -> dict[str, Any]:
        """The parameters a request carries: every field but the placement ones."""
        return {k: v for k, v in self.model_dump(mode="json", exclude_none=True).items()
                if k not in self.PLACEMENT}


class LLMParams(ComponentParams):
    """Fields of every technique that calls an LLM."""

    provider: ProviderName
    model: str = Field(min_length=1)
    base_url: Url | None = None
    api_key_env: EnvName | None = None
    temperature: float = Field(DEFAULT_TEMPERATURE, ge=0.0, le=MAX_TEMPERATURE, strict=True)
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, le=MAX_TOKENS, strict=True)
    parse_retries: int = Field(DEFAULT_PARSE_RETRIES, ge=0, le=MAX_PARSE_RETRIES, strict=True)
    #: Show unit tests an earlier unit_test_generator wrote inside the query, as Archon does.
    tests_in_prompt: StrictBool = True


class ToolParams(ComponentParams):
    """Techniques without an LLM; provider and model, both or neither, only name the agent."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> ToolParams:
        if (self.provider is None) != (self.model is None):
            raise ValueError("give both 'provider' and 'model', or neither")
        return self


def suggest(word: object, choices: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- what the orchestrator sends and gets back -------------------------------------------------

@dataclass(frozen=True, slots=True)
class Shard:
    """One request of a component: the incoming candidates it is about (by index) and its
    sample index (the k-th sample of a generator or fuser; part of the cache key)."""

    candidates: tuple[int, ...] = ()
    sample_index: int = 0


@dataclass(slots=True)
class Merged:
    """What a component leaves: candidates, unit tests it wrote, problems for the trace."""

    candidates: list[Candidate]
    tests: list[str] | None = None
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Material:
    """Token bounds of what a prompt can carry: conversation, one candidate, its critiques,
    the unit tests. Static bounds use assumed sizes; the orchestrator measures real ones."""

    conversation: int
    candidate: int
    critiques: int
    tests: int

    @property
    def overhead(self) -> int:
        """A prompt before the candidates it shows: instructions plus the conversation."""
        return INSTRUCTION_TOKENS + self.conversation

    @property
    def annotated(self) -> int:
        """One candidate shown with its critiques."""
        return self.candidate + self.critiques


ReplyShape = Literal["writes_one", "annotates", "writes_tests"]


@dataclass(frozen=True)
class ArchonForm:
    """How Archon's config JSON writes a technique (read by ``itas.archon``).

    ``renamed``: Archon key -> itas field (``None``: the same name). ``ignored``: keys
    Archon's own code never reads for this technique; they load with a warning.
    ``pattern``: itas fields that make the component run as Archon runs it (its calls per
    layer), set unless the config says otherwise. ``convert`` turns Archon's values into
    itas ones (e.g. ``length_control: true`` into ``length: longest``); it raises
    ValueError naming the key for a value it cannot take.
    """

    renamed: Mapping[str, str | None] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()
    pattern: Mapping[str, Any] = field(default_factory=dict)
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None


class Technique(abc.ABC, Generic[P]):
    """The base of every technique; see the module docstring for what a subclass defines."""

    name: ClassVar[str]
    params_model: ClassVar[type[ComponentParams]]
    summary: ClassVar[str]
    uses_llm: ClassVar[bool] = True
    #: False for techniques served as agents but not placed in architectures (the judge).
    in_specs: ClassVar[bool] = True
    needs_candidates: ClassVar[bool] = True
    #: Writes the layer's candidate list (else it annotates the candidates passing through).
    produces: ClassVar[bool] = True
    #: Its output is a subset of its input, so critiques ride on.
    keeps_candidates: ClassVar[bool] = True
    needs_tests: ClassVar[bool] = False
    makes_tests: ClassVar[bool] = False
    runs_code: ClassVar[bool] = False
    reply_shape: ClassVar[ReplyShape] = "annotates"
    #: How Archon's config JSON names this technique's fields (``itas.archon``).
    archon: ClassVar[ArchonForm | None] = None

    # -- fan-out and bounds (pure; the plan, the orchestrator and the agent use them) -----

    def shards(self, p: P, n: int) -> list[Shard]:
        """The requests sent for ``n`` incoming candidates; default: one per candidate."""
        return [Shard((i,)) for i in range(n)]

    def request_calls(self, p: P, k: int) -> int:
        """LLM calls one request about ``k`` candidates makes before any re-ask."""
        return k if self.uses_llm else 0

    def out_range(self, p: P, n: int) -> tuple[int, int]:
        """Least and most candidates it leaves for ``n`` incoming, when no call fails."""
        return (n, n)

    def executions(self, p: P, n: int) -> int:
        """Sandboxed code runs for ``n`` incoming candidates."""
        return 0

    def flow_problem(self, p: P, reachable: int) -> str | None:
        """Why this component cannot work when up to ``reachable`` candidates reach it, or
        None. Default: a ``top_k`` larger than what can reach it."""
        top_k = getattr(p, "top_k", None)
        if top_k is not None and top_k > reachable:
            return f"'top_k' is {top_k} but at most {reachable} candidate(s) can reach it"
        return None

    def calls(self, p: P, n: int) -> int:
        """LLM calls for ``n`` incoming candidates, before re-asks."""
        return sum(self.request_calls(p, len(s.candidates)) for s in self.shards(p, n))

    def min_calls(self, p: P, n: int) -> int:
        """The fewest LLM calls for ``n`` candidates (techniques that stop early make fewer
        than ``calls``)."""
        return self.calls(p, n)

    def reasks(self, p: P) -> int:
        """Re-asks each call may lead to."""
        return p.parse_retries if isinstance(p, LLMParams) else 0

    def request_max_calls(self, p: P, k: int) -> int:
        """LLM calls of one request about ``k`` candidates, every re-ask included."""
        return self.request_calls(p, k) * (1 + self.reasks(p))

    def max_calls(self, p: P, n: int) -> int:
        """LLM calls for ``n`` incoming candidates, every re-ask included: a true bound."""
        return self.calls(p, n) * (1 + self.reasks(p))

    # Token pieces for the cost bound (``itas.plan``); each is an upper bound.

    def prompt_tokens(self, p: P, n: int, m: Material) -> int:
        """Prompt tokens of the calls for ``n`` candidates, before re-asks."""
        return 0

    def max_tokens_per_call(self, p: P) -> int:
        return p.max_tokens if isinstance(p, LLMParams) else 0

    def written_tokens(self, p: P, incoming: int) -> int:
        """Token bound of the candidates it writes, given the bound of those it reads."""
        return incoming

    def critique_tokens(self, p: P) -> int:
        return 0

    def test_tokens(self, p: P) -> int:
        return 0

    # -- contract and merge (the orchestrator's side) ---------------------------------------

    def check_reply(self, p: P, request: TechniqueRequest, reply: TechniqueReply) -> None:
        """Raise ContractError when a well-formed reply does not fit this request."""
        if self.reply_shape == "writes_one":
            if len(reply.candidates) != 1:
                raise ContractError("reply.candidates",
                                    f"must hold exactly 1 new candidate, got "
                                    f"{len(reply.candidates)}")
        elif self.reply_shape == "writes_tests":
            if reply.tests is None:
                raise ContractError("reply.tests", "missing: the tests this request wrote")
        else:
            sent = [c.id for c in request.candidates]
            got = [c.id for c in reply.candidates]
            if sorted(got) != sorted(sent):
                unknown = sorted(set(got) - set(sent))
                missing = sorted(set(sent) - set(got))
                twice = sorted({i for i in got if got.count(i) > 1})
                parts = [f"unknown {unknown}" if unknown else "",
                         f"missing {missing}" if missing else "",
                         f"repeated {twice}" if twice else ""]
                raise ContractError("reply.candidates", "must return each candidate it was "
                                    "given once: " + ", ".join(x for x in parts if x))
        if request.max_calls is not None and reply.usage.calls > request.max_calls:
            raise ContractError("reply.usage.calls", f"{reply.usage.calls} calls made; the "
                                                     f"request allowed {request.max_calls}")

    def merge(self, p: P, incoming: Sequence[Candidate],
              results: Sequence[tuple[Shard, TechniqueReply | None]]) -> Merged:
        """What the component leaves, from its replies (None for a failed request).
        Default by reply shape: a writer's new candidates in shard order (the orchestrator
        names them); a test writer's incoming candidates unchanged and its tests; a judge's
        incoming candidates with the annotations its replies set."""
        if self.reply_shape == "writes_one":
            return Merged(writers_output(results))
        if self.reply_shape == "writes_tests":
            tests = [t for _, reply in results if reply for t in reply.tests or ()]
            return Merged(list(incoming), tests)
        return Merged(annotate(incoming, results))

    # -- the agent's side -----------------------------------------------------------------------

    @abc.abstractmethod
    async def run(self, job: Job[P]) -> TechniqueReply:
        """Do one request's work through ``job``; build the reply with ``job.reply``."""

    # -- helpers --------------------------------------------------------------------------------

    def params(self, data: Mapping[str, Any], *, provider: str | None = None,
               model: str | None = None) -> P:
        """The agent's side: a request's params, validated by the parameter model with the
        agent's own placement; ContractError names the bad field."""
        placed = sorted(k for k in data if k in ComponentParams.PLACEMENT)
        if placed:
            raise ContractError("params", f"{placed} say where a component runs; a request "
                                          "cannot set them (the agent serves its own)")
        fields = {**data, "technique": self.name}
        if provider is not None:
            fields.update(provider=provider, model=model)
        try:
            return self.params_model.model_validate(fields)  # type: ignore[return-value]
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            where = "params." + ".".join(str(x) for x in first["loc"]) if first["loc"] \
                else "params"
            raise ContractError(where, str(first["msg"]).removeprefix("Value error, ")) from e


def annotate(incoming: Sequence[Candidate],
             results: Sequence[tuple[Shard, TechniqueReply | None]]) -> list[Candidate]:
    """The incoming candidates, each with the annotations its reply set (by id)."""
    by_id = {c.id: c for c in incoming}
    judged: dict[str, Candidate] = {}
    for _, reply in results:
        for candidate in reply.candidates if reply else ():
            original = judged.get(candidate.id) or by_id.get(candidate.id)
            if original is not None:
                judged[candidate.id] = original.annotated(candidate)
    return [judged.get(c.id, c) for c in incoming]


def judged_only(incoming: Sequence[Candidate],
                results: Sequence[tuple[Shard, TechniqueReply | None]]) -> list[Candidate]:
    """The incoming candidates a successful reply judged, annotated, in input order."""
    judged = {c.id for _, reply in results if reply for c in reply.candidates}
    return [c for c in annotate(incoming, results) if c.id in judged]


def writers_output(results: Sequence[tuple[Shard, TechniqueReply | None]]) -> list[Candidate]:
    """The new candidates of a writing technique, in shard order (ids set by the caller)."""
    return [c for _, reply in results if reply for c in reply.candidates]


# -- the agent's side: one request in progress ---------------------------------------------------

class OutputFormatError(Exception):
    """An LLM output that does not follow the asked format; the reason goes into the re-ask."""


@dataclass(frozen=True, slots=True)
class Parsed(Generic[T_co]):
    value: T_co
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


@dataclass(frozen=True, slots=True)
class AgentContext:
    """What a technique's ``run`` may use of the agent process serving it."""

    service: str
    provider: Provider | None
    model: str | None
    run_limiter: anyio.CapacityLimiter  # sandboxed code runs at once, per process


class Job(Generic[P]):
    """One request in progress: its parameters, the LLM calls it makes and their records.

    The call cap: ``base`` calls (``request_calls``) are the first attempts of the outputs
    the technique asks for; ``max_calls`` minus ``base`` is what re-asks may spend, first
    come first served, and no output is re-asked more than ``parse_retries`` times.
    """

    def __init__(self, technique: Technique[P], agent: AgentContext, request: TechniqueRequest,
                 params: P) -> None:
        self.technique = technique
        self.agent = agent
        self.request = request
        self.params = params
        self.usage = UsageTotals()
        self.notes: list[dict[str, str]] = []
        self.base = technique.request_calls(params, len(request.candidates))
        allowance = (request.max_calls if request.max_calls is not None
                     else technique.request_max_calls(params, len(request.candidates)))
        if allowance < self.base:
            raise bad_request("max_calls", f"is {allowance}, but this request needs "
                                           f"{self.base} call(s) before any re-ask")
        self._spare_reasks = allowance - self.base
        self._first_attempts = 0
        self._records: list[tuple[int, ParseRecord]] = []
        self._prompts: list[list[Message]] | None = [] if request.trace else None

    @property
    def candidates(self) -> list[Candidate]:
        return self.request.candidates

    def note(self, code: str, detail: str) -> None:
        self.notes.append({"code": code, "detail": detail})

    def reply(self, candidates: list[Candidate], tests: list[str] | None = None
              ) -> TechniqueReply:
        records = [r for _, r in sorted(self._records, key=lambda item: item[0])]
        return TechniqueReply(candidates, tests, records, self.usage, self.notes, self._prompts)

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
        """One LLM output in a format: call, parse, re-ask while the parameters and the
        request's call cap allow, then fall back. ``order`` places the parse record in the
        reply; ``subject`` names what the output was about in the record's detail."""
        provider, model = self.agent.provider, self.agent.model
        if provider is None or model is None or not isinstance(self.params, LLMParams):
            raise AgentError("internal", f"{self.technique.name} asked an LLM without one")
        self._first_attempts += 1
        if self._first_attempts > self.base:  # the technique broke its own call count
            raise AgentError("internal", f"{self.technique.name}: more than the {self.base} "
                                         "call(s) its plan allows for this request")
        sim = SimTask(role=role, key=self.request.sim, candidates=tuple(candidates),
                      render=render, extra=extra or {})
        index = self.request.sample_index if sample_index is None else sample_index
        prefix = f"{subject}: " if subject else ""
        conversation = list(messages)
        problem = text = ""
        finish: str | None = None
        retries = 0
        while True:
            if self._prompts is not None:
                self._prompts.append(clip_messages(conversation))
            completion = await provider.complete(
                conversation, model=model, temperature=self.params.temperature,
                max_tokens=self.params.max_tokens, sample_index=index, sim=sim)
            self.usage.add(completion.usage)
            for adjustment in completion.adjustments:  # what the provider changed to fit
                if not any(n["detail"] == adjustment for n in self.notes):
                    self.note("adjusted", adjustment)
            text, finish = completion.text, completion.finish_reason
            if finish in TRUNCATED_FINISHES:  # said once per request, in the trace's notes
                detail = (f"output cut at the token limit (max_tokens "
                          f"{self.params.max_tokens}); raise max_tokens for whole answers")
                if not any(n["detail"] == detail for n in self.notes):
                    self.note("truncated", detail)
            try:
                parsed = parse(text)
            except OutputFormatError as exc:
                problem = str(exc)
            else:
                record = ParseRecord(True, parsed.method, retries, None, prefix + parsed.detail)
                self._records.append((order, record))
                return Asked(parsed.value, text, finish, record)
            if retries >= self.params.parse_retries:
                why = ""
                break
            if self._spare_reasks <= 0:
                why = "; no re-ask left in this request's call budget"
                break
            self._spare_reasks -= 1
            retries += 1
            conversation = [*messages, {"role": "assistant", "content": text},
                            {"role": "user", "content": REASK.format(
                                problem=problem, format_hint=format_hint)}]
        log.warning("%s: %sunparseable after %d attempt(s) (%s)%s; fallback %s",
                    self.agent.service, prefix, retries + 1, problem, why, fallback_name)
        record = ParseRecord(False, "fallback", retries, fallback_name,
                             f"{prefix}{problem}{why}; last output: {clip(text)!r}")
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


def default_parallel_runs() -> int:
    return os.cpu_count() or 2


# -- prompt pieces shared by the techniques -------------------------------------------------

def query_text(messages: Sequence[Message]) -> str:
    """The user's query as prompt text: the message itself, or a labelled transcript."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    turns = [f"[{m['role']}]\n{m['content']}" for m in messages]
    return ("(A conversation; the responses answer its last user message.)\n\n"
            + "\n\n".join(turns))


def with_tests(messages: Sequence[Message], tests: Sequence[str]) -> list[Message]:
    """The conversation with unit tests appended to its last user message (Archon's way of
    showing generated tests to every later component)."""
    shown = [dict(m) for m in messages]
    listed = "\n".join(f"- {' '.join(t.split())}" for t in tests)
    for message in reversed(shown):
        if message["role"] == "user":
            message["content"] += TESTS_IN_QUERY.format(tests=listed)
            break
    return shown


def candidate_block(number: int | str, candidate: Candidate, *, with_critique: bool) -> str:
    """One candidate as the judging and fusing prompts show it."""
    block = f"### Response [{number}]\n{candidate.text.strip()}"
    if with_critique and candidate.critique:
        block += f"\n\n### Critique of response [{number}]\n{candidate.critique.strip()}"
    return block

