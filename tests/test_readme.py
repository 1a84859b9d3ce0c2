"""Every ```python block of README.md runs as written, against a real stack.

A block that names the embedded model's architecture (``local_gcrf``) runs against the
stack ``itas up`` starts (broker, llama.cpp model server, the local pool, orchestrator);
the others against the sim pool; both stacks also run the echo agents. The only change to
a block is the broker endpoint: the README's fixed ``tcp://127.0.0.1:5555`` becomes the
test stack's port-0 endpoint. Each block runs in its own interpreter from the project
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
from itas.stack import run_stack
from tests.helpers import DATA_DIR, REPO

README = REPO / "README.md"
BLOCK_RE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
ENDPOINT = "tcp://127.0.0.1:5555"
LOCAL_MARK = "local_gcrf"
BLOCK_TIMEOUT_S = 280.0
HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


def blocks() -> list[str]:
    return BLOCK_RE.findall(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_examples_for_both_stacks() -> None:
    found = blocks()
    assert len(found) >= 3
    assert any(LOCAL_MARK in b for b in found) and any(LOCAL_MARK not in b for b in found)
    for block in found:
        compile(block, "README.md", "exec")  # no top-level await, no syntax slips
        if "Client(" in block:
            assert ENDPOINT in block, "every client example talks to the broker it documents"


def pool_with_echo(base: str, path: Path) -> Path:
    agents = [{"kind": e.kind, "replicas": e.replicas, "settings": dict(e.settings)}
              for e in load_pool(REPO / "configs" / "pools" / f"{base}.yaml")]
    agents.append({"kind": "echo", "replicas": 1, "settings": {}})
    path.write_text(yaml.safe_dump({"agents": agents}))
    return path


async def run_blocks(pool: Path, selected: list[str]) -> None:
    async with run_stack(pool, bind="tcp://127.0.0.1:0") as stack:
        for block in selected:
            code = block.replace(ENDPOINT, stack.broker)
            done = await anyio.run_process(
                [sys.executable, "-c", code], cwd=REPO, check=False,
                env={**os.environ, "ITAS_DATA_DIR": str(DATA_DIR)})
            out, err = done.stdout.decode(), done.stderr.decode()
            assert done.returncode == 0, f"README block failed:\n{block}\n{err[-3000:]}"
            assert out.strip(), f"README block printed nothing:\n{block}"


@pytest.mark.anyio
async def test_examples_without_a_broker_run_as_written() -> None:
    for block in [b for b in blocks() if "Client(" not in b]:
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
