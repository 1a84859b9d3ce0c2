"""Shared fixtures; the process machinery lives in tests/helpers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.helpers import Processes


@pytest.fixture(scope="session", autouse=True)
def fresh_response_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test run starts with an empty response cache, inherited by the processes it
    starts, so a test that needs a model's text really asks the model."""
    previous = os.environ.get("ITAS_CACHE_DIR")
    os.environ["ITAS_CACHE_DIR"] = str(tmp_path_factory.mktemp("response-cache"))
    yield
    if previous is None:
        del os.environ["ITAS_CACHE_DIR"]
    else:
        os.environ["ITAS_CACHE_DIR"] = previous


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


