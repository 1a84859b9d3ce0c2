"""The first hour, as a new user meets it (issue 15): options where users look for them,
waits that show life, output that tells the truth.

Driven as a user drives it: ``itas ...`` in subprocesses, and in a pseudo-terminal
(pexpect) where a terminal changes what is shown. Stacks bind free loopback ports.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pexpect
import pytest
import typer.main
from rich.console import Console

import itas
from itas.agents.pool import PoolEntry
from itas.cli import app
from itas.lifecycle import child_environment
from itas.logs import LOG_LEVEL_ENV, setup_logging
from itas.orchestrator.inprocess import InProcessCaller
from itas.orchestrator.runner import Orchestrator
from itas.progress import answered_line
from itas.query import Answer
from itas.render import trace_tree
from itas.spec import parse_architecture
from tests.helpers import REPO
from tests.servers.fake_llm import FakeLLMServer

ITAS = shutil.which("itas", path=str(Path(sys.executable).parent)) or "itas"
LIMIT_S = 90
SLOW_S = 1.5  # the slow sim model's latency: long enough for the waiting line to tick
ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|[\r\x07]")


def itas_run(*args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ITAS, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=LIMIT_S, check=False)


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1 and lines[0].startswith("itas: error: "), out.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def plain(text: str) -> str:
    return ANSI_RE.sub("", text)


CSI_RE = re.compile(r"\x1b\[([0-?]*)([ -/]*)([@-~])|\x1b[()][0-9A-B]|([\r\n\x07])")


def screen(output: str) -> list[str]:
    """The lines a terminal would show after ``output``: a small emulator of what rich and
    the logging write (text, CR, LF, erase line, cursor up; other sequences ignored)."""
    lines, row, col, at = [""], 0, 0, 0
    for match in CSI_RE.finditer(output + "\x07"):
        for char in output[at:match.start()]:  # plain text overwrites at the cursor
            line = lines[row].ljust(col)
            lines[row] = line[:col] + char + line[col + 1:]
            col += 1
        at = match.end()
        params, _, final, control = match.groups()
        if control == "\n":
            row += 1
            col = 0  # the pty turns LF into CR LF
            if row == len(lines):
                lines.append("")
        elif control == "\r":
            col = 0
        elif final == "K":
            lines[row] = "" if params == "2" else lines[row][:col]
        elif final == "A":
            row = max(0, row - int(params or 1))
    return [line.rstrip() for line in lines]


# -- options where users look for them -------------------------------------------------------

def test_version_is_the_package_version() -> None:
    out = itas_run("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"itas {itas.__version__}"


def _verbs() -> Iterator[tuple[str, Any]]:
    def walk(group: Any, path: str) -> Iterator[tuple[str, Any]]:
        for name, sub in group.commands.items():
            if hasattr(sub, "commands"):
                yield from walk(sub, f"{path} {name}")
            else:
                yield f"{path} {name}".strip(), sub

    yield from walk(typer.main.get_command(app), "")


def test_every_verb_takes_log_level_from_its_option_and_the_environment() -> None:
    verbs = dict(_verbs())
    assert {"up", "ask", "eval", "search", "broker", "agents", "cache stats",
            "model serve"} <= set(verbs)
    for path, command in verbs.items():
        options = {o: p for p in command.params for o in getattr(p, "opts", [])}
        assert "--log-level" in options, path
        assert options["--log-level"].envvar == LOG_LEVEL_ENV, path


def test_a_bad_log_level_is_one_line_naming_option_and_variable() -> None:
    line = one_error_line(itas_run("check", "sim_gcrf", "--log-level", "loud"))
    assert "--log-level" in line and "'loud'" in line and "debug, info" in line
    line = one_error_line(itas_run("check", "sim_gcrf", env={LOG_LEVEL_ENV: "LOUD"}))
    assert LOG_LEVEL_ENV in line


def test_the_level_reaches_every_child_through_the_environment(monkeypatch: Any) -> None:
    monkeypatch.setenv(LOG_LEVEL_ENV, "error")  # restored (or removed) after the test
    setup_logging("debug")
    try:
        assert child_environment()[LOG_LEVEL_ENV] == "debug"
    finally:
        setup_logging("warning")


def test_log_level_info_shows_an_agents_start_line_and_warning_hides_it() -> None:
    """``itas agent`` logs its settings at INFO: seen with the option, the variable or -v."""
    port = free_port()
    for extra, env, shown in ((["--log-level", "info"], {}, True),
                              ([], {LOG_LEVEL_ENV: "INFO"}, True),
                              (["-v"], {}, True),
                              ([], {LOG_LEVEL_ENV: "warning"}, False)):
        proc = subprocess.Popen([ITAS, "agent", "--kind", "echo", "--broker",
                                 f"tcp://127.0.0.1:{port}", *extra], cwd=REPO,
                                env={**os.environ, **env}, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            _, err = proc.communicate(timeout=4)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        assert ("agent echo, settings {}" in err) is shown, (extra, env, err)


@pytest.mark.parametrize("variables", [
    {"ITAS_BIND": "{a}"}, {"ITAS_BROKER": "{a}"}, {"ITAS_BIND": "{a}", "ITAS_BROKER": "{b}"}])
def test_the_broker_binds_where_the_environment_says(variables: dict[str, str]) -> None:
    a, b = free_port(), free_port()
    env = {k: v.format(a=f"tcp://127.0.0.1:{a}", b=f"tcp://127.0.0.1:{b}")
           for k, v in variables.items()}
    proc = subprocess.Popen([ITAS, "broker"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**{k: v for k, v in os.environ.items()
                                    if k not in ("ITAS_BIND", "ITAS_BROKER")}, **env})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"itas broker listening on tcp://127.0.0.1:{a}", line
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=20)


def test_a_bad_bind_variable_is_one_line() -> None:
    line = one_error_line(itas_run("broker", env={"ITAS_BIND": "tcp://nowhere"}))
    assert "--bind" in line and "ITAS_BIND" in line


# -- waits that show life, in a terminal -----------------------------------------------------

@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``itas up`` in a pseudo-terminal with one slow simulated generator; yields the broker
    endpoint and an architecture that uses it."""
    folder = tmp_path_factory.mktemp("slow")
    pool = folder / "pool.yaml"
    pool.write_text("agents:\n  - kind: generator\n    settings: {provider: sim, model: slow, "
                    f"skill: 0.8, latency: {{mean_s: {SLOW_S}, jitter_s: 0.0}}}}\n")
    arch = folder / "slow.yaml"
    arch.write_text("name: slow_single\nlayers:\n"
                    "  - - {technique: generator, provider: sim, model: slow}\n")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    up = pexpect.spawn(ITAS, ["up", "--pool", str(pool), "--bind", endpoint], cwd=str(REPO),
                       env={**os.environ, "COLUMNS": "200"}, encoding="utf-8",
                       timeout=LIMIT_S, dimensions=(40, 200))
    try:
        # Each part as it becomes ready, then the summary line.
        up.expect(r"itas up: broker listening on (\S+)")
        assert up.match.group(1) == endpoint
        up.expect(r"agent process\(es\) started; waiting for 2 service\(s\)")
        ready = set()
        for _ in range(2):
            up.expect(r"itas up: ready: (\S+) \(")
            ready.add(up.match.group(1))
        assert ready == {"generator@sim:slow", "orchestrator"}
        up.expect(r"itas up: broker \S+; services: ")
        yield endpoint, arch
    finally:
        up.kill(signal.SIGINT)
        up.expect([r"itas up: stopped", pexpect.EOF], timeout=30)
        up.close(force=True)


