"""Agents find the local model server that ``itas model serve`` or ``itas up`` started, from
the state file it keeps while it runs; a connection error names the URL and where it came
from. (conftest points ``ITAS_RUNTIME_DIR`` at a private directory for every test.)"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from itas.agents.providers import make_provider
from itas.agents.providers.local import (
    DEFAULT_LOCAL_URL,
    LOCAL_URL_ENV,
    llama_cpp_available,
    model_state_path,
    recorded_model_url,
    recording,
)
from itas.errors import ProviderError
from tests.helpers import REPO
from tests.servers.fake_llm import FakeLLMServer

ITAS = shutil.which("itas", path=str(Path(sys.executable).parent)) or "itas"


@pytest.fixture(autouse=True)
def no_url_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(LOCAL_URL_ENV, raising=False)
    monkeypatch.setenv("ITAS_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("ITAS_CACHE", "off")


def _server(url: str, pid: int) -> Any:
    """What ``recording`` reads of a LocalModelServer."""
    return SimpleNamespace(base_url=url, process=SimpleNamespace(pid=pid))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def _complete(provider: Any) -> str:
    try:
        completion = await provider.complete([{"role": "user", "content": "hi"}],
                                             model="smollm2", max_tokens=8)
        return str(completion.text)
    finally:
        await provider.aclose()


def test_a_recorded_running_server_is_what_local_agents_call() -> None:
    with FakeLLMServer(reply_text="from the recorded server") as llm:
        url = llm.url + "/v1"
        with recording(_server(url, os.getpid())):
            assert oct(model_state_path().parent.stat().st_mode & 0o777) == "0o700"
            assert recorded_model_url() == url
            provider = make_provider("local", {})
            assert anyio.run(_complete, provider) == "from the recorded server"
            assert len(llm.posts()) == 1
        assert not model_state_path().exists()  # gone with the server
    assert make_provider("local", {}).base_url == DEFAULT_LOCAL_URL + "/"  # type: ignore[attr-defined]


def test_the_variable_and_the_setting_win_over_the_record(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    with recording(_server("http://127.0.0.1:1111/v1", os.getpid())):
        monkeypatch.setenv(LOCAL_URL_ENV, "http://127.0.0.1:2222/v1")
        assert make_provider("local", {}).base_url == "http://127.0.0.1:2222/v1/"  # type: ignore[attr-defined]
        setting = make_provider("local", {"base_url": "http://127.0.0.1:3333/v1"})
        assert setting.base_url == "http://127.0.0.1:3333/v1/"  # type: ignore[attr-defined]


@pytest.mark.parametrize("content", ["", "not json", '{"url": 5, "pid": 1}', '{"url": "x"}'])
def test_a_broken_record_is_ignored(content: str) -> None:
    path = model_state_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert recorded_model_url() is None
    assert make_provider("local", {}).base_url == DEFAULT_LOCAL_URL + "/"  # type: ignore[attr-defined]


def test_a_record_left_by_a_dead_server_is_ignored() -> None:
    with recording(_server("http://127.0.0.1:1111/v1", _dead_pid())):
        assert recorded_model_url() is None


def test_a_newer_server_keeps_its_record_when_an_older_one_stops() -> None:
    with recording(_server("http://127.0.0.1:1111/v1", os.getpid())) as _:
        with recording(_server("http://127.0.0.1:2222/v1", os.getpid())):
            pass  # the newer stops first: its record goes
        assert recorded_model_url() is None
    older = recording(_server("http://127.0.0.1:1111/v1", os.getpid()))
    older.__enter__()
    with recording(_server("http://127.0.0.1:2222/v1", os.getpid())):
        older.__exit__(None, None, None)  # the older stops while the newer runs
        assert recorded_model_url() == "http://127.0.0.1:2222/v1"


@pytest.mark.parametrize(("how", "named"), [
    ("recorded", "recorded in"), ("variable", LOCAL_URL_ENV), ("setting", "base_url setting")])
def test_a_connection_error_names_the_url_and_where_it_came_from(
        monkeypatch: pytest.MonkeyPatch, how: str, named: str) -> None:
    with FakeLLMServer() as llm:  # a port that was open and is closed now
        url = llm.url + "/v1"
    settings: dict[str, Any] = {"max_attempts": 1}
    with recording(_server(url if how == "recorded" else "http://127.0.0.1:9/v1",
                           os.getpid())):
        if how == "variable":
            monkeypatch.setenv(LOCAL_URL_ENV, url)
        if how == "setting":
            settings["base_url"] = url
        with pytest.raises(ProviderError) as caught:
            anyio.run(_complete, make_provider("local", settings))
    message = str(caught.value)
    assert f"at {url}" in message and named in message and "itas model serve" in message


def test_other_remote_providers_name_the_url_they_could_not_reach() -> None:
    with FakeLLMServer() as llm:
        url = llm.url + "/v1"
    provider = make_provider("openai", {"base_url": url, "api_key_env": "HOME",
                                        "max_attempts": 1})
    with pytest.raises(ProviderError, match=re.escape(f"(at {url}/)")):
        anyio.run(_complete, provider)


@pytest.mark.local_model
@pytest.mark.skipif(not llama_cpp_available(), reason="needs llama-cpp-python[server]")
def test_itas_model_serve_is_found_by_a_local_provider() -> None:
    serve = subprocess.Popen([ITAS, "model", "serve", "--port", "0", "--threads", "1"],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, start_new_session=True)
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline()
        match = re.search(r"ready at (\S+)", line)
        assert match, line
        assert recorded_model_url() == match.group(1)
        provider = make_provider("local", {})
        assert provider.base_url == match.group(1) + "/"  # type: ignore[attr-defined]
        assert anyio.run(_complete, provider).strip()
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=30)
    assert recorded_model_url() is None and not model_state_path().exists()
