"""Where benchmark files live, reading them with errors that name file and line, and fetching
them from their public source.

Data directory, first found wins: the ``data_dir`` argument, the environment
variable ``ITAS_DATA_DIR``, then ``../shared/data`` relative to the current
directory (the layout of the project's checkout; a fallback, not a promise).
Files keep their standard names inside it, e.g. ``gsm8k/test.jsonl``.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from itas.errors import ConfigError

DATA_DIR_ENV = "ITAS_DATA_DIR"
FALLBACK_DATA_DIR = Path("..") / "shared" / "data"
DOWNLOAD_TIMEOUT_S = 60.0
DOWNLOAD_CHUNK = 1 << 16
USER_AGENT = "itas-benchmarks"


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    return Path.cwd() / FALLBACK_DATA_DIR


def _open_text(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line; ConfigError names file and line."""
    try:
        with _open_text(path) as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as e:
                    raise ConfigError(f"{path}:{number}: not valid JSON: {e}") from e
                if not isinstance(record, dict):
                    raise ConfigError(f"{path}:{number}: expected a JSON object per line")
                yield number, record
    except (OSError, EOFError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e


def read_json(path: Path) -> Any:
    try:
        with _open_text(path) as f:
            return json.load(f)
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from e
    except (OSError, EOFError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e


def field(
    record: dict[str, Any], name: str, where: str, kind: type | tuple[type, ...] = str
) -> Any:
    """``record[name]`` checked for presence and type; ``where`` is "file:line"."""
    if name not in record:
        raise ConfigError(f"{where}: missing field {name!r}")
    value = record[name]
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(
            f"{where}: field {name!r} should be {expected}, got {type(value).__name__}"
        )
    return value


def download(url: str, dest: Path, *, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Fetch ``url`` to ``dest`` (atomically: a partial download never looks complete).

    Raises ConfigError naming the URL and the destination when offline or refused.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    fd, partial = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(request, timeout=timeout_s) as response,
        ):
            while chunk := response.read(DOWNLOAD_CHUNK):
                out.write(chunk)
        os.replace(partial, dest)
    except (urllib.error.URLError, OSError, ValueError) as e:
        Path(partial).unlink(missing_ok=True)
        if isinstance(e, urllib.error.HTTPError):
            reason: object = f"HTTP {e.code} {e.reason}"
        else:
            reason = getattr(e, "reason", None) or e
        raise ConfigError(
            f"could not download {url} to {dest}: {reason} "
            f"(offline? put the file there by hand or set {DATA_DIR_ENV})"
        ) from e
    return dest
