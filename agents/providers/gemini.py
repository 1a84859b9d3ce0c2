"""The ``gemini`` provider: Google's Gemini API (``models/{model}:generateContent``).

It uses the official ``google-genai`` SDK (``pip install 'itas[gemini]'``) with
the SDK's own retries off, so the one retry policy of ``retry.py`` applies. The
key comes from the environment variable named by ``api_key_env``, else
``GOOGLE_API_KEY`` or ``GEMINI_API_KEY`` (the SDK's order), and travels only in
the ``x-goog-api-key`` header. ``base_url`` points the client at another server
speaking the same REST API (tests, a proxy); ``api_version`` picks the API
version the SDK puts in the path (the SDK's default when unset). The client is
always the Gemini API one, never Vertex AI, whatever ``GOOGLE_GENAI_USE_VERTEXAI``
says, since Vertex needs project credentials this provider does not handle.

Messages map onto Gemini's contents: system messages become the
``systemInstruction`` (joined by blank lines), assistant turns are the "model"
role, and consecutive turns of one role are merged into one content with several
parts, since some models insist on alternating turns.

What can go wrong, and what it becomes:
- HTTP 408/429/5xx, timeouts, connection errors: retried (Retry-After, or the
  ``RetryInfo.retryDelay`` of a Google error body, is honoured).
- A body that is not JSON, or a reply with neither candidates nor a block
  reason: retried as unreadable, then a ``ProviderError``.
- A prompt blocked by safety filters (``promptFeedback.blockReason``) or a reply
  stopped by them (finish reason SAFETY, RECITATION, BLOCKLIST, ...): a
  ``ProviderError`` at once, naming the reason; asking again would be blocked
  again.

Usage is read from ``usageMetadata``: prompt tokens, and as completion tokens
the candidates' plus the thinking tokens (both are billed as output). Finish
reasons are reported in OpenAI's words ("stop", "length", "content_filter"),
others lower-cased.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from itas.agents.providers.base import Message
from itas.agents.providers.capabilities import FittedCall
from itas.agents.providers.config import text
from itas.agents.providers.remote import (
    HttpReply,
    RemoteProvider,
    split_conversation,
    token_count,
)
from itas.agents.providers.retry import (
    RETRYABLE_STATUS,
    BadReply,
    Failure,
    parse_retry_after,
)
from itas.errors import ProviderError

GEMINI_PUBLIC_URL = "https://generativelanguage.googleapis.com/"
#: The SDK reads this when no base URL is given; so does our cache key.
GEMINI_BASE_URL_ENV = "GOOGLE_GEMINI_BASE_URL"
ROLE_NAMES = {"user": "user", "assistant": "model"}
#: Finish reasons in the words the other providers use.
FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length"}
#: Finish reasons that mean a filter stopped the reply: no usable answer.
BLOCKED_FINISH = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "LANGUAGE",
    }
)
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)s\s*$")
MS_PER_S = 1000


def to_gemini_contents(messages: Sequence[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """Split ``messages`` into (system instruction or None, Gemini contents)."""
    system, turns = split_conversation("gemini", messages, ROLE_NAMES)
    if not any(role == "user" for role, _ in turns):
        raise ProviderError("gemini", "the Gemini API needs at least one user message")
    contents = [{"role": role, "parts": [{"text": t} for t in texts]} for role, texts in turns]
    return ("\n\n".join(system) if system else None), contents


def _enum_name(value: object) -> str | None:
    """The wire name of an SDK enum (or a plain string the SDK left as is)."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _retry_delay(details: object) -> float | None:
    """Seconds from a Google error body's ``RetryInfo.retryDelay`` ("31s"), if any."""
    error = details.get("error", details) if isinstance(details, dict) else None
    entries = error.get("details") if isinstance(error, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and entry.get("@type") == RETRY_INFO_TYPE:
            match = DURATION.match(str(entry.get("retryDelay", "")))
            if match:
                return float(match[1])
    return None


def _transport_failure(exc: BaseException) -> Failure | None:
    """Timeouts and network errors of whichever HTTP library the SDK runs on."""
    bases: list[type[BaseException]] = [TimeoutError, ConnectionError]
    for name, attrs in (
        ("httpx2", ("TransportError", "DecodingError")),
        ("httpx", ("TransportError", "DecodingError")),
        ("aiohttp", ("ClientError",)),
    ):
        module = sys.modules.get(name)
        bases += [getattr(module, attr) for attr in attrs if hasattr(module, attr)]
    if not isinstance(exc, tuple(bases)):
        return None
    kind = "timeout" if "timeout" in type(exc).__name__.lower() else "connection error"
    detail = str(exc) or type(exc).__name__
    return Failure(retryable=True, message=f"{kind}: {detail}")


class GeminiProvider(RemoteProvider):
    name = "gemini"
    default_key_envs = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
    extra_keys = frozenset({"api_version"})

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        options = genai_types.HttpOptions(
            base_url=self._configured_base_url,
            api_version=text(self.name, settings, "api_version", None),
            timeout=max(1, round(self.timeout_s * MS_PER_S)),
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        )
        self._client = genai.Client(api_key=self._api_key, vertexai=False, http_options=options)
        self.base_url = (
            self._configured_base_url or os.environ.get(GEMINI_BASE_URL_ENV) or GEMINI_PUBLIC_URL
        )

    def _price_model(self, model: str) -> str:
        return model.removeprefix("models/")

    def _classify(self, exc: BaseException) -> Failure | None:
        if isinstance(exc, genai_errors.APIError):
            status = int(exc.code or 0)
            response = getattr(exc, "response", None)
            headers = {k.lower(): v for k, v in getattr(response, "headers", {}).items()}
            delay = parse_retry_after(headers)
            if delay is None:
                delay = _retry_delay(exc.details)
            detail = str(exc.message or exc.status or exc)
            return Failure(
                retryable=status in RETRYABLE_STATUS or status >= 500,
                message=f"HTTP {status}: {detail}",
                status=status,
                retry_after_s=delay,
            )
        return _transport_failure(exc)

    def _prepare(self, model: str, call: FittedCall) -> dict[str, Any]:
        system, contents = to_gemini_contents(call.messages)
        config: dict[str, Any] = {"candidate_count": 1, "max_output_tokens": call.max_tokens}
        if call.temperature is not None:
            config["temperature"] = call.temperature
        if system is not None:
            config["system_instruction"] = system
        return {"model": model, "contents": contents, "config": config}

    async def _send(self, request: dict[str, Any]) -> HttpReply:
        response = await self._client.aio.models.generate_content(**request)
        return self._read(response, request["model"])

    def _read(self, response: genai_types.GenerateContentResponse, model: str) -> HttpReply:
        candidates = response.candidates or []
        if not candidates:
            feedback = response.prompt_feedback
            reason = _enum_name(feedback.block_reason) if feedback is not None else None
            if reason is not None:
                message = getattr(feedback, "block_reason_message", None) or ""
                raise ProviderError(
                    self.name,
                    f"{model} refused the prompt: blocked by Gemini's safety filters "
                    f"(blockReason {reason}){': ' + message if message else ''}",
                )
            raise BadReply("no candidates in the reply")
        candidate = candidates[0]
        finish = _enum_name(candidate.finish_reason)
        if finish in BLOCKED_FINISH:
            flagged = [
                _enum_name(rating.category)
                for rating in candidate.safety_ratings or []
                if rating.blocked or _enum_name(rating.probability) in ("HIGH", "MEDIUM")
            ]
            raise ProviderError(
                self.name,
                f"{model} reply stopped by Gemini's filters (finishReason {finish})"
                + (f"; flagged: {', '.join(str(f) for f in flagged)}" if flagged else ""),
            )
        content = candidate.content
        if content is None and finish is None:
            raise BadReply("candidate 0 has neither content nor a finishReason")
        parts = (content.parts if content is not None else None) or []
        texts = [part.text for part in parts if part.text and not part.thought]
        usage = response.usage_metadata
        prompt = completion = 0
        if usage is not None:
            prompt = token_count(usage.prompt_token_count, "promptTokenCount")
            completion = token_count(usage.candidates_token_count, "candidatesTokenCount")
            completion += token_count(usage.thoughts_token_count, "thoughtsTokenCount")
        return HttpReply(
            text="".join(texts),
            prompt_tokens=prompt,
            completion_tokens=completion,
            finish_reason=None if finish is None else FINISH_REASONS.get(finish, finish.lower()),
        )

    async def aclose(self) -> None:
        # The SDK keeps a sync and an async HTTP client; each has its own close.
        try:
            await self._client.aio.aclose()
        finally:
            self._client.close()
