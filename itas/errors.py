"""The one exception tree of itas.

    ItasError
    ├── ConfigError            bad settings, pool, architecture or search file (names file and field)
    ├── ProtocolError          a frame that does not follow the wire protocol
    ├── AgentError             raised by an agent's handler; becomes an ERROR reply with its code
    │   └── ProviderError      an LLM provider failed after its retries
    └── ClientError            what a caller of Client/AsyncClient can see
        ├── ServiceUnavailable no worker served the service before the deadline
        ├── RequestTimeout     no reply before the caller's deadline
        ├── BrokerUnreachable  the client is closed or could not reach a broker
        ├── AuthenticationError the broker refused this CURVE key, or its role forbids the call
        └── RemoteError        an agent (or the broker) answered with an error reply

Lower-level errors (zmq, msgpack, yaml) are translated at one boundary each and
chained with ``raise ... from``, so the original stays visible in tracebacks.
"""

from __future__ import annotations

from collections.abc import Iterator


class ItasError(Exception):
    """Root of every error itas raises on purpose."""


class ConfigError(ItasError):
    """A configuration file or value is wrong; the message names where."""


class ProtocolError(ItasError):
    """A message that does not follow the wire protocol."""


class AgentError(ItasError):
    """Raised inside an agent handler; the runtime turns it into an ERROR reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ProviderError(AgentError):
    """An LLM provider call failed for good (after retries, or not retryable)."""

    def __init__(self, provider: str, message: str, status: int | None = None) -> None:
        super().__init__("provider_error", f"{provider}: {message}")
        self.provider = provider
        self.status = status


class ClientError(ItasError):
    """Raised to users of the client library."""


class ServiceUnavailable(ClientError):
    """No worker served the requested service before the request's deadline."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service


class RequestTimeout(ClientError):
    """The caller's deadline passed without a reply."""


class BrokerUnreachable(ClientError):
    """The client is closed or its broker cannot be reached."""


class AuthenticationError(ClientError):
    """The broker refused this peer's CURVE key (not in its allow directory), or the key's
    role (the broker's roles file) does not allow serving or calling that service."""


class RemoteError(ClientError):
    """An error reply: ``code`` is a machine-readable reason, ``message`` says what happened."""

    def __init__(self, code: str, message: str, service: str | None = None) -> None:
        where = f" from {service!r}" if service else ""
        super().__init__(f"{code}{where}: {message}")
        self.code = code
        self.message = message
        self.service = service


def leaf_exceptions(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups, which anyio task groups raise;
    callers pick the itas error worth showing instead of a tree of tracebacks."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaf_exceptions(inner)
    else:
        yield exc
