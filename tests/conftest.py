"""Shared fixtures; the process machinery lives in tests/helpers.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import Processes


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def procs() -> Iterator[Processes]:
    processes = Processes()
    try:
        yield processes
    finally:
        processes.stop_all()


