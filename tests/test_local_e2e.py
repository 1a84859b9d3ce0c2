"""The main job on the embedded model: `itas up` + `itas ask` with generate-critique-rank-fuse."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from itas.agents.providers.local import llama_cpp_available
from itas.plan import estimate_cost
from itas.spec import load_architecture
from tests.helpers import REPO, Processes

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(not llama_cpp_available(),
                       reason="llama-cpp-python is not installed: pip install 'itas[local]'"),
]
ARCH = REPO / "configs" / "architectures" / "local_gcrf.yaml"


def test_up_then_ask_answers_through_every_layer(procs: Processes) -> None:
    up = procs.spawn("up", "--bind", "tcp://127.0.0.1:0")
    line = up.stdout.readline()
    match = re.search(r"broker (tcp://\S+);", line)
    assert match, (line, up.stderr.read() if up.poll() is not None else "")
    broker = match.group(1)
    model_port = re.search(r"model server http://127.0.0.1:(\d+)", line).group(1)
    ask = procs.spawn("ask", "Name a primary colour.", "--arch", str(ARCH), "--trace", "--json",
                      "--broker", broker, "--timeout", "900")
    out, err = ask.communicate(timeout=900)
    assert ask.returncode == 0, err
    answer = json.loads(out)
    layers = answer["trace"]["layers"]
    assert [len(layer["candidates"]) for layer in layers] == [3, 3, 2, 1]
    assert [[c["service"] for c in layer["components"]] for layer in layers] == [
        ["generator@local:smollm2"], ["critic@local:smollm2"], ["ranker@local:smollm2"],
        ["fuser@local:smollm2"]]
    assert all(not c["failed"] for layer in layers for c in layer["components"])
    assert all(c["critique"] for c in layers[1]["candidates"])
    cost = estimate_cost(load_architecture(ARCH))
    assert cost.min_calls_per_query <= answer["usage"]["calls"]
    assert answer["usage"]["completion_tokens"] > 0
    assert answer["text"].strip() and answer["text"] == layers[-1]["candidates"][0]["text"]
    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=60) == 0
    assert "itas up: stopped" in up.stdout.read()
    assert not _processes_mentioning(f"--port {model_port}")
    assert not _processes_mentioning(broker)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if text in cmdline:
            found.append(int(proc.name))
    return found
