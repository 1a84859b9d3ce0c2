"""Checks for values users type: endpoints, ports, numeric ranges, files, secrets.

The CLI runs them on every option before a verb starts anything (a socket, a
process), so a typo fails at once with one line instead of a traceback, a hang
in ``Context.term()`` or a broker bound to a random port. Each check returns the
value or raises ConfigError with a message that does not name the option: the
caller knows the option and adds it (the CLI through click's "Invalid value for
'--x'").

Endpoints are the ZeroMQ forms itas uses across processes: ``tcp://HOST:PORT``
(a name, IPv4, ``[IPv6]``; for binding also ``*`` for every interface and port
0 for a free one) and ``ipc://PATH``. ``inproc://`` is refused: it cannot reach
another process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from itas.errors import ConfigError

PORT_MAX = 65535
_TCP = re.compile(r"tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.*-]+):(?P<port>[0-9]+)")
# Setting names that hold credentials: never on a command line, never in a log.
_SECRET_NAME = re.compile(r"(api[_-]?key|secret|token|password|passwd|credential)", re.IGNORECASE)
# ...but a name of an environment variable holding one is fine (``api_key_env``).
_SECRET_REFERENCE = re.compile(r"_env$", re.IGNORECASE)


def endpoint(value: str, *, bind: bool) -> str:
    """A ZeroMQ endpoint this process binds (``bind=True``) or connects to."""
    transport, sep, rest = value.partition("://")
    if not sep or transport not in ("tcp", "ipc"):
        raise ConfigError(f"{value!r} is not an endpoint: expected tcp://HOST:PORT or "
                          "ipc://PATH")
    if transport == "ipc":
        if not rest:
            raise ConfigError(f"{value!r}: ipc:// needs a path")
        parent = Path(rest).parent
        if bind and not rest.startswith("@") and not parent.is_dir():
            raise ConfigError(f"{value!r}: directory {str(parent)!r} does not exist")
        return value
    match = _TCP.fullmatch(value)
    if match is None:
        raise ConfigError(f"{value!r}: expected tcp://HOST:PORT")
    if match["host"] == "*" and not bind:
        raise ConfigError(f"{value!r}: '*' (every interface) is only for binding")
    port(int(match["port"]), allow_zero=bind)
    return value


def port(value: int, *, allow_zero: bool) -> int:
    low = 0 if allow_zero else 1
    if not low <= value <= PORT_MAX:
        raise ConfigError(f"port {value} is out of range {low}..{PORT_MAX}"
                          + (" (0 picks a free port)" if allow_zero else ""))
    return value


def at_least(value: int, low: int) -> int:
    if value < low:
        raise ConfigError(f"must be an integer >= {low}, got {value}")
    return value


def positive(value: float) -> float:
    """A finite number above 0 (``nan`` and ``inf`` parse as floats, and are neither)."""
    if not 0 < value < float("inf"):
        raise ConfigError(f"must be a finite number > 0, got {value}")
    return value


def one_of(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{value!r} is not one of {', '.join(choices)}")
    return value


def existing_file(path: Path) -> Path:
    if not path.is_file():
        raise ConfigError(f"{str(path)!r}: no such file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{str(path)!r}: not readable")
    return path


def existing_dir(path: Path) -> Path:
    if not path.is_dir():
        raise ConfigError(f"{str(path)!r}: no such directory")
    return path


def secret_names(settings: Any, where: str = "") -> list[str]:
    """Dotted names of settings (nested too) that look like credentials."""
    found: list[str] = []
    if isinstance(settings, Mapping):
        for key, value in settings.items():
            name = f"{where}.{key}" if where else str(key)
            if _SECRET_NAME.search(str(key)) and not _SECRET_REFERENCE.search(str(key)):
                found.append(name)
            found += secret_names(value, name)
    elif isinstance(settings, list):
        for i, value in enumerate(settings):
            found += secret_names(value, f"{where}[{i}]")
    return found


def redacted(settings: Any) -> Any:
    """A copy safe to log: values of credential-like settings replaced by ``***``."""
    if isinstance(settings, Mapping):
        return {key: "***" if _SECRET_NAME.search(str(key))
                and not _SECRET_REFERENCE.search(str(key)) else redacted(value)
                for key, value in settings.items()}
    if isinstance(settings, list):
        return [redacted(value) for value in settings]
    return settings