def _ask_in_terminal(*args: str) -> str:
    child = pexpect.spawn(ITAS, ["ask", *args], cwd=str(REPO), encoding="utf-8",
                          env={**os.environ, "COLUMNS": "200"}, timeout=LIMIT_S,
                          dimensions=(40, 200))
    output = child.read()
    child.close()
    assert child.exitstatus == 0, output
    return output


def test_ask_in_a_terminal_shows_the_wait_before_the_answer(slow_stack: tuple[str, Path]
                                                            ) -> None:
    endpoint, arch = slow_stack
    output = plain(_ask_in_terminal("What is 6 x 7?", "--arch", str(arch), "--broker",
                                    endpoint))
    waiting = output.find("itas ask: waiting 0 s; plan: 1..3 calls in 1 layer(s) "
                          "(1 if every output parses)")
    ticked = output.find("itas ask: waiting 1 s")
    answered = output.find("itas ask: answered in")
    text = output.find("Simulated answer")
    assert 0 <= waiting < ticked < answered < text, output
    assert "none from the response cache" in output
    assert "simulated model: its text is filler" in output


def test_ask_in_a_terminal_shows_each_layer_as_it_finishes(slow_stack: tuple[str, Path],
                                                           tmp_path: Path) -> None:
    """Two slow layers: the status line names layer 1 as done while layer 2 still runs (the
    orchestrator's per-layer events arrive as partial replies), before the answer."""
    endpoint, _ = slow_stack
    arch = tmp_path / "two.yaml"
    arch.write_text("name: slow_two\nlayers:\n"
                    "  - - {technique: generator, provider: sim, model: slow}\n"
                    "  - - {technique: generator, provider: sim, model: slow}\n")
    output = plain(_ask_in_terminal("What is 6 x 7?", "--arch", str(arch), "--broker",
                                    endpoint))
    layer_done = output.find("layer 1 of 2 done, 1 candidate(s)")
    answered = output.find("itas ask: answered in")
    assert 0 <= layer_done < answered, output


