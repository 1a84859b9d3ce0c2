"""Reading provider settings from a pool file's mapping, with errors that say where.

Pool files are written by hand, so a typo must not silently fall back to a
default: every provider declares the keys it knows and ``check_keys`` names the
unknown ones. Getters check type and range and name the provider and key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from itas.errors import ConfigError

#: Settings every provider accepts (the factory and the cache read them).
COMMON_KEYS = frozenset({"cache"})


def check_keys(provider: str, settings: Mapping[str, Any], known: Iterable[str]) -> None:
    """Reject keys the provider does not know, naming them and the known ones."""
    allowed = set(known) | COMMON_KEYS
    unknown = sorted(str(key) for key in settings if key not in allowed)
    if unknown:
        raise ConfigError(
            f"provider {provider!r}: unknown setting(s) {', '.join(map(repr, unknown))}; "
            f"known settings: {', '.join(sorted(allowed))}"
        )


def number(
    provider: str,
    settings: Mapping[str, Any],
    key: str,
    default: float,
    *,
    low: float = -math.inf,
    high: float = math.inf,
) -> float:
    """A finite number in [low, high]; bools are rejected (YAML `yes` is not 1)."""
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"provider {provider!r}: setting {key!r} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(
            f"provider {provider!r}: setting {key!r} must be in [{low}, {high}], got {value!r}"
        )
    return float(value)


def integer(
    provider: str,
    settings: Mapping[str, Any],
    key: str,
    default: int,
    *,
    low: int = 0,
    high: int = 2**31,
) -> int:
    """An int in [low, high]."""
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"provider {provider!r}: setting {key!r} must be an integer, got {value!r}"
        )
    if not low <= value <= high:
        raise ConfigError(
            f"provider {provider!r}: setting {key!r} must be in [{low}, {high}], got {value!r}"
        )
    return value


def text(provider: str, settings: Mapping[str, Any], key: str, default: str | None) -> str | None:
    """A non-empty string, or the default when the key is absent."""
    value = settings.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"provider {provider!r}: setting {key!r} must be a non-empty string, got {value!r}"
        )
    return value


def flag(provider: str, settings: Mapping[str, Any], key: str, default: bool | None) -> bool | None:
    """A real boolean (not the string "false", which is truthy)."""
    value = settings.get(key, default)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(
            f"provider {provider!r}: setting {key!r} must be true or false, got {value!r}"
        )
    return value
