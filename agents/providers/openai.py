"""The ``openai`` provider: OpenAI's chat completions API, or any server that speaks it.

With ``base_url`` it talks to any OpenAI-compatible server (vLLM, llama.cpp,
Ollama, Together, Groq). The key comes from the environment variable named by
``api_key_env`` (default ``OPENAI_API_KEY``); a server given by ``base_url``
may need none, and then a dummy is sent.

OpenAI's own API rejects ``max_tokens`` for reasoning models and wants
``max_completion_tokens``, while many compatible servers only know
``max_tokens``; the setting ``token_limit_param`` picks the field. Without it,
a model the capability table marks as needing the new field (o1, o3, o4,
gpt-5) gets it, and any other model gets the new one on api.openai.com and the
classic one everywhere else. The same table drops the temperature for those
models and folds system messages into the first user message for o1-mini and
o1-preview, which refuse both (``capabilities.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import openai

from itas.agents.providers.capabilities import (
    MAX_COMPLETION_TOKENS_PARAM,
    MAX_TOKENS_PARAM,
    FittedCall,
)
from itas.agents.providers.config import text
from itas.agents.providers.remote import HttpReply, RemoteProvider, token_count
from itas.agents.providers.retry import BadReply, Failure, sdk_failure
from itas.errors import ConfigError

TOKEN_LIMIT_PARAMS = (MAX_TOKENS_PARAM, MAX_COMPLETION_TOKENS_PARAM)
OPENAI_HOST = "api.openai.com"


class OpenAIProvider(RemoteProvider):
    name = "openai"
    priced_by_endpoint = True
    default_key_envs = ("OPENAI_API_KEY",)
    extra_keys = frozenset({"token_limit_param"})

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self._client = openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self._configured_base_url,
            max_retries=0,
            timeout=self.timeout_s,
        )
        self.base_url = str(self._client.base_url)
        self._host_token_limit_param = (
            MAX_COMPLETION_TOKENS_PARAM if OPENAI_HOST in self.base_url else MAX_TOKENS_PARAM
        )
        param = text(self.name, settings, "token_limit_param", None)
        if param is not None and param not in TOKEN_LIMIT_PARAMS:
            raise ConfigError(
                f"provider {self.name!r}: setting 'token_limit_param' must be one of "
                f"{', '.join(TOKEN_LIMIT_PARAMS)}, got {param!r}"
            )
        #: The field named in the settings, which wins over the table and the host default.
        self._token_limit_setting = param

    def token_limit_param(self, call: FittedCall) -> str:
        """The request field that carries ``max_tokens`` for this call."""
        return self._token_limit_setting or call.token_limit_param or self._host_token_limit_param

    _classify_sdk = functools.partial(
        sdk_failure,
        status_error=openai.APIStatusError,
        connection_error=openai.APIConnectionError,
        validation_error=openai.APIResponseValidationError,
        base_error=openai.OpenAIError,
    )

    def _classify(self, exc: BaseException) -> Failure | None:
        return OpenAIProvider._classify_sdk(exc)

    def _prepare(self, model: str, call: FittedCall) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in call.messages],
            self.token_limit_param(call): call.max_tokens,
        }
        if call.temperature is not None:
            request["temperature"] = call.temperature
        return request

    async def _send(self, request: dict[str, Any]) -> HttpReply:
        response = await self._client.chat.completions.create(**request)
        # The SDK builds replies without validating them, so a body of another shape
        # (or plain text) arrives here as an object missing fields, or as a string.
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise BadReply("no 'choices' in the reply")
        choice = choices[0]
        message = getattr(choice, "message", None)
        if message is None:
            raise BadReply("no 'choices[0].message' in the reply")
        content = message.content
        if content is not None and not isinstance(content, str):
            raise BadReply(f"'choices[0].message.content' is {type(content).__name__}, not text")
        usage = getattr(response, "usage", None)
        return HttpReply(
            text=content or "",
            prompt_tokens=token_count(getattr(usage, "prompt_tokens", None), "prompt_tokens"),
            completion_tokens=token_count(
                getattr(usage, "completion_tokens", None), "completion_tokens"
            ),
            finish_reason=getattr(choice, "finish_reason", None),
        )

    async def aclose(self) -> None:
        await self._client.close()