def test_ask_json_in_a_terminal_is_one_clean_json_document(slow_stack: tuple[str, Path]
                                                           ) -> None:
    endpoint, arch = slow_stack
    output = _ask_in_terminal("What is 6 x 7?", "--arch", str(arch), "--broker", endpoint,
                              "--json")
    document = json.loads(output.replace("\r\n", "\n"))  # the terminal's line ends only
    assert document["text"].startswith("Simulated answer")
    assert "\x1b" not in output


def test_ask_through_pipes_prints_only_the_answer_on_stdout(slow_stack: tuple[str, Path]
                                                            ) -> None:
    endpoint, arch = slow_stack
    out = itas_run("ask", "What is 6 x 7?", "--arch", str(arch), "--broker", endpoint)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Simulated answer") and "itas ask" not in out.stdout
    assert "\x1b" not in out.stderr and "waiting" not in out.stderr  # no live line in a pipe
    assert out.stderr.startswith("itas ask: answered in"), out.stderr
    quiet = itas_run("ask", "What is 6 x 7?", "--arch", str(arch), "--broker", endpoint, "-q")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


# -- output that tells the truth -------------------------------------------------------------

UNPARSEABLE = "Hmm, all of these responses have their merits."


def _traced(mode: str, reply_text: str = UNPARSEABLE) -> Answer:
    """A generator and a ranker on an OpenAI-compatible server whose every reply is
    ``reply_text``: candidates appear, and no ranking can be read from them."""
    with FakeLLMServer(reply_text=reply_text) as llm:
        base_url = llm.url + "/v1"
        llm_settings = {"provider": "openai", "model": "fake", "base_url": base_url,
                        "cache": False}
        arch = parse_architecture({"name": "gr", "final": "first", "layers": [
            [{"technique": "generator", "provider": "openai", "model": "fake",
              "base_url": base_url, "samples": 3}],
            [{"technique": "ranker", "provider": "openai", "model": "fake",
              "base_url": base_url, "top_k": 2, "mode": mode}]]}, "test")

        async def main() -> dict[str, Any]:
            async with InProcessCaller([PoolEntry("generator", 1, llm_settings),
                                        PoolEntry("ranker", 1, llm_settings)]) as caller:
                return await Orchestrator(caller).run(
                    arch, [{"role": "user", "content": "What is 6 x 7?"}], trace=True)

        return Answer.from_reply(anyio.run(main))


def _rendered(answer: Answer) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(trace_tree(answer))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    return text


@pytest.mark.parametrize("mode", ["listwise", "pairwise"])
def test_an_unparseable_ranking_is_labelled_a_fallback_with_no_scores(mode: str) -> None:
    answer = _traced(mode)
    assert answer.trace is not None
    ranked = answer.trace["layers"][1]["candidates"]
    assert len(ranked) == 2
    assert all(c.get("fallback") == "input order" and "score" not in c for c in ranked)
    shown = _rendered(answer)
    ranked_lines = [line for line in shown.splitlines() if "(generator@openai:fake" in line
                    and "fallback: input order" in line]
    assert len(ranked_lines) == 2, shown
    assert not re.search(r"\bscore\b|\brank \d", shown), shown
    assert "fallback: input order" in shown


def test_a_readable_ranking_keeps_its_ranks() -> None:
    answer = _traced("listwise", "Ranking: [3] > [1] > [2]")
    shown = _rendered(answer)
    assert "rank 1" in shown and "rank 2" in shown and "fallback" not in shown


def test_answered_line_names_cached_calls_truncation_and_stops() -> None:
    def answer(usage: dict[str, Any], meta: dict[str, Any], model: str = "fuser@openai:x",
               stopped: dict[str, Any] | None = None) -> Answer:
        return Answer("t", "a", [{"id": "c", "text": "t", "model": model, "meta": meta}],
                      usage, 2.0, None, stopped)

    line = answered_line(answer({"calls": 16, "cached_calls": 15}, {"finish_reason": "stop"}))
    assert "16 call(s), 15 of them replayed from the response cache" in line
    assert "--no-cache" in line and "cut" not in line and "simulated" not in line
    for finish in ("length", "max_tokens"):
        assert "cut at the token limit" in answered_line(
            answer({"calls": 1}, {"finish_reason": finish}))
    assert "simulated model" in answered_line(answer({"calls": 1}, {}, "fuser@sim:strong"))
    assert "stopped early: budget" in answered_line(
        answer({"calls": 1}, {}, stopped={"layer": 2, "reason": "budget"}))


