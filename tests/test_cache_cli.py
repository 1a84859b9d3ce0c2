"""The response cache made visible (issue 15): ``itas cache stats|clear``, the size cap
(``ITAS_CACHE_MAX_MB``), ``itas ask`` saying how many calls the cache replayed, and
``--no-cache`` asking the model again for one query."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from itas.agents.providers.base import Completion, Usage
from itas.agents.providers.cache import CACHE_CAP_ENV, ResponseCache, cache_cap_bytes
from itas.errors import ConfigError
from itas.techniques.base import service_name
from tests.helpers import REPO, Processes, wait_for_workers
from tests.servers.fake_llm import FakeLLMServer

ITAS = shutil.which("itas", path=str(Path(sys.executable).parent)) or "itas"
LIMIT_S = 90


def itas(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ITAS, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **env}, timeout=LIMIT_S, check=False)


def _completion(text: str) -> Completion:
    return Completion(text=text, usage=Usage(prompt_tokens=3, completion_tokens=4,
                                             latency_s=0.0, cost_usd=0.0),
                      finish_reason="stop")


def test_stats_and_clear_on_the_command_line(tmp_path: Path) -> None:
    env = {"ITAS_CACHE_DIR": str(tmp_path)}
    empty = itas("cache", "stats", "--json", env=env)
    assert empty.returncode == 0 and json.loads(empty.stdout)["entries"] == 0
    cache = ResponseCache(tmp_path / "responses.sqlite")
    for i in range(5):
        cache.put(f"k{i}", _completion("x" * 100))
    cache.close()
    stats = json.loads(itas("cache", "stats", "--json", env=env).stdout)
    assert stats["entries"] == 5 and stats["tokens"] == 35 and stats["bytes"] > 0
    assert stats["path"] == str(tmp_path / "responses.sqlite") and stats["max_bytes"] is None
    shown = itas("cache", "stats", env={**env, CACHE_CAP_ENV: "2"})
    assert "5 replies" in shown.stdout and "of a 2.1 MB cap" in shown.stdout, shown.stdout
    cleared = itas("cache", "clear", env=env)
    assert cleared.returncode == 0 and "removed 5 replies" in cleared.stdout
    assert json.loads(itas("cache", "stats", "--json", env=env).stdout)["entries"] == 0


@pytest.mark.parametrize("bad", ["0", "-1", "lots", "nan", "inf"])
def test_a_bad_cap_is_one_line_naming_the_variable(tmp_path: Path, bad: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_CAP_ENV, bad)
    with pytest.raises(ConfigError, match=CACHE_CAP_ENV):
        cache_cap_bytes()
    out = itas("cache", "stats", env={"ITAS_CACHE_DIR": str(tmp_path), CACHE_CAP_ENV: bad})
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert out.stderr.startswith("itas: error: ") and CACHE_CAP_ENV in out.stderr


def test_the_cap_drops_the_oldest_replies_first(tmp_path: Path) -> None:
    cap = 200_000
    cache = ResponseCache(tmp_path / "c.sqlite", max_bytes=cap)
    try:
        for i in range(200):
            cache.put(f"k{i}", _completion(f"{i}:" + "y" * 4000))
            assert cache.used_bytes() <= cap
        kept = [i for i in range(200) if cache.get(f"k{i}") is not None]
        assert 0 < len(kept) < 200
        assert kept == list(range(200 - len(kept), 200))  # the newest, and all of them
        assert cache.get("k199").text.startswith("199:")  # type: ignore[union-attr]
    finally:
        cache.close()


@pytest.fixture(scope="module")
def cached_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path,
                                                                           FakeLLMServer]]:
    """A generator with the cache on (its own directory) behind an orchestrator."""
    cache_dir = tmp_path_factory.mktemp("cache")
    with FakeLLMServer(reply_text="forty-two") as llm:
        procs = Processes()
        base_url = llm.url + "/v1"
        try:
            broker = procs.broker()
            procs.spawn("agent", "--kind", "generator", "--broker", broker.endpoint,
                        "--settings", json.dumps({"provider": "openai", "model": "fake",
                                                  "base_url": base_url}),
                        env={"ITAS_CACHE_DIR": str(cache_dir)})
            procs.agent(broker.endpoint, "orchestrator")
            wait_for_workers(broker.endpoint, service_name("generator", "openai", "fake",
                                                           base_url=base_url), 1)
            wait_for_workers(broker.endpoint, "orchestrator", 1)
            arch = cache_dir.parent / "two.yaml"
            arch.write_text("name: two\nfinal: first\nlayers:\n  - - {technique: generator, "
                            f"provider: openai, model: fake, base_url: '{base_url}', "
                            "samples: 2}\n")
            yield broker.endpoint, arch, llm
        finally:
            procs.stop_all()


def test_ask_says_what_the_cache_replayed_and_no_cache_asks_again(
        cached_mesh: tuple[str, Path, FakeLLMServer]) -> None:
    endpoint, arch, llm = cached_mesh
    ask = ["ask", "What is 6 x 7?", "--arch", str(arch), "--broker", endpoint]
    first = itas(*ask, env={})
    assert first.returncode == 0, first.stderr
    assert "2 call(s), none from the response cache" in first.stderr
    posts = len(llm.posts())
    again = itas(*ask, env={})
    assert "2 call(s), 2 of them replayed from the response cache" in again.stderr
    assert len(llm.posts()) == posts  # nothing went to the model
    fresh = itas(*ask, "--no-cache", env={})
    assert fresh.returncode == 0, fresh.stderr
    assert "none from the response cache" in fresh.stderr
    assert len(llm.posts()) == posts + 2
    assert first.stdout == again.stdout == fresh.stdout == "forty-two\n"
