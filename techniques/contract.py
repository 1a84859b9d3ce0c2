"""The technique contract: request and reply bodies, checked the same way on both sides.

The orchestrator builds ``TechniqueRequest`` bodies and reads ``TechniqueReply`` bodies; an
agent reads the request and writes the reply. Both sides decode with the functions here, so a
body one side accepts is a body the other side wrote by these rules, and a hostile or buggy
peer is caught at the boundary: a bad request is a ``bad_request`` error reply from the agent,
a bad reply is one failed call in the orchestrator's trace (never a crash, never an answer).
What each technique adds to this (how many candidates a reply must return, which annotation
it must set) is the technique module's ``check_reply``.

Request body (msgpack map)::

    messages      [{"role": "system"|"user"|"assistant", "content": str}, ...]
                  the conversation, as this component is to see it (with generated unit tests
                  appended to the last user message where the component shows them)
    candidates    [Candidate, ...]     the candidates this request is about ([] for writers)
    params        {...}                the component's own parameters (its spec fields
                                       without technique/provider/model/endpoint), validated
                                       by the technique's parameter model
    sample_index  int >= 0             which sample this request is (generator, fuser)
    tests         [str, ...] | null    unit tests (unit_test_evaluator, code_tester)
    sim           {answer key} | null  only ever handed to simulated models
    max_calls     int >= 0 | absent    the LLM calls this request may make, re-asks included;
                                       absent: every re-ask the parameters allow
    trace         bool                 reply with the prompts sent (clipped), for traces
    fresh         bool | absent        ask the model again: no reply from the response cache
                                       (``itas ask --no-cache``); new replies are still stored

Candidate::

    id, text, model        str; the orchestrator names candidates, agents keep the ids
    critique               str | null    critic
    score                  float | null  a measured score in [0, 1]: pairwise win rate,
                                         tests passed, vote share; never a made-up one
    rank                   int | null    ranker: 1 = best
    verdict                bool | null   verifier (PASS/FAIL), evaluators (all tests passed)
    tests_passed, tests_total  int | null
    answer                 str | null    majority_vote: the canonical final answer
    meta                   {...}         free-form details per technique

Reply body::

    candidates    [Candidate, ...]     new candidates (writers) or the request's candidates
                                       with their annotations (judges)
    tests         [str, ...] | null    unit_test_generator only
    parse         [ParseRecord, ...]   one per LLM output parsed
    usage         Usage                summed over the calls this request made
    notes         [{"code", "detail"}] decisions outside parsing (e.g. "reask_budget")
    prompts       [[Message, ...]] | null   with ``trace``: the prompts sent, clipped

Every list, string and map has a bound (``LIMITS``): a peer cannot make the other side hold
more than that per message, whatever it sends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from itas.agents.providers.base import Usage
from itas.errors import AgentError, ItasError
from itas.protocol import ErrorCode

ROLES = frozenset({"system", "user", "assistant"})
REQUEST_KEYS = frozenset({"messages", "candidates", "params", "sample_index", "tests", "sim",
                          "max_calls", "trace", "fresh", "stream"})
REPLY_KEYS = frozenset({"candidates", "tests", "parse", "usage", "notes", "prompts"})
CANDIDATE_KEYS = frozenset({"id", "text", "model", "critique", "score", "rank", "verdict",
                            "tests_passed", "tests_total", "answer", "meta"})
#: Fields a judging technique may set on a candidate it was given.
ANNOTATIONS = ("critique", "score", "rank", "verdict", "tests_passed", "tests_total", "answer")
USAGE_KEYS = frozenset({"calls", "prompt_tokens", "completion_tokens", "tokens", "latency_s",
                        "cost_usd", "cached_calls", "cost_known"})
PARSE_KEYS = frozenset({"ok", "method", "retries", "fallback", "detail"})

MAX_TEXT_CHARS = 1_000_000      # one candidate's text, critique or test
MAX_ITEMS = 10_000              # candidates, tests, messages, parse records per body
MAX_ID_CHARS = 512
MAX_META_BYTES = 64 * 1024      # a candidate's meta, as packed
MAX_USAGE_TOKENS = 10**12
MAX_CALLS = 1_000_000
PROMPT_CLIP_CHARS = 4000        # per message in a reply's ``prompts``

Message = dict[str, str]


class ContractError(ItasError):
    """A body that breaks the technique contract; ``where`` names the field."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


def bad_request(where: str, problem: str) -> AgentError:
    """The agent side's answer to a bad request: an error reply naming the field."""
    return AgentError(ErrorCode.BAD_REQUEST, f"{where}: {problem}")


