"""An on-disk response cache, shared by every agent process on a machine.

Searches and benchmark reruns send the same calls again and again; replaying
them from disk saves money and time and makes reruns reproducible. The key is a
hash of everything that shapes a reply (provider, model, base URL, messages,
temperature, max_tokens, sample index): change any of them and it is a
different call. ``sample_index`` is in the key so that the n samples of one
call stay n different replies.

SQLite in WAL mode with a busy timeout lets many processes read and write the
same file at once; a write is one INSERT OR REPLACE, so a crash never leaves a
half entry. Calls run in a worker thread (``anyio.to_thread``), one at a time
per cache, so the event loop never blocks on disk.

On by default at ``~/.cache/itas/responses.sqlite`` (``ITAS_CACHE_DIR`` moves
it); ``ITAS_CACHE=off`` or the provider setting ``cache: false`` turns it off.
``ITAS_CACHE_MAX_MB`` caps it: after a write that takes it over the cap, the oldest replies
are dropped until it fits. ``itas cache stats`` and ``itas cache clear`` show and empty it.
The cache holds prompts and replies, so its directory is created readable by
its owner only. A reply keeps its ``adjustments`` (what its call was changed to
fit the model), so a replayed reply says what the original said. Errors are
never cached. A cache that cannot be opened is a ConfigError at start; one that
fails later (disk full, file removed) only logs a warning, since a cache must
never fail a call that the provider could answer.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from itas.agents.providers.base import Completion, Message, Provider, SimTask, Usage
from itas.errors import ConfigError

log = logging.getLogger("itas.providers.cache")

#: Bump when the key recipe or the stored fields change; old entries then just miss.
CACHE_VERSION = 1
CACHE_FILE = "responses.sqlite"
DEFAULT_CACHE_DIR = Path("~/.cache/itas")
CACHE_DIR_ENV = "ITAS_CACHE_DIR"
CACHE_SWITCH_ENV = "ITAS_CACHE"
CACHE_CAP_ENV = "ITAS_CACHE_MAX_MB"
OFF_VALUES = frozenset({"off", "0", "false", "no"})
EVICT_BATCH = 64  # rows dropped per step while the cache is over its cap
BUSY_TIMEOUT_S = 30.0
#: Set while an agent serves a request that asked to bypass the cache (``itas ask
#: --no-cache``): replies are fetched fresh and stored, never replayed. A context variable, so
#: it follows the request into every task it starts and no other request sees it.
_BYPASS: contextvars.ContextVar[bool] = contextvars.ContextVar("itas_cache_bypass", default=False)


@contextlib.contextmanager
def bypassing(bypass: bool = True) -> Iterator[None]:
    """Within this block (and the tasks it starts) no reply is read from the cache."""
    token = _BYPASS.set(bypass)
    try:
        yield
    finally:
        _BYPASS.reset(token)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    cost_known INTEGER NOT NULL,
    created_at REAL NOT NULL,
    adjustments TEXT
)
"""
#: Added after the first release: files made before it get the column, NULL for old rows
#: (their calls went out as asked, since nothing was adjusted then).
_ADD_ADJUSTMENTS = "ALTER TABLE responses ADD COLUMN adjustments TEXT"


def cache_enabled_by_env() -> bool:
    return os.environ.get(CACHE_SWITCH_ENV, "on").strip().lower() not in OFF_VALUES


def cache_cap_bytes() -> int | None:
    """The size cap from ``ITAS_CACHE_MAX_MB`` (None: no cap); ConfigError names a bad one."""
    raw = os.environ.get(CACHE_CAP_ENV, "").strip()
    if not raw:
        return None
    try:
        megabytes = float(raw)
    except ValueError:
        megabytes = -1.0
    if not (megabytes > 0 and math.isfinite(megabytes)):
        raise ConfigError(f"{CACHE_CAP_ENV}={raw!r}: expected a size in MB greater than 0")
    return int(megabytes * 1024 * 1024)


def default_cache_path() -> Path:
    base = os.environ.get(CACHE_DIR_ENV)
    return (Path(base) if base else DEFAULT_CACHE_DIR).expanduser() / CACHE_FILE


