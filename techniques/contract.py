"""The wire schema of every technique agent: request and reply bodies, field by field.

The orchestrator builds these bodies and reads the replies, so this schema is a
contract; a change here is a change to the orchestrator. Bodies are msgpack maps.

Request body::

    {
      "messages":     [{"role": "system"|"user"|"assistant", "content": str}, ...],
                      # the user's query conversation; required and non-empty for
                      # techniques that call an LLM, may be [] or absent for
                      # majority_vote and code_tester
      "candidates":   [Candidate, ...],   # absent or [] for generator, unit_test_generator
      "params":       {...},              # technique parameters; unknown keys are rejected
      "sample_index": int >= 0,           # default 0; which sample (generator, fuser),
                                          # part of the response-cache key
      "tests":        [str, ...] | null,  # unit tests (unit_test_evaluator, code_tester)
      "sim":          {answer key} | null # only ever handed to SimTask.key; never in a prompt
    }

Params by technique, defaults in brackets (each technique module says more); the
LLM techniques also take ``temperature`` [0.7] and ``max_tokens`` [512]::

    generator            n [1] (alias: samples; n wins)
    critic               (none)
    ranker               top_k [all], mode ["listwise" | "pairwise"], use_critiques [true]
    fuser                n_outputs [1], length [none | word count | "longest"],
                         use_critiques [true]
    verifier             top_k [all that pass], use_critiques [true]
    unit_test_generator  num_tests [5], task ["text" | "code"], entry_point
    unit_test_evaluator  top_k [all], select ["top_k" | "first_pass"], task ["text" | "code"],
                         + execution params (task "code")
    majority_vote        top_k [1]
    code_tester          top_k [all], + execution params
    execution params     timeout_s [10], memory_mb [512], entry_point, prompt (HumanEval:
                         the code a body-only answer completes), setup (MBPP setup code)

Tests for code: a list of statements (asserts), one test each; or, with
``entry_point``, one script defining ``check(candidate)`` (HumanEval), one test.

Candidate::

    {
      "id": str,                 # stable; made by the technique that creates the candidate:
                                 # "<service>#<sample_index>" (generator),
                                 # "<service>#<sample_index>:fuse-<hash of input ids>" (fuser)
      "text": str,
      "model": str,              # service that wrote it, e.g. "generator@sim:strong"
      "critique": str | null,    # critic
      "score": float | null,     # ranker (position or win rate, 0..1), evaluators
                                 # (fraction of tests passed), majority_vote (vote share)
      "verdict": bool | null,    # verifier (PASS/FAIL), evaluators (all tests passed)
      "tests_passed": int | null,
      "tests_total": int | null,
      "answer": str | null,      # extracted final answer (majority_vote fills it)
      "meta": {...}              # free-form details per technique, see its module
    }

Reply body::

    {
      "candidates": [Candidate, ...],   # the output set, in order (best first where ranked)
      "tests": [str, ...] | null,       # unit_test_generator only
      "parse": [ParseRecord, ...],      # one per LLM output parsed, in subject order
      "usage": Usage,                   # summed over every call the request made
      "notes": [{"code": str, "detail": str}, ...]
                                        # decisions outside parsing, e.g. verifier
                                        # "none_passed"; [] when there are none
    }

ParseRecord: ``{"ok": bool, "method": str, "retries": int, "fallback": str | null,
"detail": str}``; ``ok`` False means every attempt failed and ``fallback`` names
the documented fallback the technique applied; ``retries`` counts re-asks.

Usage: ``{"calls", "prompt_tokens", "completion_tokens", "latency_s", "cost_usd",
"cached_calls", "cost_known"}``; ``latency_s`` is summed over calls (what the
calls cost in time, not the request's wall time); ``cost_known`` False means some
call's model has no price, so ``cost_usd`` is a lower bound.

Fan-out. A request with n samples or n candidates runs its calls concurrently.
Splitting it instead gives the same candidates: a generator request with ``n: 1``
and ``sample_index: k`` returns sample k of a batch, and so does a fuser with
``n_outputs: 1``. Critic, verifier, unit_test_evaluator and code_tester judge each
candidate on its own, but their *selection* (verifier: keep passing ones, or all
when none passes; evaluator/tester: order by tests passed, cut to ``top_k``)
applies within one request: a caller that sends one request per candidate must
apply it again to the merged replies. Ranker and majority_vote need the whole
set in one request.

Validation errors are ``AgentError("bad_request", ...)`` naming the field, e.g.
``candidates[2].text: must be a string``; they reach the caller as error replies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from itas.agents.providers.base import Usage
from itas.errors import AgentError
from itas.protocol import ErrorCode

ROLES = frozenset({"system", "user", "assistant"})
REQUEST_KEYS = frozenset({"messages", "candidates", "params", "sample_index", "tests", "sim"})
CANDIDATE_KEYS = frozenset(
    {"id", "text", "model", "critique", "score", "verdict", "tests_passed", "tests_total",
     "answer", "meta"}
)  # fmt: skip

Message = dict[str, str]


def bad_request(where: str, problem: str) -> AgentError:
    return AgentError(ErrorCode.BAD_REQUEST, f"{where}: {problem}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
              what: str) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise bad_request(f"{where}.{key}", f"must be {what} or null, got a boolean")
    if not isinstance(value, kind):
        raise bad_request(f"{where}.{key}", f"must be {what} or null, got {type(value).__name__}")
    return value


@dataclass(slots=True)
class Candidate:
    id: str
    text: str
    model: str = ""
    critique: str | None = None
    score: float | None = None
    verdict: bool | None = None
    tests_passed: int | None = None
    tests_total: int | None = None
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "text": self.text, "model": self.model, "critique": self.critique,
            "score": self.score, "verdict": self.verdict, "tests_passed": self.tests_passed,
            "tests_total": self.tests_total, "answer": self.answer, "meta": self.meta,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any, where: str = "candidate") -> Candidate:
        if not isinstance(data, Mapping):
            raise bad_request(where, f"must be a map, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in CANDIDATE_KEYS)
        if unknown:
            raise bad_request(where, f"unknown field(s) {unknown}; known: "
                              f"{', '.join(sorted(CANDIDATE_KEYS))} (put extras in 'meta')")
        for key in ("id", "text"):
            if not isinstance(data.get(key), str):
                raise bad_request(f"{where}.{key}", "required, must be a string")
        if not data["id"]:
            raise bad_request(f"{where}.id", "must not be empty")
        score = _optional(data, "score", (int, float), where, "a number")
        if score is not None and not math.isfinite(score):
            raise bad_request(f"{where}.score", "must be a finite number")
        counts = {k: _optional(data, k, int, where, "an integer")
                  for k in ("tests_passed", "tests_total")}
        meta = data.get("meta") or {}
        if not isinstance(meta, Mapping):
            raise bad_request(f"{where}.meta", "must be a map")
        return cls(
            id=data["id"],
            text=data["text"],
            model=_optional(data, "model", str, where, "a string") or "",
            critique=_optional(data, "critique", str, where, "a string"),
            score=None if score is None else float(score),
            verdict=_optional(data, "verdict", bool, where, "a boolean"),
            tests_passed=counts["tests_passed"],
            tests_total=counts["tests_total"],
            answer=_optional(data, "answer", str, where, "a string"),
            meta=dict(meta),
        )


@dataclass(frozen=True, slots=True)
class ParseRecord:
    ok: bool
    method: str
    retries: int = 0
    fallback: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "method": self.method, "retries": self.retries,
                "fallback": self.fallback, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParseRecord:
        return cls(bool(data["ok"]), str(data["method"]), int(data["retries"]),
                   data.get("fallback"), str(data.get("detail", "")))


@dataclass(slots=True)
class UsageTotals:
    """Usage summed over the calls of one request."""

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

    def merge(self, usage: Mapping[str, Any] | None) -> None:
        """Add another request's totals, as ``to_dict`` wrote them (the orchestrator and
        the evaluation sum replies this way); missing fields count as nothing."""
        if not usage:
            return
        self.calls += int(usage.get("calls", 0))
        self.prompt_tokens += int(usage.get("prompt_tokens", 0))
        self.completion_tokens += int(usage.get("completion_tokens", 0))
        self.latency_s += float(usage.get("latency_s", 0.0))
        self.cost_usd += float(usage.get("cost_usd", 0.0))
        self.cached_calls += int(usage.get("cached_calls", 0))
        self.cost_known = self.cost_known and bool(usage.get("cost_known", True))

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "tokens": self.tokens,
                "latency_s": round(self.latency_s, 6), "cost_usd": self.cost_usd,
                "cached_calls": self.cached_calls, "cost_known": self.cost_known}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UsageTotals:
        return cls(int(data["calls"]), int(data["prompt_tokens"]), int(data["completion_tokens"]),
                   float(data["latency_s"]), float(data["cost_usd"]), int(data["cached_calls"]),
                   bool(data.get("cost_known", True)))


@dataclass(frozen=True, slots=True)
class TechniqueRequest:
    messages: list[Message]
    candidates: list[Candidate]
    params: dict[str, Any]
    sample_index: int = 0
    tests: list[str] | None = None
    sim: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "candidates": [c.to_dict() for c in self.candidates],
                "params": self.params, "sample_index": self.sample_index, "tests": self.tests,
                "sim": self.sim}

    @classmethod
    def from_body(cls, body: Any, *, need_messages: bool = True) -> TechniqueRequest:
        """Validate a decoded request body; errors name the field."""
        if not isinstance(body, Mapping):
            raise bad_request("request", f"must be a map, got {type(body).__name__}")
        unknown = sorted(str(k) for k in body if k not in REQUEST_KEYS)
        if unknown:
            raise bad_request("request", f"unknown field(s) {unknown}; known: "
                              f"{', '.join(sorted(REQUEST_KEYS))}")
        messages = _messages(body.get("messages"), need_messages)
        raw_candidates = body.get("candidates") or []
        if not isinstance(raw_candidates, list):
            raise bad_request("candidates", "must be a list of candidates")
        candidates = [Candidate.from_dict(c, f"candidates[{i}]")
                      for i, c in enumerate(raw_candidates)]
        ids = [c.id for c in candidates]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise bad_request("candidates", f"duplicate id {dup!r}; ids must be unique")
        params = body.get("params") or {}
        if not isinstance(params, Mapping):
            raise bad_request("params", "must be a map")
        sample_index = body.get("sample_index", 0)
        if not _is_int(sample_index) or sample_index < 0:
            raise bad_request("sample_index", f"must be an integer >= 0, got {sample_index!r}")
        tests = body.get("tests")
        if tests is not None and (not isinstance(tests, list)
                                  or not all(isinstance(t, str) for t in tests)):
            raise bad_request("tests", "must be a list of strings or null")
        sim = body.get("sim")
        if sim is not None and (not isinstance(sim, Mapping) or not isinstance(sim.get("answer"),
                                                                               str)):
            raise bad_request("sim", "must be an answer key map with a string 'answer', or null")
        return cls(messages, candidates, dict(params), sample_index, tests,
                   None if sim is None else dict(sim))


def _messages(raw: Any, required: bool) -> list[Message]:
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise bad_request("messages", "must be a list of {role, content} maps")
    if required and not raw:
        raise bad_request("messages", "must hold the query conversation (at least one message)")
    messages = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise bad_request(where, "must be a map with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise bad_request(f"{where}.role", f"must be one of {sorted(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise bad_request(f"{where}.content", "must be a string")
        messages.append({"role": role, "content": content})
    return messages


@dataclass(slots=True)
class TechniqueReply:
    candidates: list[Candidate]
    tests: list[str] | None = None
    parse: list[ParseRecord] = field(default_factory=list)
    usage: UsageTotals = field(default_factory=UsageTotals)
    notes: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"candidates": [c.to_dict() for c in self.candidates], "tests": self.tests,
                "parse": [p.to_dict() for p in self.parse], "usage": self.usage.to_dict(),
                "notes": self.notes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TechniqueReply:
        """Read a technique's reply (the orchestrator's side)."""
        return cls(
            [Candidate.from_dict(c, f"reply.candidates[{i}]")
             for i, c in enumerate(data["candidates"])],
            data.get("tests"),
            [ParseRecord.from_dict(p) for p in data.get("parse", ())],
            UsageTotals.from_dict(data["usage"]),
            list(data.get("notes", ())),
        )


class Params:
    """A request's ``params`` checked against the parameters a technique knows.

    Unknown names are rejected rather than ignored: a typo ("topk") would
    otherwise silently run with the default.
    """

    def __init__(self, raw: Mapping[str, Any], known: Iterable[str], technique: str) -> None:
        known = frozenset(known)
        unknown = sorted(str(k) for k in raw if k not in known)
        if unknown:
            raise bad_request("params", f"unknown parameter(s) {unknown} for {technique}; "
                              f"known: {', '.join(sorted(known)) or 'none'}")
        self.raw = raw

    def integer(self, name: str, default: int | None, *, low: int = 0,
                high: int = 1_000_000) -> int | None:
        value = self.raw.get(name, default)
        if value is None:
            return None
        if not _is_int(value) or not low <= value <= high:
            raise bad_request(f"params.{name}", f"must be an integer in [{low}, {high}], "
                              f"got {value!r}")
        return int(value)

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        value = self.raw.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and low <= value <= high):
            raise bad_request(f"params.{name}", f"must be a number in [{low}, {high}], "
                              f"got {value!r}")
        return float(value)

    def choice(self, name: str, default: str, options: Sequence[str]) -> str:
        value = self.raw.get(name, default)
        if value not in options:
            raise bad_request(f"params.{name}", f"must be one of {list(options)}, got {value!r}")
        return str(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw.get(name, default)
        if not isinstance(value, bool):
            raise bad_request(f"params.{name}", f"must be true or false, got {value!r}")
        return value

    def text(self, name: str) -> str | None:
        value = self.raw.get(name)
        if value is not None and not isinstance(value, str):
            raise bad_request(f"params.{name}", f"must be a string, got {type(value).__name__}")
        return value

    def get(self, name: str, default: Any = None) -> Any:
        return self.raw.get(name, default)
