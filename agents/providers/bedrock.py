"""The ``bedrock`` provider: AWS Bedrock's Converse API (``POST /model/{modelId}/converse``).

One API for every chat model Bedrock hosts (Meta Llama, Anthropic Claude,
Mistral, Amazon Nova, ...), through boto3's ``bedrock-runtime`` client
(``pip install 'itas[bedrock]'``) with botocore's own retries off, so the one
retry policy of ``retry.py`` applies. Model ids are Bedrock's
("meta.llama3-70b-instruct-v1:0", a cross-region profile such as
"us.anthropic.claude-3-5-sonnet-20240620-v1:0", or an ARN); the "bedrock/"
prefix of litellm-style names, which Archon's configs use, is dropped.

Credentials and region come only from the standard AWS chain of the agent's
machine (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``,
``AWS_PROFILE`` and ``~/.aws``, ``AWS_REGION``/``AWS_DEFAULT_REGION``, or a
Bedrock API key in ``AWS_BEARER_TOKEN_BEDROCK``), never from a pool file or a
spec, so the setting ``api_key_env`` is refused; ``region`` may name the region
for one agent that must differ from the machine's default. Requests are SigV4
signed: the secret key never travels. ``base_url`` is boto3's ``endpoint_url``
(a VPC endpoint, or a local server in tests).

boto3 is synchronous, so each attempt runs in a worker thread, at most
``max_concurrency`` at once. A cancelled call abandons its thread rather than
waiting for it; the thread ends on its own within the call's timeout (botocore's
connect and read timeouts are set from ``timeout_s``), and an attempt that
outlives ``timeout_s`` plus the connect timeout is treated as timed out, so a
slow-dripping server cannot hold a call for ever.

botocore's DEBUG records carry the session token (the signed request's
headers) and raw response bodies, so this provider keeps the ``botocore``
loggers at INFO or above: secrets stay out of logs even when an agent runs with
debug logging.

What can go wrong, and what it becomes: throttling (429), model timeouts (408),
5xx and connection errors are retried (Retry-After honoured); other 4xx
(ValidationException, AccessDeniedException, ...) fail at once; a reply without
``output``/``usage`` is retried as unreadable; a reply a guardrail or content
filter stopped is a ``ProviderError`` at once.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import anyio.to_thread
import boto3
import botocore.config
import botocore.exceptions

from itas.agents.providers.base import Message
from itas.agents.providers.capabilities import FittedCall, model_key
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
from itas.errors import ConfigError, ProviderError

SERVICE = "bedrock-runtime"
#: botocore reads a Bedrock API key from this variable (bearer auth instead of SigV4).
BEARER_TOKEN_ENV = "AWS_BEARER_TOKEN_BEDROCK"
REGION_ENV = "AWS_REGION"
LITELLM_PREFIX = "bedrock/"
CONVERSATION_ROLES = {"user": "user", "assistant": "assistant"}
MAX_CONNECT_TIMEOUT_S = 10.0
#: Below this botocore logs signed headers (session token) and bodies.
BOTOCORE_LOG_FLOOR = logging.INFO
#: Bedrock's version tail on model ids: "-v1:0", "-v2:0", "-v1".
MODEL_VERSION_SUFFIX = re.compile(r"-v\d+(:\d+)?$")
#: Stop reasons in the words the other providers use.
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
}
BLOCKED_STOPS = frozenset({"guardrail_intervened", "content_filtered"})
#: The model wrote something Bedrock could not parse; another attempt usually works.
MALFORMED_STOPS = frozenset({"malformed_model_output", "malformed_tool_use"})


def to_converse(messages: Sequence[Message]) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """Split ``messages`` into (system blocks, Converse messages of merged same-role turns)."""
    system, turns = split_conversation("bedrock", messages, CONVERSATION_ROLES)
    if not turns or turns[0][0] != "user":
        raise ProviderError(
            "bedrock", "the Converse API needs the conversation to start with a user message"
        )
    blocks = [{"text": text} for text in system if text.strip()]  # Converse refuses blank ones
    converse = [{"role": role, "content": [{"text": t} for t in texts]} for role, texts in turns]
    return blocks, converse


def _client_error_failure(exc: botocore.exceptions.ClientError) -> Failure:
    response: Mapping[str, Any] = exc.response or {}
    meta = response.get("ResponseMetadata") or {}
    error = response.get("Error") or {}
    status = int(meta.get("HTTPStatusCode") or 0)
    headers = {str(k).lower(): str(v) for k, v in (meta.get("HTTPHeaders") or {}).items()}
    code = error.get("Code") or "error"
    detail = f"{code}: {error.get('Message') or ''}".rstrip(": ")
    return Failure(
        retryable=status in RETRYABLE_STATUS or status >= 500,
        message=f"HTTP {status}: {detail}",
        status=status or None,
        retry_after_s=parse_retry_after(headers),
    )


class BedrockProvider(RemoteProvider):
    name = "bedrock"
    default_key_envs = ()
    extra_keys = frozenset({"region"})

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        region = text(self.name, settings, "region", None)
        self._session = boto3.session.Session(region_name=region)
        if self._session.region_name is None and os.environ.get(REGION_ENV):
            # botocore reads AWS_DEFAULT_REGION and ~/.aws/config; the other AWS SDKs and
            # Lambda set AWS_REGION.
            self._session = boto3.session.Session(region_name=os.environ[REGION_ENV])
        if self._session.region_name is None:
            raise ConfigError(
                f"provider {self.name!r}: no AWS region: set {REGION_ENV} (or AWS_DEFAULT_REGION, "
                "or region in ~/.aws/config) on the agent's machine, or the setting 'region'"
            )
        if self._session.get_credentials() is None and not os.environ.get(BEARER_TOKEN_ENV):
            raise ConfigError(
                f"provider {self.name!r}: no AWS credentials on the agent's machine: set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or "
                f"{BEARER_TOKEN_ENV} (credentials never come from pool files or specs)"
            )
        botocore_log = logging.getLogger("botocore")
        if botocore_log.level < BOTOCORE_LOG_FLOOR:
            botocore_log.setLevel(BOTOCORE_LOG_FLOOR)
        self.connect_timeout_s = min(self.timeout_s, MAX_CONNECT_TIMEOUT_S)
        config = botocore.config.Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=self.connect_timeout_s,
            read_timeout=self.timeout_s,
            max_pool_connections=self.max_concurrency,
            user_agent_extra="itas",
        )
        self._client = self._session.client(
            SERVICE, endpoint_url=self._configured_base_url, config=config
        )
        self.base_url = self._client.meta.endpoint_url
        self._threads = anyio.CapacityLimiter(self.max_concurrency)

    def _resolve_key(self, settings: Mapping[str, Any]) -> str:
        if "api_key_env" in settings:
            raise ConfigError(
                f"provider {self.name!r}: setting 'api_key_env' does not apply: Bedrock "
                "credentials come from the standard AWS environment and config of the "
                f"agent's machine (AWS_ACCESS_KEY_ID, AWS_PROFILE, ~/.aws, {BEARER_TOKEN_ENV})"
            )
        return ""

    def _price_model(self, model: str) -> str:
        """Claude on Bedrock bills at Anthropic's list prices: look it up by Anthropic's name."""
        key = model_key(self.name, model)
        vendor, _, rest = key.partition(".")
        if vendor == "anthropic":
            return MODEL_VERSION_SUFFIX.sub("", rest)
        return key

    def _secrets(self) -> tuple[str, ...]:
        secrets = [os.environ.get(BEARER_TOKEN_ENV, "")]
        credentials = self._session.get_credentials()
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            secrets += [frozen.secret_key or "", frozen.token or ""]
        return tuple(s for s in secrets if s)

    def _classify(self, exc: BaseException) -> Failure | None:
        if isinstance(exc, botocore.exceptions.ClientError):
            return _client_error_failure(exc)
        if isinstance(exc, botocore.exceptions.SSLError):
            return Failure(retryable=False, message=f"TLS error: {exc!s}")
        timed_out = (
            botocore.exceptions.ReadTimeoutError,
            botocore.exceptions.ConnectTimeoutError,
            TimeoutError,  # the attempt's own deadline
        )
        if isinstance(exc, timed_out):
            return Failure(retryable=True, message=f"timeout: {exc!s}")
        network = (botocore.exceptions.HTTPClientError, botocore.exceptions.ConnectionError)
        if isinstance(exc, network):
            return Failure(
                retryable=True, message=f"connection error: {exc!s}"
            )
        if isinstance(exc, botocore.exceptions.BotoCoreError):
            return Failure(
                retryable=False, message=f"{type(exc).__name__}: {exc!s}"
            )
        return None

    def _prepare(self, model: str, call: FittedCall) -> dict[str, Any]:
        system, turns = to_converse(call.messages)
        model_id = model.removeprefix(LITELLM_PREFIX)
        inference: dict[str, Any] = {"maxTokens": call.max_tokens}
        if call.temperature is not None:
            inference["temperature"] = call.temperature
        request: dict[str, Any] = {
            "modelId": model_id,
            "messages": turns,
            "inferenceConfig": inference,
        }
        if system:
            request["system"] = system
        return request

    async def _send(self, request: dict[str, Any]) -> HttpReply:
        converse = functools.partial(self._client.converse, **request)
        with anyio.fail_after(self.timeout_s + self.connect_timeout_s):
            response = await anyio.to_thread.run_sync(
                converse, limiter=self._threads, abandon_on_cancel=True
            )
        return self._read(response, request["modelId"])

    def _read(self, response: Mapping[str, Any], model: str) -> HttpReply:
        missing = [key for key in ("output", "stopReason", "usage") if key not in response]
        if missing:
            raise BadReply(f"no {', '.join(map(repr, missing))} in the reply")
        stop = str(response["stopReason"])
        if stop in BLOCKED_STOPS:
            raise ProviderError(self.name, f"{model} reply stopped by Bedrock ({stop})")
        if stop in MALFORMED_STOPS:
            raise BadReply(f"stopReason {stop}")
        message = (response["output"] or {}).get("message")
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            raise BadReply("no 'output.message.content' list in the reply")
        usage = response["usage"]
        return HttpReply(
            text="".join(str(block["text"]) for block in content if "text" in block),
            prompt_tokens=token_count(usage.get("inputTokens"), "inputTokens"),
            completion_tokens=token_count(usage.get("outputTokens"), "outputTokens"),
            finish_reason=STOP_REASONS.get(stop, stop),
        )

    async def aclose(self) -> None:
        self._client.close()
