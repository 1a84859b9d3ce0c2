"""Whole searches over a real broker and sim agent processes: one that completes and
writes every output (and whose held-out score the recorded commands reproduce exactly),
one killed part-way (SIGKILL) and resumed without evaluating any architecture twice,
reusing an agent that was already running (its settings checked), one refused because a
running agent has other settings, and one stopped by Ctrl-C and resumed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from itas.client import Client
from itas.errors import ConfigError
from itas.search.config import parse_search_config
from itas.search.run import run_search, run_search_cli
from itas.search.store import STORE_FILE, Record
from itas.spec import load_architecture
from tests.helpers import DATA_DIR, REPO, Processes, wait_for_workers

AGENT_HEARTBEAT = "1.0"  # what the supervisor's agents use; the test broker must match


def search_config(**overrides: object) -> dict:
    data = {
        "name": "tiny",
        "models": [
            {"name": "strong", "provider": "sim", "model": "strong",
             "settings": {"skill": 0.75, "latency": 0.0, "cache": False}},
            {"name": "weak", "provider": "sim", "model": "weak",
             "settings": {"skill": 0.4, "latency": 0.0, "cache": False}},
        ],
        "techniques": ["ranker", "fuser"],
        "space": {"models": [1, 2], "samples": [1, 2], "ranker_top_k": [1, 2],
                  "fusion_layers": [0, 1], "fusers": [1, 1]},
        "budget": {"calls_per_query": 6},
        "benchmark": {"name": "gsm8k", "data_dir": str(DATA_DIR), "search": 6, "confirm": 12,
                      "heldout": 6},
        "search": {"trials": 3, "initial_random": 2, "parallel": 2, "strategies": ["bo", "random"],
                   "baseline_trials": 2, "rescore_top": 2, "seed": 3},
        "evaluation": {"concurrency": 4, "timeout_s": 60},
    }
    data.update(overrides)
    return data


def trial_records(out: Path) -> list[Record]:
    lines = (out / STORE_FILE).read_text().splitlines()[1:]
    return [Record.from_dict(json.loads(line)) for line in lines]


def child_pids() -> set[int]:
    """Live (not zombie) child processes of this process."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(os.getpid()) and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


@pytest.mark.anyio
async def test_search_on_the_mesh_writes_every_output(tmp_path: Path) -> None:
    before = child_pids()
    config = parse_search_config(search_config(), "tiny.yaml")
    summary = await run_search(config, tmp_path, resume=False, show_progress=False)

    records = trial_records(tmp_path)
    kinds = [r.kind for r in records]
    assert kinds.count("ranking") == 2
    assert len([r for r in records if r.strategy == "bo"]) == 3
    assert len([r for r in records if r.strategy == "random"]) == 2
    evaluated = [r for r in records if r.kind == "trial" and not r.reused]
    assert all(r.result.calls > 0 and r.result.n == 6 for r in evaluated)
    assert all(r.calls_per_query <= 6 for r in records if r.kind == "trial")
    assert len({r.key for r in evaluated}) == len(evaluated)

    best = load_architecture(tmp_path / "best.yaml")
    assert best.name == summary["best"]["key"]
    assert (tmp_path / "convergence.png").stat().st_size > 10_000
    assert "ITAS leaderboard" in (tmp_path / "leaderboard.txt").read_text()
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["ranking"][0]["model"] == "strong"
    assert set(data["strategies"]) == {"bo", "random"}
    assert data["best_single_model"]["model"] in ("strong", "weak")
    assert len(data["heldout"]) == 2 and len(data["single_models_heldout"]) == 2
    assert data["calls"]["naive"] >= data["calls"]["made"] > 0
    curve = data["strategies"]["bo"]["convergence"]
    assert curve["evaluations"] == [0, 1, 2, 3]
    assert curve["best_score"] == sorted(curve["best_score"])
    assert len(curve["best_stderr"]) == 4 and all(se >= 0 for se in curve["best_stderr"])
    assert child_pids() <= before  # broker and agents the search started are gone
    # Noise-aware: every score with its standard error; the best chosen on the confirm
    # questions among the finalists; the comparison with the best single model paired.
    assert data["best"]["chosen_on"] == "confirm" and data["finalists"]
    assert data["finalists"][0]["key"] == data["best"]["key"]
    assert all(f["confirm_questions"] > 0 and f["confirm_stderr"] >= 0
               for f in data["finalists"])
    assert data["best"]["heldout_stderr"] > 0 and data["ranking"][0]["stderr"] > 0
    assert "alone on held-out" in data["versus_best_single_on_heldout"]["statement"] or \
        "single model" in data["versus_best_single_on_heldout"]["statement"]
    confirms = [r for r in records if r.kind == "confirm"]
    assert confirms and {r.split for r in confirms} == {"confirm"}
    assert all(r.result.n in (4, 12) for r in confirms)  # 12 questions in 3 rounds
    board = (tmp_path / "leaderboard.txt").read_text()
    assert "±" in board and "(best)" in board and "confirm" in board
    assert data["benchmark"]["selection_tests"] == "visible"
    assert data["cost"] == {"usd": 0.0, "known": True}


