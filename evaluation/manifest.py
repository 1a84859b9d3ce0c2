"""Fingerprints of what a run measured, so reusing its output folder never mixes runs.

An ``itas eval`` output folder and a search's trial store each keep the fingerprint of
the run that wrote them: the benchmark (name, and a user-defined benchmark's
definition), the split and seed, the digest of the very questions (their text, answers,
tests and keys; see ``Question`` and ``questions_digest``), the architectures, which
tests selection saw, the judge. Resuming or reusing the folder compares the fingerprint
field by field and refuses on any difference with one message naming each field that
changed, old and new value, so a held-out score can never be paired with a choice made
on other questions, and a results file never holds two benchmarks.

The fingerprint is a flat JSON mapping; nested values compare as wholes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from itas.errors import ConfigError

SHOWN_CHARS = 60


def _shown(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def differences(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """One ``field: old -> new`` line per field that differs (missing counts as null);
    lists of names (architectures) say what was added and removed instead."""
    lines = []
    for name in sorted(set(before) | set(now)):
        old, new = before.get(name), now.get(name)
        if old == new:
            continue
        if isinstance(old, list) and isinstance(new, list):
            added = [x for x in new if x not in old]
            removed = [x for x in old if x not in new]
            parts = [f"+{_shown(x)}" for x in added] + [f"-{_shown(x)}" for x in removed]
            lines.append(f"{name}: {', '.join(parts) or 'reordered'}")
        else:
            lines.append(f"{name}: {_shown(old)} -> {_shown(new)}")
    return lines


def refuse_if_different(where: str, before: Mapping[str, Any], now: Mapping[str, Any],
                        advice: str) -> None:
    """ConfigError naming every difference between the stored and the current fingerprint."""
    changed = differences(before, now)
    if changed:
        raise ConfigError(f"{where}: written by a different run ({'; '.join(changed)}); "
                          f"{advice}")


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The fingerprint stored at ``path``; None when there is none. ConfigError when the
    file is unreadable (a torn write is not silently replaced)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable run fingerprint ({e}); delete the folder "
                          "or choose another one") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a run fingerprint (expected a JSON object)")
    return data


def write_manifest(path: Path, fingerprint: Mapping[str, Any]) -> None:
    """Written through a temporary file, so a kill never leaves half a fingerprint."""
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(dict(fingerprint), indent=2, sort_keys=True) + "\n",
                       encoding="utf-8")
    partial.replace(path)
