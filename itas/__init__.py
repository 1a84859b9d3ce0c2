"""itas: inference-time architectures over LLMs as a mesh of ZeroMQ agents.

The public surface is what ``__all__`` lists; everything else is an
implementation module that may change.
"""

from itas.client import AsyncClient, Client, Reply
from itas.errors import (
    AgentError,
    AuthenticationError,
    BrokerUnreachable,
    ClientError,
    ConfigError,
    ItasError,
    ProtocolError,
    ProviderError,
    RemoteError,
    RequestTimeout,
    ServiceUnavailable,
)
from itas.protocol import PROTOCOL_VERSION

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "AgentError",
    "AsyncClient",
    "AuthenticationError",
    "BrokerUnreachable",
    "Client",
    "ClientError",
    "ConfigError",
    "ItasError",
    "ProtocolError",
    "ProviderError",
    "RemoteError",
    "Reply",
    "RequestTimeout",
    "ServiceUnavailable",
    "__version__",
]
