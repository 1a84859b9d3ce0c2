"""``itas eval`` on the embedded model: the stack ``itas up`` runs (broker, llama.cpp model
server, agent pool, orchestrator; ``itas.stack.run_stack``) and the CLI as a subprocess,
on a few GSM8K questions with a one-sample architecture on short answers (the packaged
local_gcrf makes 8+ calls a question, minutes on two cores; the eval path is the same).

SmolLM2-135M rarely solves GSM8K, so the test checks that every question is answered,
scored and accounted for, not how well.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import anyio
import pytest
import yaml

from itas.spec import load_architecture
from itas.stack import run_stack
from tests.helpers import DATA_DIR, REPO

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(not HAVE_LLAMA_CPP,
                       reason="llama-cpp-python is not installed (pip install 'itas[local]')"),
    pytest.mark.anyio,
]

LOCAL_SINGLE = {"name": "local_single", "description": "one short greedy answer from SmolLM2",
                "layers": [[{"technique": "generator", "provider": "local", "model": "smollm2",
                             "temperature": 0.0, "max_tokens": 32}]]}
QUESTIONS = 3
EVAL_TIMEOUT_S = 180.0


def pool_for(arch_path: Path, pool_path: Path) -> Path:
    """One agent per service the architecture calls; no response cache, so the model runs."""
    arch = load_architecture(arch_path)
    agents = [{"kind": c.technique, "settings": {"provider": c.provider, "model": c.model,
                                                 "cache": False}}
              for c in {c.service_name: c for _, _, c in arch.components()}.values()]
    pool_path.write_text(yaml.safe_dump({"agents": agents}))
    return pool_path


async def test_eval_runs_on_the_embedded_model(tmp_path: Path) -> None:
    arch = tmp_path / "local_single.yaml"
    arch.write_text(yaml.safe_dump(LOCAL_SINGLE))
    pool = pool_for(arch, tmp_path / "local_pool.yaml")
    out = tmp_path / "out"
    async with run_stack(pool, bind="tcp://127.0.0.1:0") as stack:
        assert stack.model_url is not None
        with anyio.fail_after(EVAL_TIMEOUT_S):
            done = await anyio.run_process(
                [sys.executable, "-m", "itas", "eval", "--broker", stack.broker, "--arch",
                 str(arch), "--benchmark", "gsm8k", "--limit", str(QUESTIONS), "--out",
                 str(out), "--data-dir", str(DATA_DIR), "--concurrency", "2"],
                cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == QUESTIONS
    for r in records:
        assert r["error"] is None, r["error"]
        assert isinstance(r["answer"], str) and r["answer"].strip()
        # One call, plus a re-ask if the model said nothing; at most 32 tokens each.
        assert 1 <= r["calls"] <= 3 and r["latency_s"] > 0
        assert 0 < r["usage"]["completion_tokens"] <= 32 * r["calls"]
        assert r["score"] in (0.0, 1.0) and r["correct"] is (r["score"] == 1.0)
        assert r["cost_usd"] == 0.0  # the embedded model is free
    summary = json.loads((out / "summary.json").read_text())["architectures"][0]
    assert summary["architecture"] == "local_single" and summary["n"] == QUESTIONS
    assert summary["calls"] == sum(r["calls"] for r in records) and summary["errors"] == 0
    assert "local_single" in done.stdout.decode()


async def test_a_benchmark_of_ones_own_on_the_embedded_model(tmp_path: Path) -> None:
    """The chemical-symbols benchmark written from scratch in tests/test_eval_cli.py, a few
    questions on SmolLM2: every question answered, read by the exact scorer, accounted."""
    from tests.test_eval_cli import element_benchmark

    definition = element_benchmark(tmp_path)
    arch = tmp_path / "local_single.yaml"
    arch.write_text(yaml.safe_dump(LOCAL_SINGLE))
    pool = pool_for(arch, tmp_path / "local_pool.yaml")
    out = tmp_path / "out"
    async with run_stack(pool, bind="tcp://127.0.0.1:0") as stack:
        with anyio.fail_after(EVAL_TIMEOUT_S):
            done = await anyio.run_process(
                [sys.executable, "-m", "itas", "eval", "--broker", stack.broker, "--arch",
                 str(arch), "--benchmark", str(definition), "--limit", str(QUESTIONS),
                 "--out", str(out), "--concurrency", "2"], cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == QUESTIONS and {r["benchmark"] for r in records} == {"elements"}
    for r in records:
        assert r["error"] is None and isinstance(r["answer"], str) and r["answer"].strip()
        assert r["detail"].startswith(("read ", "no answer found"))  # the exact scorer's words
        assert r["score"] in (0.0, 1.0)
    assert "itas eval: elements" in done.stdout.decode()