# -- field readers ---------------------------------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any, where: str, *, limit: int = MAX_TEXT_CHARS) -> str:
    if value is None:
        raise ContractError(where, "missing; must be a string")
    if not isinstance(value, str):
        raise ContractError(where, f"must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise ContractError(where, f"is {len(value)} characters; at most {limit}")
    return value


def _optional_text(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    return None if value is None else _text(value, f"{where}.{key}")


def _integer(value: Any, where: str, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise ContractError(where, f"must be an integer in [{low}, {high}], got {_show(value)}")
    return int(value)


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ContractError(where, f"must be a number in [{low}, {high}], got {_show(value)}")
    return float(value)


def _items(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ContractError(where, f"must be a list, got {type(value).__name__}")
    if len(value) > MAX_ITEMS:
        raise ContractError(where, f"has {len(value)} items; at most {MAX_ITEMS}")
    return value


def _map(value: Any, where: str, known: frozenset[str] | None = None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ContractError(where, f"must be a map, got {type(value).__name__}")
    if known is not None:
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise ContractError(where, f"unknown field(s) {unknown}; known: "
                                       f"{', '.join(sorted(known))}")
    return value


def _given(item: Mapping[str, Any], key: str, default: Any) -> Any:
    """``item[key]``, or ``default`` when absent or null; a falsy value of the wrong type
    (``[]`` for a map, ``""`` for a list) is returned as is, so the reader rejects it."""
    value = item.get(key)
    return default if value is None else value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _strings(value: Any, where: str) -> list[str]:
    return [_text(item, f"{where}[{i}]") for i, item in enumerate(_items(value, where))]


def messages_of(value: Any, where: str = "messages") -> list[Message]:
    messages = []
    for i, raw in enumerate(_items(value, where)):
        item = _map(raw, f"{where}[{i}]", frozenset({"role", "content"}))
        role = item.get("role")
        if role not in ROLES:
            raise ContractError(f"{where}[{i}].role", f"must be one of {sorted(ROLES)}, "
                                                      f"got {_show(role)}")
        messages.append({"role": str(role),
                         "content": _text(item.get("content"), f"{where}[{i}].content")})
    return messages


# -- bodies ----------------------------------------------------------------------------------

@dataclass(slots=True)
class Candidate:
    id: str
    text: str
    model: str = ""
    critique: str | None = None
    score: float | None = None
    rank: int | None = None
    verdict: bool | None = None
    tests_passed: int | None = None
    tests_total: int | None = None
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "text": self.text, "model": self.model, "critique": self.critique,
            "score": self.score, "rank": self.rank, "verdict": self.verdict,
            "tests_passed": self.tests_passed, "tests_total": self.tests_total,
            "answer": self.answer, "meta": self.meta,
        }  # fmt: skip

    def annotated(self, other: Candidate) -> Candidate:
        """This candidate with ``other``'s annotations (the fields a judge may set) on it;
        id, text and model stay this one's, so a judge cannot rewrite what it judged."""
        copy = Candidate(self.id, self.text, self.model, self.critique, self.score, self.rank,
                         self.verdict, self.tests_passed, self.tests_total, self.answer,
                         {**self.meta, **other.meta})
        for key in ANNOTATIONS:
            value = getattr(other, key)
            if value is not None:
                setattr(copy, key, value)
        return copy

    @classmethod
    def from_dict(cls, data: Any, where: str = "candidate") -> Candidate:
        item = _map(data, where, CANDIDATE_KEYS)
        ident = _text(item.get("id"), f"{where}.id", limit=MAX_ID_CHARS)
        if not ident:
            raise ContractError(f"{where}.id", "must not be empty")
        score = item.get("score")
        rank = item.get("rank")
        verdict = item.get("verdict")
        if verdict is not None and not isinstance(verdict, bool):
            raise ContractError(f"{where}.verdict", f"must be true, false or null, "
                                                    f"got {_show(verdict)}")
        counts = {key: None if item.get(key) is None
                  else _integer(item[key], f"{where}.{key}", 0, MAX_ITEMS)
                  for key in ("tests_passed", "tests_total")}
        passed, total = counts["tests_passed"], counts["tests_total"]
        if passed is not None and total is not None and passed > total:
            raise ContractError(f"{where}.tests_passed", f"{passed} passed of {total} tests")
        meta = _given(item, "meta", {})
        _map(meta, f"{where}.meta")
        if len(repr(meta)) > MAX_META_BYTES:
            raise ContractError(f"{where}.meta", f"is larger than {MAX_META_BYTES} bytes")
        return cls(
            id=ident,
            text=_text(item.get("text"), f"{where}.text"),
            model=_optional_text(item, "model", where) or "",
            critique=_optional_text(item, "critique", where),
            score=None if score is None else _number(score, f"{where}.score", 0.0, 1.0),
            rank=None if rank is None else _integer(rank, f"{where}.rank", 1, MAX_ITEMS),
            verdict=verdict,
            tests_passed=passed,
            tests_total=total,
            answer=_optional_text(item, "answer", where),
            meta=dict(meta),
        )


@dataclass(frozen=True, slots=True)
class ParseRecord:
    """How one LLM output was read: ``ok`` False means every attempt failed and the
    technique's documented ``fallback`` applied; ``retries`` counts re-asks."""

    ok: bool
    method: str
    retries: int = 0
    fallback: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "method": self.method, "retries": self.retries,
                "fallback": self.fallback, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: Any, where: str = "parse") -> ParseRecord:
        item = _map(data, where, PARSE_KEYS)
        ok = item.get("ok")
        if not isinstance(ok, bool):
            raise ContractError(f"{where}.ok", "must be true or false")
        fallback = item.get("fallback")
        return cls(ok, _text(item.get("method"), f"{where}.method", limit=200),
                   _integer(item.get("retries", 0), f"{where}.retries", 0, MAX_CALLS),
                   None if fallback is None else _text(fallback, f"{where}.fallback", limit=200),
                   _text(item.get("detail", ""), f"{where}.detail", limit=PROMPT_CLIP_CHARS))


@dataclass(slots=True)
class UsageTotals:
    """Usage summed over calls: one request's, or (merged) a whole query's."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    cached_calls: int = 0
    cost_known: bool = True

    def add(self, usage: Usage) -> None:
        self.calls += usage.calls
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.latency_s += usage.latency_s
        self.cost_usd += usage.cost_usd
        self.cached_calls += usage.calls if usage.cached else 0
        self.cost_known = self.cost_known and usage.cost_known

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def merge(self, usage: Mapping[str, Any] | UsageTotals | None) -> None:
        """Add other totals: a ``UsageTotals`` or a ``to_dict`` map (the evaluation sums
        replies this way); missing fields count as nothing."""
        if usage is None:
            return
        other = usage if isinstance(usage, UsageTotals) else UsageTotals.from_dict(usage)
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.latency_s += other.latency_s
        self.cost_usd += other.cost_usd
        self.cached_calls += other.cached_calls
        self.cost_known = self.cost_known and other.cost_known

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "tokens": self.tokens,
                "latency_s": round(self.latency_s, 6), "cost_usd": self.cost_usd,
                "cached_calls": self.cached_calls, "cost_known": self.cost_known}

    @classmethod
    def from_dict(cls, data: Any, where: str = "usage") -> UsageTotals:
        """Checked: a peer's usage with a wrong type or an absurd value is a ContractError."""
        item = _map(data, where, USAGE_KEYS)

        def count(key: str, high: int) -> int:
            return _integer(item.get(key, 0), f"{where}.{key}", 0, high)

        cost_known = item.get("cost_known", True)
        if not isinstance(cost_known, bool):
            raise ContractError(f"{where}.cost_known", "must be true or false")
        return cls(count("calls", MAX_CALLS), count("prompt_tokens", MAX_USAGE_TOKENS),
                   count("completion_tokens", MAX_USAGE_TOKENS),
                   _number(item.get("latency_s", 0.0), f"{where}.latency_s", 0.0, 1e9),
                   _number(item.get("cost_usd", 0.0), f"{where}.cost_usd", 0.0, 1e9),
                   count("cached_calls", MAX_CALLS), cost_known)


@dataclass(frozen=True, slots=True)
class TechniqueRequest:
    messages: list[Message]
    candidates: list[Candidate]
    params: dict[str, Any]
    sample_index: int = 0
    tests: list[str] | None = None
    sim: dict[str, Any] | None = None
    max_calls: int | None = None
    trace: bool = False
    fresh: bool = False
    #: Ask for the answer's text as partial replies while it is written (wire PARTIAL);
    #: the orchestrator sets it on the final layer's one writer when its client streams.
    stream: bool = False

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": self.messages, "candidates": [c.to_dict() for c in self.candidates],
            "params": self.params, "sample_index": self.sample_index, "tests": self.tests,
            "sim": self.sim, "trace": self.trace}
        if self.max_calls is not None:
            body["max_calls"] = self.max_calls
        if self.fresh:
            body["fresh"] = True
        if self.stream:
            body["stream"] = True
        return body

    @classmethod
    def from_body(cls, body: Any) -> TechniqueRequest:
        """Validate a decoded request body; ContractError names the field."""
        item = _map(body, "request", REQUEST_KEYS)
        candidates = [Candidate.from_dict(c, f"candidates[{i}]")
                      for i, c in enumerate(_items(_given(item, "candidates", []), "candidates"))]
        ids = [c.id for c in candidates]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ContractError("candidates", f"duplicate id {dup!r}; ids must be unique")
        params = dict(_map(_given(item, "params", {}), "params"))
        tests = item.get("tests")
        sim = item.get("sim")
        if sim is not None and not (isinstance(sim, Mapping) and isinstance(sim.get("answer"),
                                                                            str)):
            raise ContractError("sim", "must be an answer key map with a string 'answer', "
                                       "or null")
        max_calls = item.get("max_calls")
        trace = item.get("trace", False)
        if not isinstance(trace, bool):
            raise ContractError("trace", "must be true or false")
        fresh = item.get("fresh", False)
        if not isinstance(fresh, bool):
            raise ContractError("fresh", "must be true or false")
        stream = item.get("stream", False)
        if not isinstance(stream, bool):
            raise ContractError("stream", "must be true or false")
        return cls(
            messages=messages_of(_given(item, "messages", [])),
            candidates=candidates,
            params=params,
            sample_index=_integer(item.get("sample_index", 0), "sample_index", 0, MAX_CALLS),
            tests=None if tests is None else _strings(tests, "tests"),
            sim=None if sim is None else dict(sim),
            max_calls=None if max_calls is None else _integer(max_calls, "max_calls", 0,
                                                              MAX_CALLS),
            trace=trace,
            fresh=fresh,
            stream=stream,
        )


@dataclass(slots=True)
class TechniqueReply:
    candidates: list[Candidate]
    tests: list[str] | None = None
    parse: list[ParseRecord] = field(default_factory=list)
    usage: UsageTotals = field(default_factory=UsageTotals)
    notes: list[dict[str, str]] = field(default_factory=list)
    prompts: list[list[Message]] | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "candidates": [c.to_dict() for c in self.candidates], "tests": self.tests,
            "parse": [p.to_dict() for p in self.parse], "usage": self.usage.to_dict(),
            "notes": self.notes}
        if self.prompts is not None:
            body["prompts"] = self.prompts
        return body

    @classmethod
    def from_body(cls, body: Any) -> TechniqueReply:
        """Read a technique's reply (the orchestrator's side); ContractError names the field."""
        item = _map(body, "reply", REPLY_KEYS)
        if "candidates" not in item or "usage" not in item:
            missing = [k for k in ("candidates", "usage") if k not in item]
            raise ContractError("reply", f"missing field(s) {missing}")
        tests = item.get("tests")
        notes = []
        for i, raw in enumerate(_items(_given(item, "notes", []), "reply.notes")):
            note = _map(raw, f"reply.notes[{i}]", frozenset({"code", "detail"}))
            notes.append({"code": _text(note.get("code"), f"reply.notes[{i}].code", limit=200),
                          "detail": _text(note.get("detail", ""), f"reply.notes[{i}].detail",
                                          limit=PROMPT_CLIP_CHARS)})
        prompts = item.get("prompts")
        return cls(
            [Candidate.from_dict(c, f"reply.candidates[{i}]")
             for i, c in enumerate(_items(item["candidates"], "reply.candidates"))],
            None if tests is None else _strings(tests, "reply.tests"),
            [ParseRecord.from_dict(p, f"reply.parse[{i}]")
             for i, p in enumerate(_items(_given(item, "parse", []), "reply.parse"))],
            UsageTotals.from_dict(item["usage"], "reply.usage"),
            notes,
            None if prompts is None else [messages_of(p, f"reply.prompts[{i}]")
                                          for i, p in enumerate(_items(prompts,
                                                                       "reply.prompts"))],
        )


def clip_messages(messages: Sequence[Message], limit: int = PROMPT_CLIP_CHARS) -> list[Message]:
    """Messages with each content cut to ``limit`` characters (for traces)."""
    return [{"role": m["role"], "content": m["content"] if len(m["content"]) <= limit
             else m["content"][: limit - 1] + "…"} for m in messages]
