"""The ``anthropic`` provider: Anthropic's Messages API.

The Messages API takes the system prompt as a separate field and wants the
conversation to alternate user/assistant. Techniques write OpenAI-style
message lists, so ``to_messages_api`` moves every system message into
``system`` (joined by blank lines, in order) and merges consecutive messages of
the same role. The key comes from ``api_key_env`` (default
``ANTHROPIC_API_KEY``) and travels only in the SDK's auth header
(``Authorization: Bearer`` in SDK 2.x, ``x-api-key`` before).
The capability table clamps temperatures above 1 (valid for OpenAI, up to 2) to
1, the Messages API maximum, so one architecture can run on either vendor, and
clamps ``max_tokens`` to each model's output cap (Archon asks for 200000).

Anthropic deprecated sampling parameters for its newer models (they reject any
temperature but the default 1.0), and the SDK (1.x and later) no longer takes
``temperature`` as an argument. It therefore goes in the request body, only
when it differs from the default, and ``send_temperature: false`` leaves it out
for models that refuse it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import anthropic

from itas.agents.providers.base import Message
from itas.agents.providers.capabilities import FittedCall
from itas.agents.providers.config import flag
from itas.agents.providers.remote import (
    HttpReply,
    RemoteProvider,
    split_conversation,
    token_count,
)
from itas.agents.providers.retry import BadReply, Failure, sdk_failure
from itas.errors import ProviderError

CONVERSATION_ROLES = {"user": "user", "assistant": "assistant"}
API_DEFAULT_TEMPERATURE = 1.0


def to_messages_api(messages: Sequence[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """Split ``messages`` into (system text or None, alternating user/assistant turns)."""
    system, turns = split_conversation("anthropic", messages, CONVERSATION_ROLES)
    if not turns:
        raise ProviderError("anthropic", "the Messages API needs at least one user message")
    merged = [{"role": role, "content": "\n\n".join(texts)} for role, texts in turns]
    return ("\n\n".join(system) if system else None), merged


class AnthropicProvider(RemoteProvider):
    name = "anthropic"
    default_key_envs = ("ANTHROPIC_API_KEY",)
    extra_keys = frozenset({"send_temperature"})

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._send_temperature = flag(self.name, settings, "send_temperature", True)
        self._client = anthropic.AsyncAnthropic(
            api_key=self._api_key,
            base_url=self._configured_base_url,
            max_retries=0,
            timeout=self.timeout_s,
            open_telemetry=False,
        )
        self.base_url = str(self._client.base_url)

    _classify_sdk = functools.partial(
        sdk_failure,
        status_error=anthropic.APIStatusError,
        connection_error=anthropic.APIConnectionError,
        validation_error=anthropic.APIResponseValidationError,
        base_error=anthropic.AnthropicError,
    )

    def _classify(self, exc: BaseException) -> Failure | None:
        return AnthropicProvider._classify_sdk(exc)

    def _prepare(self, model: str, call: FittedCall) -> dict[str, Any]:
        system, turns = to_messages_api(call.messages)
        request: dict[str, Any] = {"model": model, "max_tokens": call.max_tokens, "messages": turns}
        if system is not None:
            request["system"] = system
        temperature = call.temperature
        if self._send_temperature and temperature not in (None, API_DEFAULT_TEMPERATURE):
            request["extra_body"] = {"temperature": temperature}
        return request

    async def _send(self, request: dict[str, Any]) -> HttpReply:
        response = await self._client.messages.create(**request)
        # Replies are built without validation: check what we read.
        content = getattr(response, "content", None)
        if not isinstance(content, list):
            raise BadReply("no 'content' list in the reply")
        usage = getattr(response, "usage", None)
        if usage is None:
            raise BadReply("no 'usage' in the reply")
        prompt = sum(
            token_count(getattr(usage, name, None), name)
            for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        texts = [getattr(block, "text", None) for block in content if block.type == "text"]
        if not all(isinstance(t, str) for t in texts):
            raise BadReply("a text block of the reply has no text")
        return HttpReply(
            text="".join(t for t in texts if isinstance(t, str)),
            prompt_tokens=prompt,
            completion_tokens=token_count(getattr(usage, "output_tokens", None), "output_tokens"),
            finish_reason=getattr(response, "stop_reason", None),
        )

    async def aclose(self) -> None:
        await self._client.close()
