"""A local HTTP server that speaks the OpenAI chat completions and Anthropic Messages APIs.

Provider tests run the real SDK clients over real HTTP against it. It answers
``POST /v1/chat/completions`` (OpenAI shape), ``POST /v1/messages`` (Anthropic
shape) and ``GET /v1/models``, records every request (path, headers, body,
arrival time), counts requests in flight, and can be told to fail the next N
requests with a status (plus headers such as Retry-After), to stall before
answering (client timeouts) or to echo the caller's credentials in an error
body (to prove providers redact them).

It is stdlib ``http.server`` in a daemon thread, bound to 127.0.0.1 port 0.
Handler threads never raise: a client that hung up mid-reply is ignored.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7
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


class FakeLLMServer:
    def __init__(self, reply_text: str = "fake reply", answer_delay_s: float = 0.0) -> None:
        self.reply_text = reply_text
        self.answer_delay_s = answer_delay_s
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
            plan = server._begin(Recorded(self.command, self.path, headers, body, time.monotonic()))
            try:
                self._answer(plan, headers, body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test); nothing to tell it
            finally:
                server._end()

        def _answer(self, plan: Plan | None, headers: dict[str, str], body: bytes) -> None:
            if plan is not None and plan.stall_s:
                time.sleep(plan.stall_s)
                plan = None
            if plan is not None:
                message = f"simulated failure {plan.status}"
                if plan.echo_credentials:
                    message += (
                        f"; you sent {headers.get('authorization')} {headers.get('x-api-key')}"
                    )
                payload = {"type": "error", "error": {"type": "api_error", "message": message}}
                self._send(plan.status, payload, plan.headers)
                return
            if server.answer_delay_s:
                time.sleep(server.answer_delay_s)
            request = json.loads(body) if body else {}
            if self.command == "GET" and self.path.endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
            elif self.path.endswith("/chat/completions"):
                self._send(200, server.openai_reply(request))
            elif self.path.endswith("/messages"):
                self._send(200, server.anthropic_reply(request))
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
