"""``itas ask --trace`` shows model text as written: brackets, markup-like tags and escape
sequences neither crash the renderer nor disappear nor drive the terminal. The text comes
from a real generator agent whose OpenAI-compatible server answers with it."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from itas.query import Answer
from itas.render import print_answer
from itas.techniques.base import service_name
from tests.helpers import REPO, Processes, wait_for_workers
from tests.servers.fake_llm import FakeLLMServer

NASTY = ("x = a[i] + b[j]\nclosing [/tag] and [bold]not bold[/bold] and [link=x]y[/link]\n"
         "colour \x1b[31mred\x1b[0m, bell \x07, [red]")
SHOWN = ["x = a[i] + b[j]", "[/tag]", "[bold]not bold[/bold]", "[link=x]y[/link]",
         "\\x1b[31mred\\x1b[0m", "\\x07", "[red]"]


@pytest.fixture(scope="module")
def mesh() -> Iterator[tuple[str, str]]:
    with FakeLLMServer(reply_text=NASTY) as llm:
        procs = Processes()
        base_url = llm.url + "/v1"
        try:
            broker = procs.broker()
            procs.agent(broker.endpoint, "generator", {
                "provider": "openai", "model": "fake", "base_url": base_url, "cache": False})
            procs.agent(broker.endpoint, "orchestrator")
            wait_for_workers(broker.endpoint, service_name("generator", "openai", "fake",
                                                           base_url=base_url), 1)
            wait_for_workers(broker.endpoint, "orchestrator", 1)
            yield broker.endpoint, base_url
        finally:
            procs.stop_all()


def test_itas_ask_trace_renders_model_text_literally(mesh: tuple[str, str],
                                                     tmp_path: Path) -> None:
    endpoint, base_url = mesh
    arch = tmp_path / "one.yaml"
    arch.write_text("name: one\nlayers:\n  - - {technique: generator, provider: openai, "
                    f"model: fake, base_url: '{base_url}'}}\n")
    done = subprocess.run(
        [sys.executable, "-m", "itas", "ask", "q", "--arch", str(arch), "--trace",
         "--broker", endpoint, "--timeout", "60"],
        check=False, capture_output=True, text=True, cwd=REPO, timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for piece in SHOWN:
        assert done.stdout.count(piece) >= 2, (piece, done.stdout)  # trace and answer
    assert "\x1b[31m" not in done.stdout and "\x07" not in done.stdout


def test_the_renderer_escapes_on_a_real_terminal_console_too() -> None:
    """With colours on (a terminal), model text still cannot inject markup or escapes."""
    answer = Answer(NASTY, "arch[/x]", [], {"calls": 1, "tokens": 2}, 0.1, trace={"layers": [{
        "layer": 1, "latency_s": 0.1, "tests": None, "candidates": [
            {"id": "L1.1.0", "model": "gen[/b]", "text": NASTY, "critique": "[/i] crit"}],
        "components": [{"service": "svc[/x]", "technique": "generator", "requests": 1,
                        "calls_allowed": 3, "failed": ["err [/red]"], "retried": 0,
                        "latency_s": 0.1, "usage": {"calls": 1, "tokens": 2},
                        "parse": [{"fallback": "empty_text", "detail": "d [/u]"}],
                        "notes": [], "problems": ["p [/y]"]}]}]})
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=200)
    print_answer(answer, trace=True, console=console)
    text = out.getvalue()
    for piece in [*SHOWN, "arch[/x]", "gen[/b]", "[/i] crit", "svc[/x]", "err [/red]",
                  "d [/u]", "p [/y]"]:
        assert piece in text, piece
    assert "\x1b[31mred" not in text  # rich's own colour codes differ from the model's
