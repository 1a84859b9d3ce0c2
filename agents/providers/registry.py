"""Building a provider from a pool file's settings: ``make_provider(name, settings)``.

Providers are named by "module:class" strings and imported on demand, so an
agent that uses the simulated models never imports the vendor SDKs. The Gemini
and Bedrock SDKs are optional extras; asking for their provider without them is
a ConfigError that names the extra to install. The
factory also decides on the response cache: on for real providers (calls cost
money and time), off for ``sim`` (deterministic and free), with the setting
``cache`` overriding that and ``ITAS_CACHE=off`` overriding everything.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any

from itas.agents.providers.base import Provider
from itas.agents.providers.config import flag
from itas.errors import ConfigError

PROVIDERS: dict[str, str] = {
    "openai": "itas.agents.providers.openai:OpenAIProvider",
    "anthropic": "itas.agents.providers.anthropic:AnthropicProvider",
    "gemini": "itas.agents.providers.gemini:GeminiProvider",
    "bedrock": "itas.agents.providers.bedrock:BedrockProvider",
    "local": "itas.agents.providers.local:LocalProvider",
    "sim": "itas.agents.providers.sim:SimProvider",
}
CACHED_BY_DEFAULT = frozenset({"openai", "anthropic", "gemini", "bedrock", "local"})
#: The pip extra that brings a provider's SDK, for providers whose SDK is optional.
SDK_EXTRAS = {"gemini": ("google.genai", "gemini"), "bedrock": ("boto3", "bedrock")}


def make_provider(name: str, settings: Mapping[str, Any] | None = None) -> Provider:
    """The provider ``name`` configured by ``settings``; ConfigError names what is wrong."""
    settings = {} if settings is None else settings
    if not isinstance(settings, Mapping):
        raise ConfigError(
            f"provider {name!r}: settings must be a mapping, got {type(settings).__name__}"
        )
    target = PROVIDERS.get(name)
    if target is None:
        raise ConfigError(
            f"unknown provider {name!r}; known providers: {', '.join(sorted(PROVIDERS))}"
        )
    module_name, _, class_name = target.partition(":")
    sdk, extra = SDK_EXTRAS.get(name, (None, None))
    if sdk is not None and importlib.util.find_spec(sdk.partition(".")[0]) is None:
        raise ConfigError(
            f"provider {name!r} needs its SDK ({sdk}), which is not installed: "
            f"pip install 'itas[{extra}]'"
        )
    provider_class = getattr(importlib.import_module(module_name), class_name)
    use_cache = flag(name, settings, "cache", None)
    provider: Provider = provider_class(settings)
    if use_cache is None:
        use_cache = name in CACHED_BY_DEFAULT
    from itas.agents.providers.cache import CachingProvider, ResponseCache, cache_enabled_by_env

    if use_cache and cache_enabled_by_env():
        return CachingProvider(provider, ResponseCache())
    return provider
