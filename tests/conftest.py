"""Shared fixtures; the process machinery lives in tests/helpers.py."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from tests.helpers import Processes


@pytest.fixture(scope="session", autouse=True)
def fresh_response_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test run starts with an empty response cache, inherited by the processes it
    starts, so a test that needs a model's text really asks the model."""
    with _env("ITAS_CACHE_DIR", str(tmp_path_factory.mktemp("response-cache"))):
        yield


@pytest.fixture(scope="session", autouse=True)
def private_runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Model servers that tests start are recorded here, never in the user's runtime
    directory, and a server the user runs is not found by the tests' agents."""
    with _env("ITAS_RUNTIME_DIR", str(tmp_path_factory.mktemp("runtime"))):
        yield


@pytest.fixture(scope="session", autouse=True)
def gateways_on_free_ports() -> Iterator[None]:
    """Stacks that tests start (``itas up``) put their gateway on a free port, so two
    stacks, or a user's own on 8800, never collide."""
    with _env("ITAS_GATEWAY_PORT", "0"):
        yield


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    """``name=value`` in this process's environment (and its children's) while the block
    runs, then as it was."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


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