def cache_key(
    *,
    provider: str,
    model: str,
    base_url: str | None,
    messages: Sequence[Message],
    temperature: float,
    max_tokens: int,
    sample_index: int,
    extra: Any = None,
) -> str:
    """A stable hex digest of the call; ``extra`` holds anything else that shapes the reply."""
    blob = json.dumps(
        {
            "v": CACHE_VERSION,
            "provider": provider,
            "model": model,
            "base_url": base_url,
            "messages": [dict(m) for m in messages],
            "temperature": float(temperature),
            "max_tokens": int(max_tokens),
            "sample_index": int(sample_index),
            "extra": extra,
        },
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """One SQLite file; one connection per instance (per process)."""

    def __init__(self, path: Path | str | None = None, *, max_bytes: int | None = None
                 ) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.max_bytes = max_bytes if max_bytes is not None else cache_cap_bytes()
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}
            if "adjustments" not in columns:
                self._db.execute(_ADD_ADJUSTMENTS)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"response cache {self.path}: {exc}; point {CACHE_DIR_ENV} at a writable "
                f"directory or set {CACHE_SWITCH_ENV}=off"
            ) from exc
        # One statement at a time on the shared connection, off the event loop.
        self._limiter = anyio.CapacityLimiter(1)

    def get(self, key: str) -> Completion | None:
        row = self._db.execute(
            "SELECT text, finish_reason, prompt_tokens, completion_tokens, cost_usd, cost_known, "
            "adjustments FROM responses WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        text, finish_reason, prompt_tokens, completion_tokens, cost_usd, cost_known, notes = row
        usage = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=0.0,
            cost_usd=cost_usd,
            cached=True,
            cost_known=bool(cost_known),
        )
        return Completion(
            text=text,
            usage=usage,
            finish_reason=finish_reason,
            adjustments=tuple(json.loads(notes)) if notes else (),
        )

    def put(self, key: str, completion: Completion) -> None:
        usage = completion.usage
        self._db.execute(
            "INSERT OR REPLACE INTO responses (key, text, finish_reason, prompt_tokens, "
            "completion_tokens, cost_usd, cost_known, created_at, adjustments) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                completion.text,
                completion.finish_reason,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cost_usd,
                int(usage.cost_known),
                time.time(),
                json.dumps(list(completion.adjustments)) if completion.adjustments else None,
            ),
        )
        if self.max_bytes is not None:
            self._evict_to(self.max_bytes)

    def used_bytes(self) -> int:
        """Bytes of the database's pages in use (free pages of deleted rows not counted)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def _evict_to(self, limit: int) -> None:
        """Drop the oldest replies until the pages in use fit ``limit`` (or nothing is left)."""
        while self.used_bytes() > limit:
            dropped = self._db.execute(
                "DELETE FROM responses WHERE key IN (SELECT key FROM responses "
                "ORDER BY created_at LIMIT ?)", (EVICT_BATCH,)).rowcount
            if not dropped:
                return

    def stats(self) -> dict[str, Any]:
        """What ``itas cache stats`` shows: where, how many replies, how big, how old."""
        count, oldest, newest, tokens = self._db.execute(
            "SELECT COUNT(*), MIN(created_at), MAX(created_at), "
            "COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM responses").fetchone()
        return {"path": str(self.path), "entries": int(count), "bytes": self.used_bytes(),
                "file_bytes": self.path.stat().st_size, "max_bytes": self.max_bytes,
                "tokens": int(tokens), "oldest": oldest, "newest": newest}

    def clear(self) -> int:
        """Remove every reply; the number removed. The file shrinks too (VACUUM)."""
        removed = self._db.execute("DELETE FROM responses").rowcount
        self._db.execute("VACUUM")
        return int(removed)

    async def aget(self, key: str) -> Completion | None:
        return await anyio.to_thread.run_sync(self.get, key, limiter=self._limiter)

    async def aput(self, key: str, completion: Completion) -> None:
        await anyio.to_thread.run_sync(self.put, key, completion, limiter=self._limiter)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        self._db.close()


class CachingProvider(Provider):
    """Wraps a provider: answer from the cache, else call it and remember the reply."""

    def __init__(self, inner: Provider, cache: ResponseCache) -> None:
        self.inner = inner
        self.cache = cache
        self.name = inner.name

    def key_for(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        temperature: float,
        max_tokens: int,
        sample_index: int,
        sim: SimTask | None,
    ) -> str:
        # Only a simulated model's reply depends on the SimTask; real ones ignore it.
        extra = None
        if sim is not None and self.inner.name == "sim":
            extra = {
                "role": sim.role,
                "key": sim.key,
                "candidates": list(sim.candidates),
                "extra": sim.extra,
            }
        return cache_key(
            provider=self.inner.name,
            model=model,
            base_url=getattr(self.inner, "base_url", None),
            messages=messages,
            temperature=temperature,
            max_tokens=max_tokens,
            sample_index=sample_index,
            extra=extra,
        )

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        temperature: float = 0.7,
        max_tokens: int = 512,
        sample_index: int = 0,
        sim: SimTask | None = None,
    ) -> Completion:
        key = self.key_for(
            messages,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            sample_index=sample_index,
            sim=sim,
        )
        try:
            hit = None if _BYPASS.get() else await self.cache.aget(key)
        except sqlite3.Error as exc:  # a broken cache must not break the call
            log.warning(
                "response cache %s unreadable (%s); calling the provider", self.cache.path, exc
            )
            hit = None
        if hit is not None:
            return hit
        completion = await self.inner.complete(
            messages,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            sample_index=sample_index,
            sim=sim,
        )
        try:
            await self.cache.aput(key, completion)
        except sqlite3.Error as exc:
            log.warning("response cache %s not written (%s)", self.cache.path, exc)
        return completion

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            self.cache.close()