def test_recorded_commands_reproduce_the_heldout_score(tmp_path: Path,
                                                       procs: Processes) -> None:
    """best.yaml + best.pool.yaml + the summary's commands give the very held-out score the
    search reported (the issue: the README's pool scored 0.880 where the search said
    0.827)."""
    import shlex

    summary = run_search_cli_in(tmp_path, search_config())
    reproduce = summary["reproduce"]
    pool = yaml.safe_load(Path(reproduce["pool"]).read_text())
    skills = {a["settings"]["model"]: a["settings"]["skill"] for a in pool["agents"]
              if a["settings"].get("provider") == "sim"}
    assert skills and all(skills[m] == {"strong": 0.75, "weak": 0.4}[m] for m in skills)
    up = procs.spawn("up", "--pool", reproduce["pool"], "--bind", "tcp://127.0.0.1:0")
    line = up.stdout.readline() if up.stdout else ""
    match = re.search(r"broker (tcp://\S+);", line)
    assert match, line + (up.stderr.read() if up.stderr else "")
    command = shlex.split(reproduce["commands"][1])
    assert command[:2] == ["itas", "eval"]
    command[command.index("--broker") + 1] = match.group(1)
    done = subprocess.run([sys.executable, "-m", "itas", *command[1:], "--out",
                           str(tmp_path / "again")], capture_output=True, text=True,
                          timeout=120, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    again = json.loads((tmp_path / "again" / "summary.json").read_text())["architectures"][0]
    assert again["n"] == reproduce["heldout_questions"]
    assert again["score"] == reproduce["expected_heldout_score"]
    assert again["score"] == summary["best"]["heldout_score"]


def run_search_cli_in(out: Path, data: dict) -> dict:
    config_path = out / "search.yaml"
    config_path.write_text(yaml.safe_dump(data))
    return run_search_cli(config_path, out_dir=out / "out", progress=False)


def test_a_running_agent_with_other_settings_is_refused(tmp_path: Path,
                                                        procs: Processes) -> None:
    broker = procs.broker("tcp://127.0.0.1:0", "--heartbeat", AGENT_HEARTBEAT)
    other = {"provider": "sim", "model": "strong", "skill": 0.3, "latency": 0.0,
             "cache": False}
    procs.agent(broker.endpoint, "generator", other, "--heartbeat", AGENT_HEARTBEAT)
    wait_for_workers(broker.endpoint, "generator@sim:strong", 1)
    with pytest.raises(ConfigError, match=r"generator@sim:strong .* answer differently"):
        run_search_cli_in(tmp_path, search_config(deploy={"broker": broker.endpoint}))
    assert [r.kind for r in _safe_records(tmp_path / "out")] == []  # nothing measured


@pytest.mark.parametrize("progress,whole_group", [("--no-progress", False), ("--progress", True)],
                         ids=["kill-to-the-search", "ctrl-c-in-a-terminal"])
def test_ctrl_c_stops_the_search_cleanly_and_resume_finishes_it(tmp_path: Path, progress: str,
                                                               whole_group: bool) -> None:
    """SIGINT to the search alone, and as a terminal's Ctrl-C sends it: to the whole
    foreground process group, the search's children included, with progress shown."""
    data = search_config(models=[{"name": m, "provider": "sim", "model": m,
                                  "settings": {"skill": s, "latency": 0.03, "cache": False}}
                                 for m, s in (("strong", 0.75), ("weak", 0.4))])
    config_path = tmp_path / "search.yaml"
    config_path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, "-m", "itas", "search", str(config_path), "--out", str(out),
         progress], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
        preexec_fn=None)
    try:
        deadline = time.monotonic() + 60
        while not any(r.kind == "trial" for r in _safe_records(out)):
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "the search made no progress"
            time.sleep(0.05)
        ours = descendants(child.pid)
        assert ours, "the search started no processes"
        if whole_group:
            os.killpg(child.pid, signal.SIGINT)
        else:
            child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert child.returncode == 130, err
    assert "Traceback" not in err and "UnboundLocalError" not in err
    assert "search stopped by SIGINT" in err and "--resume" in err
    assert not (out / "summary.json").exists()
    assert not [p for p in ours if Path(f"/proc/{p}").exists() and not _zombie(p)]
    summary = run_search_cli(config_path, resume=True, out_dir=out, progress=False)
    assert summary["best"]["key"] and (out / "summary.json").exists()