LIVE_SCRIPT = """
import logging, sys, time
from rich.console import Console
from rich.progress import Progress
from itas.logs import setup_logging
setup_logging("warning")
with Progress(console=Console(stderr=True)) as progress:
    task = progress.add_task("trials", total=4)
    for i in range(4):
        time.sleep(0.3)
        logging.getLogger("itas.agent").warning("a warning from the parent %d", i)
        sys.stderr.write("a line a child wrote %d\\n" % i)  # as itas.agents.pool copies them
        progress.advance(task)
"""


def test_log_lines_and_childrens_lines_never_land_inside_a_live_progress_display() -> None:
    child = pexpect.spawn(sys.executable, ["-c", LIVE_SCRIPT], cwd=str(REPO), encoding="utf-8",
                          timeout=LIMIT_S, dimensions=(40, 120))
    output = child.read()
    child.close()
    assert child.exitstatus == 0, output
    # What the terminal shows, line by line: every log line and child line whole, alone.
    lines = screen(output)
    for i in range(4):
        parent = [line for line in lines if f"a warning from the parent {i}" in line]
        assert len(parent) == 1 and re.fullmatch(
            rf"\d{{4}}-\d\d-\d\d [\d:,]+ itas.agent WARNING a warning from the parent {i}\s*",
            parent[0]), parent
        from_child = [line for line in lines if f"a line a child wrote {i}" in line]
        assert len(from_child) == 1 and from_child[0].strip() == f"a line a child wrote {i}"


def test_eval_json_is_one_document_with_the_tables_on_stderr(slow_stack: tuple[str, Path],
                                                             tmp_path: Path) -> None:
    from tests.helpers import DATA_DIR

    endpoint, arch = slow_stack
    out = itas_run("eval", "--arch", str(arch), "--benchmark", "gsm8k", "--limit", "2",
                   "--concurrency", "2", "--data-dir", str(DATA_DIR), "--out",
                   str(tmp_path / "run"), "--broker", endpoint, "--json")
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert [a["architecture"] for a in document["architectures"]] == ["slow_single"]
    assert "itas eval: gsm8k" in out.stderr  # the table went to stderr


def test_down_without_a_detached_stack_is_one_line(tmp_path: Path) -> None:
    line = one_error_line(itas_run("down", "--broker", f"tcp://127.0.0.1:{free_port()}",
                                   env={"ITAS_RUNTIME_DIR": str(tmp_path)}))
    assert "no stack started with 'itas up --detach'" in line


def test_a_detached_stack_that_cannot_start_says_why_in_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        out = itas_run("up", "--pool", "echo", "--detach", "--bind", f"tcp://127.0.0.1:{port}",
                       env={"ITAS_RUNTIME_DIR": str(tmp_path)})
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    started, error = out.stderr.strip().splitlines()  # the log's name, then why
    assert started.startswith("itas up: starting in the background; its log: ")
    assert error.startswith("itas: error: --detach: the stack did not start: ")
    assert f"--bind tcp://127.0.0.1:{port}: cannot bind" in error
    assert not list(tmp_path.glob("stack-*.json"))


def test_the_log_level_reaches_the_agents_a_stack_starts(tmp_path: Path) -> None:
    """``itas up --log-level info``: the agent child logs its INFO start line into the
    detached stack's log (the level travels in ITAS_LOG_LEVEL, not on command lines)."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    env = {"ITAS_RUNTIME_DIR": str(tmp_path)}
    up = itas_run("up", "--pool", "echo", "--detach", "--bind", endpoint, "--log-level",
                  "info", env=env)
    try:
        assert up.returncode == 0, up.stderr
        log = Path(re.search(r"log (\S+)\);", up.stdout).group(1))  # type: ignore[union-attr]
        assert "itas.agent INFO agent echo, settings {}" in log.read_text()
        assert "--log-level" not in log.read_text()
    finally:
        down = itas_run("down", "--broker", endpoint, env=env)
    assert down.returncode == 0, down.stderr


def test_search_json_is_one_document(tmp_path: Path) -> None:
    import yaml

    from tests.test_search_run import search_config

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(search_config()))
    out = itas_run("search", str(config), "--out", str(tmp_path / "out"), "--no-progress",
                   "--json")
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert document["files"]["best_spec"] == str(tmp_path / "out" / "best.yaml")
    assert document["key_legend"].startswith("key: m = models used")
