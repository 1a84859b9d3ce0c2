"""``itas gateway``: the OpenAI Chat Completions API over the mesh, so any OpenAI client uses an
architecture as a model.

    POST /v1/chat/completions   model = an architecture's name; messages; stream
    GET  /v1/models             the architectures it serves (and whether their agents run)

One ASGI app (Starlette, served by uvicorn) holding one ``AsyncClient``; every query goes to
the ``orchestrator`` service like ``itas ask``'s does, so the gateway scales out by running
more orchestrators, and more gateways.

Models are architecture names: every packaged architecture, every spec file in a
``--models DIR`` (by file stem; ``*.pool.yaml`` files are pools, not models), and a
search's output directory (it holds ``best.yaml``), served under the directory's name.
With ``--sim`` every model runs on simulated models of the same names (``itas up --sim``).

Request fields honoured: ``messages`` (system, user, assistant turns; text content parts
are joined), ``temperature`` and ``max_tokens`` (or ``max_completion_tokens``), set on every
LLM component of the final layer, a 400 where that layer has none; ``n`` (1 only: an
architecture already spends many samples on one answer; ask again for another), ``stream``
and ``stream_options.include_usage``; ``user`` and ``metadata``, which travel with the query
as its ``tags`` (in the orchestrator's trace and the gateway's log line). Any other OpenAI
field with a value is refused with a 400 naming it: silently ignoring ``top_p`` or ``tools``
would give answers the caller did not ask for. An ``itas`` extension object (the SDK's
``extra_body``) takes ``budget`` ({calls, tokens}), ``trace`` (return the flow),
``progress`` (stream a chunk after each layer) and ``timeout_s``.

Replies have the OpenAI shape, with ``usage`` summed over every call of the architecture and
an ``itas`` field: calls, cost in USD or "unknown", latency, the trace id (also the
completion's id), and the stop reason when the budget ended the query early.

Errors use OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``:

    400 invalid_request_error  malformed JSON, wrong types, unsupported fields, n > 1, and a
                               budget that cannot reach an answer (code budget_exceeded: the
                               request's own limit, so retrying it unchanged cannot help; 402
                               would suggest paying fixes it)
    401 invalid_api_key        missing or wrong bearer key
    404 model_not_found        no such architecture
    413 request_too_large      body over ``MAX_BODY_BYTES``
    502 upstream_error         the architecture failed (no candidates, a provider error)
    503 service_unavailable    no agent serves a service the architecture needs (the broker
                               says so after its --unavailable-grace, 5 s by default)
    504 timeout                the deadline passed

Streaming (``stream: true``) sends Server-Sent Events in OpenAI's chunk format: a role
chunk at once, then the final layer's text as its provider writes it. The query asks the
orchestrator to stream (wire protocol PARTIAL, ``itas.protocol``); the orchestrator asks
the final layer's writer, when that layer is one component writing one candidate in one
call (``orchestrator.runner.streamable``), and relays its text deltas. Otherwise (several
final writers, a judge last, a provider that does not stream: ``sim``, ``local`` and
``openai`` (any OpenAI-compatible server) do; Anthropic, Gemini and Bedrock do not yet)
the answer arrives as one chunk when the architecture ends. The reply stays the truth:
whatever of the answer the deltas did not carry follows as one more chunk, and if the
streamed text is not a prefix of the answer (a re-ask, a resend to another worker), the
finish chunk's ``itas.answer`` carries the answer with a note. With ``itas.progress``, a
chunk with an empty delta and ``itas.progress`` (layer, layers, candidates, latency) follows
every layer; ordinary clients ignore it. Errors after the stream started arrive as a final
``{"error": ...}`` event (the OpenAI SDK raises it as an APIError).

A client that goes away (closes the connection, streaming or not) cancels its query: the
gateway's request is cancelled, the client sends CANCEL, and the broker stops the
orchestrator's work, which cancels its calls to agents in turn (wire protocol 2).

Authentication: bearer keys from ``--api-keys FILE`` (one per line, ``#`` comments) or the
``ITAS_GATEWAY_API_KEYS`` environment variable (separated by commas or whitespace). Keys are
required when the gateway listens beyond loopback, the same rule as the broker's CURVE keys
(``--insecure`` to accept an open gateway); compared in constant time and never logged.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectSendStream
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from itas.benchmarks.custom import validation_lines
from itas.client import AsyncClient
from itas.errors import (
    ClientError,
    ConfigError,
    RemoteError,
    RequestTimeout,
    ServiceUnavailable,
)
from itas.protocol import ErrorCode
from itas.query import ORCHESTRATOR_SERVICE, Answer, query_body
from itas.security import CurveKeys
from itas.spec import Architecture, load_architecture, parse_architecture
from itas.techniques.base import LLMParams

log = logging.getLogger("itas.gateway")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8800
#: Larger bodies get a 413 before they are read to the end (a conversation this size is
#: far beyond any model's context).
MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_TIMEOUT_S = 600.0
MAX_METADATA_ITEMS = 16
KEYS_ENV = "ITAS_GATEWAY_API_KEYS"
SHUTDOWN_GRACE_S = 3
SERVICES_TTL_S = 1.0
#: Events waiting for a slow SSE reader, and the most text one streamed answer may hold
#: (a peer that streams on and on cannot grow the gateway's memory without bound).
STREAM_BUFFER_EVENTS = 256
MAX_STREAM_CHARS = 1_000_000
SEARCH_BEST = "best.yaml"
SPEC_SUFFIXES = (".yaml", ".yml", ".json")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class GatewayError(Exception):
    """An error answered in OpenAI's format: HTTP status, type, code, message, param."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 kind: str = "invalid_request_error", param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.kind, self.param = (
            status, message, code, kind, param)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code="invalid_request")