def test_a_search_on_a_benchmark_of_ones_own_through_the_cli(tmp_path: Path) -> None:
    """The chemical-symbols benchmark (tests/test_eval_cli.py), searched with `itas search`:
    a config beside a YAML definition beside its data, relative paths all the way."""
    from tests.test_eval_cli import element_benchmark

    element_benchmark(tmp_path)
    data = search_config(benchmark={"name": "elements.yaml", "search": 8, "confirm": 8,
                                    "heldout": 8})
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(data))
    done = subprocess.run([sys.executable, "-m", "itas", "search", "search.yaml", "--out",
                           "out", "--no-progress"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=240, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["benchmark"]["name"] == "elements"
    assert summary["benchmark"]["identity"]["definition"]["scorer"] == "exact"
    assert summary["benchmark"]["heldout_questions"] == 8
    assert load_architecture(tmp_path / "out" / "best.yaml").name == summary["best"]["key"]
    command = summary["reproduce"]["commands"][1]
    copied = yaml.safe_load((tmp_path / "out" / "benchmark.yaml").read_text())
    assert f"--benchmark {tmp_path / 'out' / 'benchmark.yaml'}" in command
    assert copied["name"] == "elements" and copied["data"] == str(tmp_path / "elements.jsonl")
    assert "best architecture:" in done.stdout


def descendants(pid: int) -> set[int]:
    found, frontier = set(), {pid}
    while frontier:
        parent = frontier.pop()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            child = int(stat.parent.name)
            if fields[1] == str(parent) and child not in found:
                found.add(child)
                frontier.add(child)
    return found


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_killed_search_resumes_without_repeating_a_trial(tmp_path: Path,
                                                         procs: Processes) -> None:
    broker = procs.broker("tcp://127.0.0.1:0", "--heartbeat", AGENT_HEARTBEAT)
    already = {"provider": "sim", "model": "strong", "skill": 0.75, "latency": 0.02,
               "cache": False}
    procs.agent(broker.endpoint, "generator", already, "--heartbeat", AGENT_HEARTBEAT,
                "--name", "already-running")
    wait_for_workers(broker.endpoint, "generator@sim:strong", 1)
    data = search_config(
        models=[{"name": m, "provider": "sim", "model": m,
                 "settings": {"skill": s, "latency": 0.02, "cache": False}}
                for m, s in (("strong", 0.75), ("weak", 0.4))],
        search={"trials": 6, "initial_random": 2, "parallel": 1, "strategies": ["bo"],
                "rescore_top": 1, "seed": 1},
        deploy={"broker": broker.endpoint})
    config_path = tmp_path / "search.yaml"
    config_path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    script = ("from itas.search.run import run_search_cli; "
              f"run_search_cli({str(config_path)!r}, out_dir={str(out)!r}, progress=False)")
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while sum(1 for r in _safe_records(out) if r.strategy == "bo") < 2:
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "the search made no progress"
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the search and the agents it started
        child.wait()
        if child.stderr:
            child.stderr.close()
    done_before = [r for r in trial_records(out) if r.strategy == "bo"]
    assert 2 <= len(done_before) < 6
    for service in ("orchestrator", "ranker@sim:strong", "fuser@sim:strong",
                    "generator@sim:weak"):
        wait_for_workers(broker.endpoint, service, 0)  # the killed agents' heartbeats lapse

    resumed = run_search_cli(config_path, resume=True, out_dir=out, progress=False)
    assert {"service": "generator@sim:strong", "settings_verified": True} in resumed[
        "reused_services"]

    bo = [r for r in trial_records(out) if r.strategy == "bo"]
    assert [r.index for r in bo] == list(range(1, 7))
    assert bo[:len(done_before)] == done_before  # kept as they were, not redone
    keys = [r.key for r in trial_records(out) if r.kind == "trial" and not r.reused]
    assert len(keys) == len(set(keys)), "an architecture was evaluated twice"
    single = "m1-s1-c0-r0-f0x1-v0-u0-mv0"  # the best model alone, measured by the ranking
    assert load_architecture(out / "best.yaml").name in [*keys, single]
    with Client(broker.endpoint) as client:
        workers = client.status()["workers"]
    # The agent that was running is still there and was the only one of its service;
    # everything the search started was stopped.
    assert [w["name"] for w in workers] == ["already-running"]


def _safe_records(out: Path) -> list[Record]:
    try:
        return trial_records(out)
    except (OSError, ValueError, KeyError):
        return []


@pytest.mark.anyio
async def test_a_bad_model_setting_fails_fast_naming_it(tmp_path: Path) -> None:
    data = search_config()
    data["models"][1]["settings"] = {"skil": 0.4}
    config = parse_search_config(data, "tiny.yaml")
    before = child_pids()
    with pytest.raises(ConfigError, match="model sim:weak .*unknown setting.*skil"):
        await run_search(config, tmp_path, resume=False, show_progress=False)
    assert child_pids() <= before
