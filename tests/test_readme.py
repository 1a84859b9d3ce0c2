"""Every ```python block of README.md runs as written, against a real stack.

A block that names the embedded model's architecture (``local_gcrf``) runs against the
stack ``itas up`` starts (broker, llama.cpp model server, the local pool, orchestrator);
the others against the sim pool; both stacks also run the echo agents and an OpenAI-compatible
gateway (as ``itas up`` does). The only change to a block is the endpoints: the README's fixed
``tcp://127.0.0.1:5555`` becomes the test stack's port-0 broker, ``http://127.0.0.1:8800/v1``
its gateway. Each block runs in its own interpreter from the project
root, as a reader would paste it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import anyio
import pytest
import yaml

from itas.agents.pool import load_pool
from itas.gateway import GatewayConfig, ModelTable, discover_models, serve
from itas.stack import run_stack
from tests.helpers import DATA_DIR, REPO

README = REPO / "README.md"
BLOCK_RE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
ENDPOINT = "tcp://127.0.0.1:5555"
GATEWAY = "http://127.0.0.1:8800/v1"
LOCAL_MARK = "local_gcrf"
BLOCK_TIMEOUT_S = 600.0  # the embedded model's blocks: two local_gcrf queries
HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


def blocks() -> list[str]:
    return BLOCK_RE.findall(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_examples_for_both_stacks() -> None:
    found = blocks()
    assert len(found) >= 3
    assert any(LOCAL_MARK in b for b in found) and any(LOCAL_MARK not in b for b in found)
    for block in found:
        compile(block, "README.md", "exec")  # no top-level await, no syntax slips
        if "Client(" in block or "OpenAI(" in block:
            assert ENDPOINT in block or GATEWAY in block, \
                "every example talks to the broker or the gateway it documents"


def pool_with_echo(base: str, path: Path) -> Path:
    agents = [{"kind": e.kind, "replicas": e.replicas, "settings": dict(e.settings)}
              for e in load_pool(REPO / "configs" / "pools" / f"{base}.yaml")]
    agents.append({"kind": "echo", "replicas": 1, "settings": {}})
    path.write_text(yaml.safe_dump({"agents": agents}))
    return path


async def run_blocks(pool: Path, selected: list[str]) -> None:
    async with run_stack(pool, bind="tcp://127.0.0.1:0") as stack, \
            anyio.create_task_group() as tg:
        models = ModelTable(discover_models([]))
        port = await tg.start(serve, GatewayConfig(stack.broker, models), "127.0.0.1", 0)
        for block in selected:
            code = block.replace(ENDPOINT, stack.broker).replace(
                GATEWAY, f"http://127.0.0.1:{port}/v1")
            done = await anyio.run_process(
                [sys.executable, "-c", code], cwd=REPO, check=False,
                env={**os.environ, "ITAS_DATA_DIR": str(DATA_DIR)})
            out, err = done.stdout.decode(), done.stderr.decode()
            assert done.returncode == 0, f"README block failed:\n{block}\n{err[-3000:]}"
            assert out.strip(), f"README block printed nothing:\n{block}"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_examples_without_a_broker_run_as_written() -> None:
    for block in [b for b in blocks() if "Client(" not in b and "OpenAI(" not in b]:
        done = await anyio.run_process([sys.executable, "-c", block], cwd=REPO, check=False)
        assert done.returncode == 0, f"README block failed:\n{block}\n{done.stderr.decode()}"
        assert done.stdout.strip(), f"README block printed nothing:\n{block}"


@pytest.mark.anyio
async def test_sim_examples_run_as_written(tmp_path: Path) -> None:
    selected = [b for b in blocks() if LOCAL_MARK not in b and "Client(" in b]
    with anyio.fail_after(BLOCK_TIMEOUT_S):
        await run_blocks(pool_with_echo("sim", tmp_path / "pool.yaml"), selected)


@pytest.mark.anyio
@pytest.mark.local_model
@pytest.mark.slow
@pytest.mark.skipif(not HAVE_LLAMA_CPP, reason="llama-cpp-python is not installed")
async def test_embedded_model_examples_run_as_written(tmp_path: Path) -> None:
    selected = [b for b in blocks() if LOCAL_MARK in b]
    with anyio.fail_after(BLOCK_TIMEOUT_S):
        await run_blocks(pool_with_echo("local", tmp_path / "pool.yaml"), selected)


# -- "Using it": the shell blocks, top to bottom -------------------------------------------

USING_IT_RE = re.compile(r"^## Using it\n(.*?)^##? ", re.DOTALL | re.MULTILINE)
BASH_RE = re.compile(r"^```bash\n(.*?)^```", re.DOTALL | re.MULTILINE)
PORT_RE = re.compile(r"tcp://127\.0\.0\.1:(\d+)")
USING_IT_TIMEOUT_S = 240.0


def using_it_blocks() -> list[str]:
    match = USING_IT_RE.search(README.read_text(encoding="utf-8"))
    assert match, "README has no 'Using it' section"
    return BASH_RE.findall(match.group(1))[:2]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_using_it(block: str, runtime: Path) -> str:
    """The block in bash -e, as a reader pastes it, on free ports instead of the README's
    (other test runs share this machine); whatever it leaves running is stopped after."""
    import json
    import signal
    import subprocess

    script = PORT_RE.sub(lambda m: f"tcp://127.0.0.1:{_free_port()}", block)
    env = {**os.environ, "ITAS_RUNTIME_DIR": str(runtime), "COLUMNS": "160",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("ITAS_BROKER", None)
    try:
        done = subprocess.run(["bash", "-e", "-c", script], cwd=REPO, env=env, text=True,
                              capture_output=True, timeout=USING_IT_TIMEOUT_S, check=False)
    finally:
        for record in runtime.glob("stack-*.json"):  # a stack the block failed to stop
            os.kill(json.loads(record.read_text())["pid"], signal.SIGTERM)
    assert done.returncode == 0, f"README block failed:\n{script}\n{done.stderr[-3000:]}"
    assert not list(runtime.glob("stack-*.json")), "the block left its stack running"
    return done.stdout + done.stderr


def test_using_it_blocks_use_ports_that_do_not_collide() -> None:
    blocks = using_it_blocks()
    assert len(blocks) == 2
    ports = [set(PORT_RE.findall(b)) for b in blocks]
    assert all(len(p) == 1 for p in ports) and not ports[0] & ports[1]
    assert all("itas down" in b and "--detach" in b for b in blocks)


def test_using_it_on_simulated_models_runs_top_to_bottom(tmp_path: Path) -> None:
    sim = next(b for b in using_it_blocks() if LOCAL_MARK not in b)
    shown = run_using_it(sim, tmp_path)
    assert "itas up: ready: orchestrator" in shown and "Simulated answer" in shown
    assert "itas ask: answered in" in shown and "itas down: stopped" in shown


@pytest.mark.local_model
@pytest.mark.slow
@pytest.mark.skipif(not HAVE_LLAMA_CPP, reason="llama-cpp-python is not installed")
def test_using_it_on_the_embedded_model_runs_top_to_bottom(tmp_path: Path) -> None:
    local = next(b for b in using_it_blocks() if LOCAL_MARK in b)
    shown = run_using_it(local, tmp_path)
    assert "model server ready at" in shown and "itas down: stopped" in shown