# -- the request ----------------------------------------------------------------------------

class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # name, tool_call_id...: harmless to drop
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @field_validator("content", mode="before")
    @classmethod
    def _text_or_parts(cls, value: Any) -> Any:
        """One error naming the field, not one per member of the union."""
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                           and isinstance(p.get("text"), str) for p in value):
            return [TextPart(type="text", text=p["text"]) for p in value]
        raise ValueError("must be a string or a list of {\"type\": \"text\", \"text\": ...} "
                         "parts (only text is supported)")

    def as_message(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(
            p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class BudgetField(BaseModel):
    model_config = ConfigDict(extra="forbid")
    calls: StrictInt | None = Field(None, ge=1)
    tokens: StrictInt | None = Field(None, ge=1)


class ItasExtension(BaseModel):
    """The ``itas`` object of a request (``extra_body={"itas": {...}}`` in the OpenAI SDK)."""

    model_config = ConfigDict(extra="forbid")
    budget: BudgetField | None = None
    trace: StrictBool = False
    progress: StrictBool = False
    timeout_s: float | None = Field(None, gt=0, le=3600)


class ChatRequest(BaseModel):
    """The Chat Completions fields the gateway honours; any other is refused by name."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=300)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    n: StrictInt | None = Field(None, ge=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = Field(None, max_length=MAX_METADATA_ITEMS)
    itas: ItasExtension = Field(default_factory=ItasExtension)

    def unsupported(self) -> list[str]:
        return sorted(k for k, v in (self.model_extra or {}).items() if v is not None)


def parse_request(raw: bytes) -> ChatRequest:
    """The request, or a 400 naming what is wrong and where (the first few problems)."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        lines = validation_lines(exc, "request").splitlines()
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
        raise bad_request("; ".join(lines[:3]) + more, param) from None
    extra = request.unsupported()
    if extra:
        raise bad_request(f"unsupported parameter(s) {', '.join(extra)}: an itas architecture "
                          "does not honour them (leave them out)", extra[0])
    if request.n is not None and request.n > 1:
        raise bad_request(f"n={request.n}: this gateway returns one choice per request (an "
                          "architecture already samples many candidates for one answer); "
                          "send n=1 and ask again for another", "n")
    if request.messages[-1].role != "user":
        raise bad_request("the last message must be the user's (the one to answer)",
                          "messages")
    if request.stream_options is not None and not request.stream:
        raise bad_request("stream_options is only allowed with stream: true",
                          "stream_options")
    return request


# -- models ---------------------------------------------------------------------------------

def discover_models(dirs: Sequence[Path]) -> dict[str, Path]:
    """Architecture name -> spec file. Later sources win over earlier ones, so a file of
    one's own can shadow a packaged spec of the same name; ConfigError for a missing dir."""
    from importlib import resources

    found: dict[str, Path] = {}
    for entry in (resources.files("itas.configs") / "architectures").iterdir():
        if entry.name.endswith(SPEC_SUFFIXES):
            found[Path(entry.name).stem] = Path(str(entry))
    for directory in dirs:
        if not directory.is_dir():
            raise ConfigError(f"--models {directory}: no such directory")
        if (directory / SEARCH_BEST).is_file():
            found[directory.resolve().name] = directory / SEARCH_BEST
            continue
        for path in sorted(directory.iterdir()):
            if path.suffix in SPEC_SUFFIXES and not path.name.endswith(
                    tuple(f".pool{s}" for s in SPEC_SUFFIXES)):
                found[path.stem] = path
            elif path.is_dir() and (path / SEARCH_BEST).is_file():
                found[path.name] = path / SEARCH_BEST
    return found


def with_final_settings(arch: Architecture, request: ChatRequest) -> Architecture:
    """The architecture with the request's temperature/max_tokens on its final layer's LLM
    components; a 400 when that layer has none, or a value is outside the spec's range."""
    max_tokens = request.max_completion_tokens or request.max_tokens
    settings = {k: v for k, v in (("temperature", request.temperature),
                                  ("max_tokens", max_tokens)) if v is not None}
    if not settings:
        return arch
    final = arch.layers[-1]
    if not any(isinstance(c, LLMParams) for c in final):
        techniques = ", ".join(c.technique for c in final)
        raise bad_request(f"{arch.name}: its final layer ({techniques}) calls no LLM, so it "
                          f"cannot honour {' and '.join(settings)}; leave them out",
                          next(iter(settings)))
    spec = arch.to_dict()
    for component, params in zip(spec["layers"][-1], final, strict=True):
        if isinstance(params, LLMParams):
            component.update(settings)
    try:
        return parse_architecture(spec, f"{arch.name} with the request's settings")
    except ConfigError as exc:
        raise bad_request(str(exc).splitlines()[0], next(iter(settings))) from None


@dataclass
class ModelTable:
    """The architectures a gateway serves, loaded once each (and simulated with ``sim``)."""

    files: dict[str, Path]
    sim: bool = False
    _loaded: dict[str, Architecture] = field(default_factory=dict)

    def get(self, name: str) -> Architecture:
        if name in self._loaded:
            return self._loaded[name]
        path = self.files.get(name)
        if path is None:
            raise GatewayError(404, f"the model {name!r} does not exist: no architecture of "
                                    "that name (GET /v1/models lists them)",
                               code="model_not_found", param="model")
        try:
            arch = load_architecture(path)
        except ConfigError as exc:
            raise GatewayError(500, f"{name}: its spec does not load: "
                                    f"{str(exc).splitlines()[0]}",
                               kind="server_error", code="bad_model_spec") from None
        if self.sim:
            from itas.deploy import simulated

            arch = simulated(arch)
        self._loaded[name] = arch
        return arch


# -- keys -----------------------------------------------------------------------------------

def load_api_keys(path: Path | None, env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """Keys from the file (one per line, ``#`` comments) and the environment variable."""
    keys: list[str] = []
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--api-keys {path}: cannot read it: {exc.strerror}") from None
        keys += [line.strip() for line in text.splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise ConfigError(f"--api-keys {path}: holds no key")
    keys += env.get(KEYS_ENV, "").replace(",", " ").split()
    return tuple(dict.fromkeys(keys))


def check_listen(host: str, keys: Sequence[str], *, insecure: bool) -> None:
    """Refuse to serve beyond loopback without keys unless the user insists."""
    if not keys and not insecure and host not in _LOOPBACK and not host.startswith("127."):
        raise ConfigError(f"refusing to listen on {host} without API keys: anyone on the "
                          f"network could spend this mesh's calls. Pass --api-keys FILE or set "
                          f"{KEYS_ENV}, or --insecure to accept that.")


def _authorized(request: Request, keys: Sequence[str]) -> bool:
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    matched = False
    for key in keys:  # every key compared, in constant time each
        matched |= hmac.compare_digest(token.strip().encode(), key.encode())
    return matched


# -- the app --------------------------------------------------------------------------------

@dataclass
class GatewayConfig:
    broker: str
    models: ModelTable
    api_keys: tuple[str, ...] = ()
    curve: CurveKeys | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_body_bytes: int = MAX_BODY_BYTES


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, f"the body is {int(declared)} bytes; at most {limit}",
                           code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise GatewayError(413, f"the body is over {limit} bytes", code="request_too_large")
    return bytes(body)


def error_for(exc: ClientError) -> GatewayError:
    """A mesh error as the HTTP error a client of OpenAI's API expects."""
    if isinstance(exc, ServiceUnavailable):
        return GatewayError(503, str(exc), kind="service_unavailable",
                            code="service_unavailable")
    if isinstance(exc, RequestTimeout):
        return GatewayError(504, str(exc), kind="timeout", code="timeout")
    if isinstance(exc, RemoteError):
        if exc.code == ErrorCode.BUDGET:
            return GatewayError(400, str(exc), code="budget_exceeded", param="itas.budget")
        if exc.code == ErrorCode.BAD_REQUEST:
            return bad_request(str(exc))
        if exc.code == ErrorCode.SERVICE_UNAVAILABLE:
            return GatewayError(503, str(exc), kind="service_unavailable",
                                code="service_unavailable")
        if exc.code == ErrorCode.DEADLINE:
            return GatewayError(504, str(exc), kind="timeout", code="timeout")
        return GatewayError(502, str(exc), kind="upstream_error", code=str(exc.code))
    return GatewayError(502, str(exc), kind="upstream_error", code="mesh_error")


@dataclass
class _Prepared:
    request: ChatRequest
    arch: Architecture
    body: dict[str, Any]
    trace_id: str
    timeout_s: float


def usage_of(answer: Answer) -> dict[str, int]:
    prompt = int(answer.usage.get("prompt_tokens", 0))
    completion = int(answer.usage.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def extension_of(answer: Answer, trace_id: str, latency_s: float, trace: bool
                 ) -> dict[str, Any]:
    usage = answer.usage
    known = bool(usage.get("cost_known", True))
    ext: dict[str, Any] = {
        "calls": int(usage.get("calls", 0)),
        "cost_usd": round(float(usage.get("cost_usd", 0.0)), 6) if known else "unknown",
        "latency_s": round(latency_s, 4),
        "trace_id": trace_id,
        "architecture": answer.architecture,
    }
    if answer.stopped:
        ext["stopped"] = answer.stopped
    if trace and answer.trace is not None:
        ext["trace"] = answer.trace
    return ext


class Gateway:
    """The app's state: the configuration and the one client every request shares."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.client: AsyncClient | None = None
        self._served: set[str] = set()
        self._served_at = -math.inf

    async def _check_services(self, arch: Architecture) -> None:
        """A 503 at once, naming them, when no agent serves some service the architecture
        calls: otherwise the query would wait out its deadline and end as a layer with no
        candidates. The broker's service list is reused for ``SERVICES_TTL_S``, and asked
        again before refusing, so an agent that just started is never refused."""
        assert self.client is not None
        for fresh in (False, True):
            now = anyio.current_time()
            if fresh or now - self._served_at > SERVICES_TTL_S:
                services = (await self.client.status())["services"]
                self._served = {n for n, s in services.items() if s.get("workers", 0) > 0}
                self._served_at = now
            missing = [s for s in arch.services if s not in self._served]
            if not missing:
                return
        raise GatewayError(503, f"{arch.name}: no agent serves {', '.join(missing)}; start "
                                f"them (itas agents --arch SPEC, or itas up --arch SPEC)",
                           kind="service_unavailable", code="service_unavailable")

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with AsyncClient(self.config.broker, curve=self.config.curve,
                               timeout=self.config.timeout_s) as client:
            self.client = client
            try:
                yield
            finally:
                self.client = None

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/models/{name:path}", self.get_model, methods=["GET"]),
        ], lifespan=self.lifespan)

    def _check_key(self, request: Request) -> None:
        if self.config.api_keys and not _authorized(request, self.config.api_keys):
            raise GatewayError(401, "missing or wrong API key: send 'Authorization: Bearer "
                                    "<key>' with a key this gateway was given",
                               code="invalid_api_key")

    # -- models ---------------------------------------------------------------------------

    async def list_models(self, request: Request) -> Response:
        try:
            self._check_key(request)
        except GatewayError as exc:
            return exc.response()
        return JSONResponse({"object": "list",
                             "data": [self._model_entry(n) for n in self.config.models.files]})

    async def get_model(self, request: Request) -> Response:
        try:
            self._check_key(request)
            name = request.path_params["name"]
            self.config.models.get(name)
        except GatewayError as exc:
            return exc.response()
        return JSONResponse(self._model_entry(name))

    @staticmethod
    def _model_entry(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "itas"}

    # -- completions ----------------------------------------------------------------------

    async def _prepare(self, request: Request) -> _Prepared:
        self._check_key(request)
        try:
            raw = await read_body(request, self.config.max_body_bytes)
        except ClientDisconnect:
            raise GatewayError(400, "the client went away while sending") from None
        chat = parse_request(raw)
        arch = with_final_settings(self.config.models.get(chat.model), chat)
        try:
            await self._check_services(arch)
        except ClientError as exc:
            raise error_for(exc) from None
        trace_id = uuid.uuid4().hex
        tags: dict[str, Any] = {"trace_id": trace_id}
        if chat.user is not None:
            tags["user"] = chat.user
        if chat.metadata:
            tags["metadata"] = chat.metadata
        budget = chat.itas.budget.model_dump(exclude_none=True) if chat.itas.budget else None
        body = query_body([m.as_message() for m in chat.messages], arch,
                          trace=chat.itas.trace, budget=budget or None, tags=tags)
        return _Prepared(chat, arch, body, trace_id, chat.itas.timeout_s or self.config.timeout_s)

    async def _ask(self, prepared: _Prepared) -> tuple[Answer, float]:
        assert self.client is not None, "the gateway's client opens in its lifespan"
        started = time.perf_counter()
        reply = await self.client.request(ORCHESTRATOR_SERVICE, prepared.body,
                                          timeout=prepared.timeout_s)
        return Answer.from_reply(reply), time.perf_counter() - started

    async def chat_completions(self, request: Request) -> Response:
        try:
            prepared = await self._prepare(request)
        except GatewayError as exc:
            return exc.response()
        if prepared.request.stream:
            return EventStream(functools.partial(self._stream, prepared))
        try:
            answer, latency = await _cancelled_on_disconnect(request, self._ask(prepared))
        except ClientError as exc:
            self._log(prepared, None, 0.0, str(exc))
            return error_for(exc).response()
        if answer is None:  # the client left; nobody reads this
            self._log(prepared, None, 0.0, "client disconnected")
            return Response(status_code=499)
        self._log(prepared, answer, latency, None)
        return JSONResponse({
            "id": f"chatcmpl-{prepared.trace_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": prepared.request.model,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": answer.text}}],
            "usage": usage_of(answer),
            "itas": extension_of(answer, prepared.trace_id, latency, prepared.request.itas.trace),
        })

    async def _stream(self, prepared: _Prepared, out: MemoryObjectSendStream[str]) -> None:
        """The SSE events of one streamed completion: a role chunk at once, the final layer's
        text as it is written (partial replies relayed by the orchestrator), then whatever
        of the answer the deltas did not carry, the finish chunk, usage, ``[DONE]``."""
        assert self.client is not None, "the gateway's client opens in its lifespan"
        chat = prepared.request
        created = int(time.time())
        chunk_id = f"chatcmpl-{prepared.trace_id}"
        streamed: list[str] = []

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            return _sse({"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                         "model": chat.model,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                      "logprobs": None}], **extra})

        backlog: list[str] = []  # text a slow reader has not taken yet, joined when it can
        held = 0

        def offer(event: str) -> bool:
            try:
                out.send_nowait(event)
                return True
            except anyio.WouldBlock:
                return False

        async def on_partial(partial: Any) -> None:
            # Runs in the client's receive loop: never waits; a slow reader's text waits
            # here, joined, up to MAX_STREAM_CHARS (beyond, the reply's text is the answer).
            nonlocal held
            if not isinstance(partial, dict):
                return
            delta = partial.get("delta")
            if isinstance(delta, str) and delta and held + len(delta) <= MAX_STREAM_CHARS:
                held += len(delta)
                streamed.append(delta)
                backlog.append(delta)
                if offer(chunk({"content": "".join(backlog)})):
                    backlog.clear()
            elif chat.itas.progress and isinstance(partial.get("progress"), dict):
                offer(chunk({}, itas={"progress": partial["progress"]}))

        await out.send(chunk({"role": "assistant", "content": ""}))
        body = {**prepared.body, "stream": True, "progress": chat.itas.progress}
        started = time.perf_counter()
        try:
            reply = await self.client.call(ORCHESTRATOR_SERVICE, body,
                                           timeout=prepared.timeout_s, on_partial=on_partial)
        except ClientError as exc:
            self._log(prepared, None, 0.0, str(exc))
            await out.send(_sse(error_for(exc).body()))
            return
        except BaseException:
            self._log(prepared, None, 0.0, "client disconnected")
            raise
        answer, latency = Answer.from_reply(reply.body), time.perf_counter() - started
        self._log(prepared, answer, latency, None)
        if backlog:
            await out.send(chunk({"content": "".join(backlog)}))
        sent = "".join(streamed)
        ext = extension_of(answer, prepared.trace_id, latency, chat.itas.trace)
        ext["streamed"] = bool(sent)
        if answer.text.startswith(sent):
            if answer.text[len(sent):]:
                await out.send(chunk({"content": answer.text[len(sent):]}))
        else:  # the final text is not what streamed (a re-ask, a resend): say so, give it
            ext["answer"] = answer.text
            ext["note"] = "the streamed text differs from the answer; the answer is itas.answer"
        await out.send(chunk({}, "stop", itas=ext))
        if chat.stream_options is not None and chat.stream_options.include_usage:
            await out.send(_sse({"id": chunk_id, "object": "chat.completion.chunk",
                                 "created": created, "model": chat.model, "choices": [],
                                 "usage": usage_of(answer)}))
        await out.send("data: [DONE]\n\n")

    @staticmethod
    def _log(prepared: _Prepared, answer: Answer | None, latency: float, error: str | None
             ) -> None:
        """One line per query: the trace id, model, user and metadata; never headers."""
        chat = prepared.request
        who = f" user={chat.user!r}" if chat.user else ""
        meta = f" metadata={json.dumps(chat.metadata)}" if chat.metadata else ""
        if answer is None:
            log.info("%s model=%s%s%s failed: %s", prepared.trace_id, chat.model, who, meta,
                     error)
        else:
            log.info("%s model=%s%s%s calls=%s latency=%.3fs", prepared.trace_id, chat.model,
                     who, meta, answer.usage.get("calls"), latency)


class EventStream(Response):
    """A Server-Sent Events response fed by ``produce`` through a memory stream, in one task
    group with a watcher of the connection: when the client goes away, the producer (and the
    query it waits on) is cancelled. At most ``STREAM_BUFFER_EVENTS`` events wait for a slow
    reader (the producer joins text meanwhile)."""

    def __init__(self, produce: Callable[[MemoryObjectSendStream[str]], Awaitable[None]]
                 ) -> None:
        # As Starlette's StreamingResponse: no body attribute, so no Content-Length header.
        self.status_code = 200
        self.media_type = "text/event-stream"
        self.background = None
        self.init_headers({"Cache-Control": "no-cache"})
        self.produce = produce

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender, receiver = anyio.create_memory_object_stream[str](
            max_buffer_size=STREAM_BUFFER_EVENTS)

        async def produce() -> None:
            async with sender:
                await self.produce(sender)

        async def watch(scope: anyio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            scope.cancel()

        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, tg.cancel_scope)
            tg.start_soon(produce)
            try:
                async with receiver:
                    async for event in receiver:
                        await send({"type": "http.response.body", "body": event.encode(),
                                    "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:  # the connection broke under a send: as a disconnect
                pass
            tg.cancel_scope.cancel()


def _sse(data: Mapping[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _cancelled_on_disconnect(request: Request, work: Any) -> Any:
    """Run ``work`` (a coroutine), cancelled if the client disconnects first: what it
    returns, or ``(None, 0.0)`` when the client left; its exception is re-raised as is."""
    outcome: list[Any] = []

    async def run(scope: anyio.CancelScope) -> None:
        try:
            outcome.append(await work)
        except Exception as exc:  # noqa: BLE001 - re-raised below, outside the group
            outcome.append(exc)
        scope.cancel()

    async def watch(scope: anyio.CancelScope) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, tg.cancel_scope)
        tg.start_soon(watch, tg.cancel_scope)
    if not outcome:
        return (None, 0.0)
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


def build_app(config: GatewayConfig) -> Starlette:
    return Gateway(config).app()


async def serve(config: GatewayConfig, host: str, port: int, *,
                task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled, then stop gracefully (open requests get ``SHUTDOWN_GRACE_S``);
    reports the bound port (``port`` 0 picks a free one). Signals stay the caller's:
    uvicorn's own handlers would fight ``itas up``'s."""
    import socket

    import uvicorn

    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say they are
    # TCP, and without it every response waited ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                         socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"the gateway cannot listen on {host}:{port}: {exc.strerror}") from None
    server = uvicorn.Server(uvicorn.Config(
        build_app(config), log_level="warning", access_log=False, lifespan="on",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]

    async def run() -> None:
        with anyio.CancelScope(shield=True):  # stopped by should_exit, not cancellation
            await server.serve([sock])

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        while not server.started:
            if server.should_exit:
                raise ConfigError("the gateway did not start (see the error above)")
            await anyio.sleep(0.02)
        task_status.started(sock.getsockname()[1])
        try:
            await anyio.sleep_forever()
        finally:
            server.should_exit = True
