"""The ``openai`` provider: OpenAI's chat completions API, or any server that speaks it.

With ``base_url`` it talks to any OpenAI-compatible server (vLLM, llama.cpp,
Ollama, Together, Groq). The key comes from the environment variable named by
``api_key_env`` (default ``OPENAI_API_KEY``); a server given by ``base_url``
may need none, and then a dummy is sent.

OpenAI's own API rejects ``max_tokens`` for reasoning models and wants
``max_completion_tokens``, while many compatible servers only know
``max_tokens``; ``token_limit_param`` picks the field, by default the new one
for api.openai.com and the classic one for everything else.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import openai

from itas.agents.providers.base import Message
from itas.agents.providers.config import text
from itas.agents.providers.remote import HttpReply, RemoteProvider
from itas.agents.providers.retry import Failure, sdk_failure
from itas.errors import ConfigError, ProviderError

TOKEN_LIMIT_PARAMS = ("max_tokens", "max_completion_tokens")
OPENAI_HOST = "api.openai.com"


class OpenAIProvider(RemoteProvider):
    name = "openai"
    default_key_env = "OPENAI_API_KEY"
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
        default_param = (
            TOKEN_LIMIT_PARAMS[1] if OPENAI_HOST in self.base_url else TOKEN_LIMIT_PARAMS[0]
        )
        param = text(self.name, settings, "token_limit_param", default_param)
        if param not in TOKEN_LIMIT_PARAMS:
            raise ConfigError(
                f"provider {self.name!r}: setting 'token_limit_param' must be one of "
                f"{', '.join(TOKEN_LIMIT_PARAMS)}, got {param!r}"
            )
        self._token_limit_param = param

    _classify_sdk = functools.partial(
        sdk_failure,
        status_error=openai.APIStatusError,
        connection_error=openai.APIConnectionError,
        base_error=openai.OpenAIError,
    )

    def _classify(self, exc: BaseException) -> Failure | None:
        return OpenAIProvider._classify_sdk(exc)

    async def _request(
        self, messages: Sequence[Message], model: str, temperature: float, max_tokens: int
    ) -> HttpReply:
        request: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "temperature": temperature,
            self._token_limit_param: max_tokens,
        }
        response = await self._client.chat.completions.create(**request)
        if not response.choices:
            raise ProviderError(self.name, f"reply from {self.base_url} has no choices")
        choice = response.choices[0]
        usage = response.usage
        return HttpReply(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason,
        )

    async def aclose(self) -> None:
        await self._client.close()
