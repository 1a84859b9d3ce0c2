"""The on-disk response cache: hits and misses over real HTTP, key sensitivity, many writers."""

from __future__ import annotations

import multiprocessing
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from itas.agents.providers import Completion, SimTask, Usage, make_provider
from itas.agents.providers.cache import CachingProvider, ResponseCache, cache_key
from itas.agents.providers.openai import OpenAIProvider
from itas.agents.providers.sim import SimProvider
from itas.errors import ConfigError, ProviderError
from tests.servers.fake_llm import FakeLLMServer

pytestmark = pytest.mark.anyio

MESSAGES = [{"role": "user", "content": "Name a prime."}]
WRITERS = 4
ENTRIES_PER_WRITER = 150


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(reply_text="7") as fake:
        yield fake


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ITAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ITAS_CACHE", raising=False)
    return tmp_path / "cache"


async def test_second_identical_call_is_a_hit(server: FakeLLMServer, cache_dir: Path) -> None:
    p = make_provider("openai", {"base_url": server.url + "/v1"})
    assert isinstance(p, CachingProvider)
    try:
        first = await p.complete(MESSAGES, model="gpt-4o-mini", temperature=0.5)
        second = await p.complete(MESSAGES, model="gpt-4o-mini", temperature=0.5)
        third = await p.complete(MESSAGES, model="gpt-4o-mini", temperature=0.5, sample_index=1)
    finally:
        await p.aclose()
    assert len(server.posts()) == 2  # the repeat was served from disk, sample 1 was not
    assert not first.usage.cached and second.usage.cached and not third.usage.cached
    assert second.text == first.text == "7" and second.finish_reason == first.finish_reason
    assert second.usage.latency_s == 0.0
    assert (second.usage.prompt_tokens, second.usage.completion_tokens, second.usage.cost_usd) == (
        first.usage.prompt_tokens,
        first.usage.completion_tokens,
        first.usage.cost_usd,
    )
    assert (cache_dir / "responses.sqlite").is_file()
    assert stat.S_IMODE(os.stat(cache_dir).st_mode) == 0o700  # prompts are private


async def test_cache_survives_a_new_process_and_provider(server: FakeLLMServer) -> None:
    for _ in range(2):
        p = make_provider("openai", {"base_url": server.url + "/v1"})
        try:
            await p.complete(MESSAGES, model="m")
        finally:
            await p.aclose()
    assert len(server.posts()) == 1


async def test_errors_are_not_cached(server: FakeLLMServer) -> None:
    server.fail(400)
    p = make_provider("openai", {"base_url": server.url + "/v1"})
    try:
        with pytest.raises(ProviderError):
            await p.complete(MESSAGES, model="m")
        assert (await p.complete(MESSAGES, model="m")).text == "7"
    finally:
        await p.aclose()
    assert len(server.posts()) == 2


def test_key_changes_with_every_input() -> None:
    base = {
        "provider": "openai",
        "model": "m",
        "base_url": "http://h/v1",
        "messages": MESSAGES,
        "temperature": 0.7,
        "max_tokens": 100,
        "sample_index": 0,
    }
    reference = cache_key(**base)  # type: ignore[arg-type]
    assert cache_key(**base) == reference  # type: ignore[arg-type]
    variants = {
        "provider": "anthropic",
        "model": "m2",
        "base_url": "http://other/v1",
        "messages": [{"role": "user", "content": "Name a prime!"}],
        "temperature": 0.8,
        "max_tokens": 101,
        "sample_index": 1,
    }
    for field, value in variants.items():
        assert cache_key(**(base | {field: value})) != reference, field  # type: ignore[arg-type]
    assert cache_key(**base, extra={"seed": 1}) != reference  # type: ignore[arg-type]
    system_first = [{"role": "system", "content": "Name a prime."}]
    assert cache_key(**(base | {"messages": system_first})) != reference  # type: ignore[arg-type]


async def test_switches(server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    url = server.url + "/v1"
    assert not isinstance(
        make_provider("openai", {"base_url": url, "cache": False}), CachingProvider
    )
    assert not isinstance(make_provider("sim", {}), CachingProvider)  # sim bypasses by default
    sim = make_provider("sim", {"cache": True})
    assert isinstance(sim, CachingProvider)
    # For a simulated model the SimTask is part of the key: same messages, other task, other reply.
    key = {"id": "q", "answer": "yes", "wrong": ["no"], "difficulty": 0.5}
    a = await sim.complete([], model="m", sim=SimTask("critique", key, ("yes",), str))
    b = await sim.complete([], model="m", sim=SimTask("critique", key, ("no",), str))
    again = await sim.complete([], model="m", sim=SimTask("critique", key, ("yes",), str))
    assert not a.usage.cached and not b.usage.cached and again.usage.cached
    await sim.aclose()
    monkeypatch.setenv("ITAS_CACHE", "off")
    assert not isinstance(
        make_provider("openai", {"base_url": url, "cache": True}), CachingProvider
    )
    assert isinstance(make_provider("openai", {"base_url": url}), OpenAIProvider)
    assert isinstance(make_provider("sim", {"cache": True}), SimProvider)


def _writer(path: str, worker: int, entries: int) -> None:
    cache = ResponseCache(path)
    for i in range(entries):
        usage = Usage(prompt_tokens=i, completion_tokens=worker, cost_usd=0.5)
        cache.put(f"{worker}-{i}", Completion(text=f"w{worker} e{i}", usage=usage))
        assert cache.get(f"{worker}-{i}") is not None
        cache.get(f"{(worker + 1) % WRITERS}-{i}")  # read what a sibling may be writing
    cache.close()


def test_many_processes_write_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_writer, args=(path, w, ENTRIES_PER_WRITER)) for w in range(WRITERS)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
    assert [process.exitcode for process in workers] == [0] * WRITERS
    cache = ResponseCache(path)
    try:
        assert len(cache) == WRITERS * ENTRIES_PER_WRITER
        hit = cache.get(f"{WRITERS - 1}-{ENTRIES_PER_WRITER - 1}")
        assert hit is not None and hit.usage.cached
        assert hit.text == f"w{WRITERS - 1} e{ENTRIES_PER_WRITER - 1}"
        assert hit.usage.completion_tokens == WRITERS - 1 and hit.usage.cost_usd == 0.5
    finally:
        cache.close()


def test_unwritable_cache_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="ITAS_CACHE_DIR"):
        ResponseCache(blocker / "sub" / "responses.sqlite")


async def test_a_cache_failing_later_does_not_fail_the_call(server: FakeLLMServer) -> None:
    p = make_provider("openai", {"base_url": server.url + "/v1"})
    assert isinstance(p, CachingProvider)
    p.cache._db.execute("DROP TABLE responses")  # as if the file were damaged under us
    try:
        assert (await p.complete(MESSAGES, model="m")).text == "7"
    finally:
        await p.aclose()
