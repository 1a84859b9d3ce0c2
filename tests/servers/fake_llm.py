"""A local HTTP server that speaks four vendors' chat APIs: OpenAI, Anthropic, Gemini, Bedrock.

Provider tests run the real SDK clients over real HTTP against it. It answers
``POST /v1/chat/completions`` (OpenAI shape), ``POST /v1/messages`` (Anthropic
shape), ``POST /{version}/models/{model}:generateContent`` (Gemini REST shape),
``POST /model/{modelId}/converse`` (Bedrock runtime Converse, rest-json; with
``aws_credentials`` set it rejects any request not SigV4-signed by them, as AWS
does) and ``GET /v1/models``. It records every request (path, headers, body,
arrival time), counts requests in flight, and can be told to fail the next N
requests with a status (plus headers such as Retry-After; the error body and
headers in the shape of the vendor the path belongs to), to stall before
answering (client timeouts), to send a given body instead of the reply
(undecodable or incomplete replies, safety blocks) or to echo the caller's
credentials in an error body (to prove providers redact them).

It is stdlib ``http.server`` in a daemon thread, bound to 127.0.0.1 port 0.
Handler threads never raise: a client that hung up mid-reply is ignored.
"""

from __future__ import annotations

import collections
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import unquote

from tests.servers.sigv4 import signature_problem

PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7
GEMINI_ROUTE = re.compile(r"^/[^/]+/models/(?P<model>[^/:?]+):generateContent(\?.*)?$")
CONVERSE_ROUTE = re.compile(r"^/model/(?P<model>[^/?]+)/converse(\?.*)?$")
#: Bedrock's error code per HTTP status (rest-json errors name it in x-amzn-ErrorType).
BEDROCK_ERRORS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
#: Google's canonical status names for the statuses tests use.
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
#: How often serve_forever checks for shutdown; the stdlib's 0.5 s would slow every teardown.
POLL_INTERVAL_S = 0.02


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Plan:
    """What to do for one upcoming request instead of answering normally."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    stall_s: float = 0.0
    echo_credentials: bool = False
    body: bytes | None = None  # sent as is with ``status`` instead of the normal reply


@dataclass(frozen=True)
class AwsCredentials:
    """What the fake Bedrock endpoint checks signatures against."""

    key_id: str
    secret: str
    region: str
    service: str = "bedrock"


class FakeLLMServer:
    def __init__(
        self,
        reply_text: str = "fake reply",
        answer_delay_s: float = 0.0,
        aws_credentials: AwsCredentials | None = None,
    ) -> None:
        self.reply_text = reply_text
        self.answer_delay_s = answer_delay_s
        self.aws_credentials = aws_credentials
        #: Why requests were refused as unsigned or wrongly signed, in arrival order.
        self.signature_problems: list[str] = []
        self.requests: list[Recorded] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._plans: collections.deque[Plan] = collections.deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(POLL_INTERVAL_S,), name="fake-llm", daemon=True
        )

    # -- control ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def fail(
        self,
        status: int,
        times: int = 1,
        *,
        headers: dict[str, str] | None = None,
        echo_credentials: bool = False,
    ) -> None:
        with self._lock:
            for _ in range(times):
                self._plans.append(Plan(status, dict(headers or {}), 0.0, echo_credentials))

    def stall(self, seconds: float, times: int = 1) -> None:
        with self._lock:
            for _ in range(times):
                self._plans.append(Plan(stall_s=seconds))

    def send_body(
        self,
        body: bytes | str | dict[str, Any] | list[Any],
        times: int = 1,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests with ``body`` (a mapping or list is JSON-encoded)."""
        data = body.encode() if isinstance(body, str) else body
        if not isinstance(data, bytes):
            data = json.dumps(data).encode()
        with self._lock:
            for _ in range(times):
                self._plans.append(Plan(status, dict(headers or {}), body=data))

    def posts(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- request handling (handler threads) --------------------------------------------------

    def _begin(self, record: Recorded) -> Plan | None:
        with self._lock:
            self.requests.append(record)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return self._plans.popleft() if self._plans else None

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def openai_reply(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "?"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.reply_text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            },
        }

    def gemini_reply(self, model: str, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": self.reply_text}]},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": PROMPT_TOKENS,
                "candidatesTokenCount": COMPLETION_TOKENS,
                "totalTokenCount": PROMPT_TOKENS + COMPLETION_TOKENS,
            },
            "modelVersion": model,
        }

    def converse_reply(self, model: str, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": self.reply_text}]}},
            "stopReason": "end_turn",
            "usage": {
                "inputTokens": PROMPT_TOKENS,
                "outputTokens": COMPLETION_TOKENS,
                "totalTokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            },
            "metrics": {"latencyMs": 5},
        }

    def signature_refusal(self, record: Recorded) -> str | None:
        """Why a Bedrock request is refused (unsigned, wrongly signed), or None."""
        creds = self.aws_credentials
        if creds is None:
            return None
        problem = signature_problem(
            method=record.method,
            raw_path=record.path,
            headers=record.headers,
            body=record.body,
            key_id=creds.key_id,
            secret=creds.secret,
            region=creds.region,
            service=creds.service,
        )
        if problem is not None:
            with self._lock:
                self.signature_problems.append(problem)
        return problem

    def anthropic_reply(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": request.get("model", "?"),
            "content": [{"type": "text", "text": self.reply_text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": COMPLETION_TOKENS},
        }


def _handler_for(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read ``server.requests`` instead."""

        def do_GET(self) -> None:
            self._serve(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self._serve(self.rfile.read(length))

        def _serve(self, body: bytes) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            record = Recorded(self.command, self.path, headers, body, time.monotonic())
            plan = server._begin(record)
            try:
                self._answer(plan, record)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test); nothing to tell it
            finally:
                server._end()

        def _answer(self, plan: Plan | None, record: Recorded) -> None:
            if plan is not None and plan.stall_s:
                time.sleep(plan.stall_s)
                plan = None
            converse = CONVERSE_ROUTE.match(self.path)
            if converse is not None:
                refusal = server.signature_refusal(record)
                if refusal is not None:
                    self._error(403, f"signature refused: {refusal}", {}, "InvalidSignature")
                    return
            if plan is not None and plan.body is not None:
                self._send_bytes(plan.status, plan.body, plan.headers)
                return
            if plan is not None:
                message = f"simulated failure {plan.status}"
                if plan.echo_credentials:
                    sent = []
                    if server.aws_credentials is not None and converse is not None:
                        # a server quoting the secret it checks signatures with
                        sent.append(server.aws_credentials.secret)
                    names = ("x-amz-security-token", "x-goog-api-key", "x-api-key", "authorization")
                    sent += [record.headers[name] for name in names if name in record.headers]
                    message += f"; you sent {' '.join(sent)}"
                self._error(plan.status, message, plan.headers)
                return
            if server.answer_delay_s:
                time.sleep(server.answer_delay_s)
            request = json.loads(record.body) if record.body else {}
            gemini = GEMINI_ROUTE.match(self.path)
            if self.command == "GET" and self.path.endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
            elif self.path.endswith("/chat/completions"):
                self._send(200, server.openai_reply(request))
            elif self.path.endswith("/messages"):
                self._send(200, server.anthropic_reply(request))
            elif gemini is not None:
                self._send(200, server.gemini_reply(unquote(gemini["model"]), request))
            elif converse is not None:
                self._send(200, server.converse_reply(unquote(converse["model"]), request))
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def _error(
            self, status: int, message: str, headers: dict[str, str], code: str | None = None
        ) -> None:
            """An error in the shape of the vendor whose route was asked for."""
            headers = dict(headers)
            payload: dict[str, Any]
            if CONVERSE_ROUTE.match(self.path):
                headers.setdefault(
                    "x-amzn-ErrorType", code or BEDROCK_ERRORS.get(status, "InternalServerException")
                )
                payload = {"message": message}
            elif GEMINI_ROUTE.match(self.path):
                name = GOOGLE_STATUS.get(status, "UNKNOWN")
                payload = {"error": {"code": status, "message": message, "status": name}}
            else:
                payload = {"type": "error", "error": {"type": "api_error", "message": message}}
            self._send(status, payload, headers)

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            self._send_bytes(status, json.dumps(payload).encode(), headers)

        def _send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None) -> None:
            headers = {"content-type": "application/json", **(headers or {})}
            self.send_response(status)
            self.send_header("content-length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
