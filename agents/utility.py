"""Agents with no model behind them: ``echo`` and ``sleep``, for tests and benchmarks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import anyio

from itas.agents.base import Agent
from itas.errors import AgentError, ConfigError


def _int_setting(settings: Mapping[str, Any], key: str, default: int) -> int:
    value = settings.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"setting {key!r} must be a positive integer, got {value!r}")
    return value


class EchoAgent(Agent):
    """Replies with the request body unchanged; ``{"fail": "msg"}`` gets an error reply."""

    def __init__(self, service: str = "echo", credit: int = 100) -> None:
        self.service, self.credit = service, credit

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> EchoAgent:
        return cls(str(settings.get("service", "echo")), _int_setting(settings, "credit", 100))

    async def handle(self, body: Any) -> Any:
        if isinstance(body, dict) and "fail" in body:
            raise AgentError("requested_failure", str(body["fail"]))
        return body


class SleepAgent(Agent):
    """Replies ``{"slept": s, "tag": ..., "pid": ...}`` after ``s`` seconds.

    The body may set "seconds" and a "tag" to echo; the pid tells tests which
    replica served the request. With ``record`` (a file path) each request's tag is
    appended to that file as it starts, so a test can count how often each request
    was executed across processes (one short ``O_APPEND`` write per line).
    """

    def __init__(self, service: str = "sleep", credit: int = 1, seconds: float = 0.1,
                 record: str | None = None) -> None:
        self.service, self.credit, self.seconds = service, credit, seconds
        self.record = record

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> SleepAgent:
        seconds = settings.get("seconds", 0.1)
        if not isinstance(seconds, (int, float)) or seconds < 0:
            raise ConfigError(f"setting 'seconds' must be a non-negative number, got {seconds!r}")
        record = settings.get("record")
        if record is not None and not isinstance(record, str):
            raise ConfigError(f"setting 'record' must be a file path, got {record!r}")
        return cls(str(settings.get("service", "sleep")), _int_setting(settings, "credit", 1),
                   float(seconds), record)

    async def handle(self, body: Any) -> Any:
        seconds = self.seconds
        if isinstance(body, dict) and isinstance(body.get("seconds"), (int, float)):
            seconds = float(body["seconds"])
        tag = body.get("tag") if isinstance(body, dict) else None
        if self.record is not None:
            async with await anyio.open_file(self.record, "a") as record:
                await record.write(f"{tag}\n")
        await anyio.sleep(seconds)
        return {"slept": seconds, "tag": tag, "pid": os.getpid()}
