"""LLM providers: ``openai`` (and every OpenAI-compatible server), ``anthropic``,
``local`` (the embedded SmolLM2 server) and ``sim`` (simulated models).

Build one with ``make_provider(name, settings)``; each module's docstring says
what its settings mean. Importing this package imports no vendor SDK.
"""

from itas.agents.providers.base import Completion, Message, Provider, SimTask, Usage
from itas.agents.providers.registry import PROVIDERS, make_provider

__all__ = ["PROVIDERS", "Completion", "Message", "Provider", "SimTask", "Usage", "make_provider"]
