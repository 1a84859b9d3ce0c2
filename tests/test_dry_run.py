"""Deploy from a spec and dry-run it: ``itas up --arch FILE --sim`` starts exactly the agents an
Archon config needs, on simulated models, with no pool file; ``itas ask --sim`` answers with it,
labelled simulated; ``itas ask --messages FILE`` sends a conversation. Through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from itas.deploy import simulated
from itas.spec import load_architecture
from tests.helpers import REPO

ITAS = str(Path(sys.executable).with_name("itas"))
TOGETHER = REPO / "configs" / "archon" / "gcrf_together.json"
LIMIT_S = 120


@pytest.fixture(scope="module")
def dry_stack() -> Iterator[str]:
    up = subprocess.Popen([ITAS, "up", "--arch", str(TOGETHER), "--sim", "--bind",
                           "tcp://127.0.0.1:0"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True,
                          env={k: v for k, v in os.environ.items() if "API_KEY" not in k})
    try:
        assert up.stdout is not None
        line = up.stdout.readline()
        assert line.startswith("itas up: broker"), (line, up.stderr.read() if up.stderr else "")
        assert "(simulated models)" in line
        yield line.split()[3].rstrip(";")
    finally:
        os.killpg(up.pid, signal.SIGINT)
        out, err = up.communicate(timeout=LIMIT_S)
        assert "itas up: stopped" in out and "Traceback" not in err, err


def ask(broker: str, *args: str) -> dict:
    done = subprocess.run([ITAS, "ask", *args, "--arch", str(TOGETHER), "--sim", "--broker",
                           broker, "--json", "--trace"], capture_output=True, text=True,
                          timeout=LIMIT_S, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_archon_config_runs_end_to_end_as_a_dry_run_with_no_pool_file(dry_stack: str
                                                                         ) -> None:
    answer = ask(dry_stack, "What is 6 x 7?")
    assert answer["architecture"].endswith("[simulated]")
    assert answer["text"].startswith("Simulated answer")
    services = [c["service"] for layer in answer["trace"]["layers"]
                for c in layer["components"]]
    assert services == list(simulated(load_architecture(TOGETHER)).services)
    assert all("@sim:" in s for s in services)
    # Archon's call pattern: 3 generators, one batched critic call, a ranker, a fuser
    assert answer["usage"]["calls"] == 6


def test_a_conversation_from_a_file(dry_stack: str, tmp_path: Path) -> None:
    conversation = tmp_path / "chat.json"
    conversation.write_text(json.dumps({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another one?"}]}))
    answer = ask(dry_stack, "--messages", str(conversation))
    first = answer["trace"]["layers"][0]["components"][0]["prompts"][0]
    assert [m["role"] for m in first] == ["system", "user", "assistant", "user"]
    assert first[-1]["content"] == "Another one?"


@pytest.mark.parametrize(("content", "problem"), [
    ("[]", "expected a non-empty list"),
    ('[{"role": "user", "content": 3}]', "message 1: expected"),
    ('[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]',
     "the last message must be the user's"),
    ("{not json", "not valid JSON"),
])
def test_a_bad_conversation_file_is_one_line(tmp_path: Path, content: str,
                                             problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    done = subprocess.run([ITAS, "ask", "--messages", str(path), "--broker",
                           "tcp://127.0.0.1:9"], capture_output=True, text=True,
                          timeout=LIMIT_S, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert problem in done.stderr and str(path) in done.stderr
