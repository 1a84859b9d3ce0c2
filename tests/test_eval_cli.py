"""``itas eval`` end to end: the CLI as a subprocess against a real broker, real agent processes
from the sim pools and a real orchestrator, on the shared benchmark files.

Simulated models follow a documented probability model (``itas.agents.providers.sim``): a
model of skill s answers a question of difficulty d correctly with p_solve(s, d). So the
expected score of an architecture is computable before it runs, and the measured score
must land within three standard errors of it; a wrong answer key, a scorer that misreads
answers, lost tests or dropped questions would all move it out.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from itas.agents.kinds import build_agent
from itas.agents.pool import PoolEntry, load_pool
from itas.agents.providers.sim import p_solve, without_notes
from itas.benchmarks import load_benchmark
from itas.benchmarks.question import Question
from itas.client import Client
from tests.helpers import DATA_DIR, REPO, Processes

POOLS = (REPO / "configs" / "pools" / "sim.yaml", REPO / "configs" / "pools" / "sim_judge.yaml")
ARCHS = REPO / "configs" / "architectures"
CLI_TIMEOUT_S = 120.0
#: A generator slow enough that an eval can be killed part-way (the resume test).
SLOW = {"provider": "sim", "model": "slow", "skill": 0.8, "latency": 0.15}
SLOW_ARCH = {"name": "sim_slow", "layers": [[{"technique": "generator", "provider": "sim",
                                               "model": "slow"}]]}
WEAK_ARCH = {"name": "sim_weak", "layers": [[{"technique": "generator", "provider": "sim",
                                               "model": "weak"}]]}
SERVICES = ("generator@sim:strong", "generator@sim:weak", "code_tester", "judge@sim:strong")


def pool_entries() -> dict[str, PoolEntry]:
    entries = [e for pool in POOLS for e in load_pool(pool)]
    return {build_agent(e.kind, e.settings).service: e for e in entries}


def skill(service: str) -> float:
    return float(pool_entries()[service].settings["skill"])


def wait_for(endpoint: str, services: Sequence[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with Client(endpoint) as client:
        while True:
            live = client.status()["services"]
            missing = [s for s in services if live.get(s, {}).get("workers", 0) < 1]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"services without workers: {missing}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def mesh() -> Iterator[str]:
    """Broker, the sim-pool agents these tests call, a slow generator, an orchestrator."""
    processes = Processes()
    try:
        broker = processes.broker()
        entries = pool_entries()
        for service in SERVICES:
            processes.agent(broker.endpoint, entries[service].kind,
                            dict(entries[service].settings))
        processes.agent(broker.endpoint, "generator", SLOW)
        processes.agent(broker.endpoint, "orchestrator", {})
        wait_for(broker.endpoint, [*SERVICES, "generator@sim:slow", "orchestrator"])
        yield broker.endpoint
    finally:
        processes.stop_all()


def eval_args(broker: str, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "itas", "eval", "--broker", broker, "--out", str(out),
            "--data-dir", str(DATA_DIR), *args]


def run_eval(broker: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(eval_args(broker, out, *args), capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def records(out: Path, name: str = "results.jsonl") -> list[dict[str, Any]]:
    lines = (out / name).read_text().splitlines()
    return [json.loads(line) for line in lines]


def summaries(out: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((out / "summary.json").read_text())
    return {s["architecture"]: s for s in data["architectures"]}


def within_sampling_error(score: float, probabilities: Sequence[float]) -> tuple[bool, str]:
    """Is ``score`` within 3 standard errors of the mean of independent Bernoulli(p)?"""
    n = len(probabilities)
    expected = sum(probabilities) / n
    se = math.sqrt(sum(p * (1 - p) for p in probabilities)) / n
    return abs(score - expected) <= 3 * se, f"score {score:.3f}, expected {expected:.3f} ± {se:.3f}"


def questions(name: str, limit: int) -> list[Question]:
    return load_benchmark(name, limit=limit, data_dir=DATA_DIR)


def test_gsm8k_score_matches_simulated_skill(mesh: str, tmp_path: Path) -> None:
    done = run_eval(mesh, tmp_path, "--arch", str(ARCHS / "sim_single.yaml"),
                    "--benchmark", "gsm8k", "--limit", "40", "--concurrency", "8")
    qs = {q.id: q for q in questions("gsm8k", 40)}
    rows = records(tmp_path)
    assert sorted(r["id"] for r in rows) == sorted(qs)
    for r in rows:
        key = qs[r["id"]].answer_key
        assert r["error"] is None and r["calls"] == 1 and r["tokens"] > 0 and r["latency_s"] > 0
        # The answer key reached the simulated model (it answers with key texts only), and the
        # scorer agrees with it: the key's answer scores 1, its wrong answers 0.
        answer = without_notes(r["answer"])
        assert answer == key["answer"] or answer in key["wrong"]
        assert r["correct"] is (answer == key["answer"]) and r["score"] == float(r["correct"])
    summary = summaries(tmp_path)["sim_single"]
    assert summary["n"] == 40 and summary["errors"] == 0 and summary["calls"] == 40
    assert summary["correct"] == sum(r["correct"] for r in rows)
    ok, why = within_sampling_error(
        summary["score"], [p_solve(skill("generator@sim:strong"), q.answer_key["difficulty"])
                           for q in qs.values()])
    assert ok, why
    assert "sim_single" in done.stdout and f"{summary['score']:.3f}" in done.stdout


def test_humaneval_two_architectures_compared_with_oracle_tests(mesh: str,
                                                               tmp_path: Path) -> None:
    """Single sample vs five samples selected with the grading tests (--oracle-tests): the
    second is right when any sample is, so 1 - prod(1 - p) per question: a pass@5, and
    every output says ORACLE."""
    done = run_eval(mesh, tmp_path, "--arch", str(ARCHS / "sim_single.yaml"),
                    "--arch", str(ARCHS / "sim_code_exec.yaml"), "--benchmark", "humaneval",
                    "--limit", "20", "--concurrency", "8", "--oracle-tests")
    qs = questions("humaneval", 20)
    strong, weak = skill("generator@sim:strong"), skill("generator@sim:weak")
    single = [p_solve(strong, q.answer_key["difficulty"]) for q in qs]
    any_of_five = [1 - (1 - p_solve(strong, q.answer_key["difficulty"])) ** 3
                   * (1 - p_solve(weak, q.answer_key["difficulty"])) ** 2 for q in qs]
    found = summaries(tmp_path)
    assert set(found) == {"sim_single", "sim_code_exec"}
    for name, expected in (("sim_single", single), ("sim_code_exec", any_of_five)):
        s = found[name]
        assert s["n"] == 20 and s["errors"] == 0, s
        ok, why = within_sampling_error(s["score"], expected)
        assert ok, f"{name}: {why}"
    assert found["sim_code_exec"]["calls"] == 5 * 20 and found["sim_single"]["calls"] == 20
    rows = records(tmp_path)
    assert len(rows) == 40 and len({(r["architecture"], r["id"]) for r in rows}) == 40
    png = (tmp_path / "comparison.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert "Δ score" in done.stdout and "comparison chart" in done.stdout
    assert found["sim_code_exec"]["selection_tests"] == "oracle"
    assert found["sim_single"]["selection_tests"] == "none"
    assert {r["selection_tests"] for r in rows if r["architecture"] == "sim_code_exec"} == {
        "oracle"}
    assert "ORACLE" in done.stdout and "oracle pass@k, not a pass@1" in done.stdout
    assert json.loads((tmp_path / "summary.json").read_text())["selection_tests"] == "oracle"


def visible_pick_probability(question: Question, strong: float, weak: float,
                             mutant_passes: Sequence[bool]) -> float:
    """P(the code tester picks a correct sample) when it sees the visible tests only.

    Samples come in the order strong x3, weak x2; a correct one passes every visible test;
    a wrong one is mutant j with weight WRONG_DECAY**j (the sim provider's doc) and ties
    with the correct ones when it passes every visible test too; ties keep input order.
    So the pick is right when some sample k is correct and every earlier one is a wrong
    one that fails a visible test."""
    from itas.agents.providers.sim import WRONG_DECAY

    d = question.answer_key["difficulty"]
    weights = [WRONG_DECAY ** j for j in range(len(mutant_passes))]
    fails = sum(w for w, ok in zip(weights, mutant_passes, strict=True) if not ok) / sum(weights)
    chance, before = 0.0, 1.0
    for p in [p_solve(strong, d)] * 3 + [p_solve(weak, d)] * 2:
        chance += before * p
        before *= (1 - p) * fails
    return chance


def test_humaneval_selection_sees_visible_tests_and_is_graded_by_hidden_ones(
        mesh: str, tmp_path: Path) -> None:
    """The default: the code tester selects with the docstring's examples, the hidden
    check grades. The measured score must match the visible-test selection model (below)
    and stay under the oracle pass@5 where the two differ; the table says "visible"."""
    import anyio

    from itas.execution.sandbox import run_tests

    done = run_eval(mesh, tmp_path, "--arch", str(ARCHS / "sim_code_exec.yaml"),
                    "--benchmark", "humaneval", "--limit", "40", "--concurrency", "8")
    qs = questions("humaneval", 40)

    async def passes(q: Question) -> list[bool]:
        from itas.execution.programs import extract_code

        out = []
        for wrong in q.answer_key["wrong"]:
            result = await run_tests(extract_code(wrong, q.metadata["entry_point"]),
                                     list(q.visible_tests))
            out.append(result.all_passed)
        return out

    async def all_passes() -> list[list[bool]]:
        return [await passes(q) for q in qs]

    mutant_passes = anyio.run(all_passes)
    strong, weak = skill("generator@sim:strong"), skill("generator@sim:weak")
    visible = [visible_pick_probability(q, strong, weak, m) for q, m in zip(qs, mutant_passes,
                                                                             strict=True)]
    oracle = [1 - (1 - p_solve(strong, q.answer_key["difficulty"])) ** 3
              * (1 - p_solve(weak, q.answer_key["difficulty"])) ** 2 for q in qs]
    assert sum(oracle) - sum(visible) > 1.0  # the two selections differ by a question or more
    summary = summaries(tmp_path)["sim_code_exec"]
    assert summary["selection_tests"] == "visible" and summary["errors"] == 0
    ok, why = within_sampling_error(summary["score"], visible)
    assert ok, why
    rows = records(tmp_path)
    assert {r["selection_tests"] for r in rows} == {"visible"}
    assert " visible " in done.stdout and "ORACLE" not in done.stdout


def test_killed_eval_resumes_without_rerunning(mesh: str, tmp_path: Path) -> None:
    arch = tmp_path / "sim_slow.json"
    arch.write_text(json.dumps(SLOW_ARCH))
    out = tmp_path / "run"
    args = eval_args(mesh, out, "--arch", str(arch), "--benchmark", "gsm8k", "--limit", "30",
                     "--concurrency", "2")
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    results = out / "results.jsonl"
    try:
        deadline = time.monotonic() + CLI_TIMEOUT_S
        while not (results.exists() and results.read_text().count("\n") >= 6):
            assert proc.poll() is None, "the eval ended before it could be killed"
            assert time.monotonic() < deadline, "no results written"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    before = records(out)
    assert 6 <= len(before) < 30, len(before)

    done = run_eval(mesh, out, "--arch", str(arch), "--benchmark", "gsm8k", "--limit", "30",
                    "--concurrency", "2")
    after = records(out)
    assert after[: len(before)] == before  # kept as they were
    assert len(after) == 30 and len({r["id"] for r in after}) == 30  # none ran twice
    summary = summaries(out)["sim_slow"]
    assert summary["n"] == 30 and summary["resumed"] == len(before)
    assert summary["score"] == pytest.approx(sum(r["score"] for r in after) / 30)
    assert f"{len(before)} of 30 result(s) resumed" in done.stdout

    again = run_eval(mesh, out, "--arch", str(arch), "--benchmark", "gsm8k", "--limit", "30")
    assert len(records(out)) == 30 and summaries(out)["sim_slow"]["resumed"] == 30
    assert "30 of 30 result(s) resumed" in again.stdout


def test_mt_bench_judged_turn_by_turn(mesh: str, tmp_path: Path) -> None:
    run_eval(mesh, tmp_path, "--arch", str(ARCHS / "sim_single.yaml"), "--benchmark",
             "mt_bench", "--limit", "3", "--judge", "sim:strong")
    rows = records(tmp_path)
    assert len(rows) == 3
    for r in rows:
        assert r["error"] is None and len(r["answers"]) == 2 and r["calls"] == 2
        assert r["judge_usage"]["calls"] == 2  # one rating per turn
        turn1, turn2 = r["detail"].split("; ")
        ratings = [int(t.split("rating ")[1].split("/")[0]) for t in (turn1, turn2)]
        assert turn1.startswith("turn 1:") and turn2.startswith("turn 2:")
        # No answer key for open chat: a sim judge rates 3..8 (the sim provider's doc).
        assert all(3 <= x <= 8 for x in ratings)
        assert r["score"] == pytest.approx(sum(ratings) / 20) and r["correct"] is None
    summary = summaries(tmp_path)["sim_single"]
    assert summary["judge_usage"]["calls"] == 6 and summary["calls"] == 6


def test_arena_hard_pairwise_in_both_orders(mesh: str, tmp_path: Path) -> None:
    arch = tmp_path / "sim_weak.json"
    arch.write_text(json.dumps(WEAK_ARCH))
    out = tmp_path / "run"
    run_eval(mesh, out, "--arch", str(arch), "--benchmark", "arena_hard", "--limit", "4",
             "--judge", "sim:strong", "--baseline", str(ARCHS / "sim_single.yaml"))
    baseline = records(out, "baseline.jsonl")
    assert len(baseline) == 4 and all(b["architecture"] == "sim_single" for b in baseline)
    rows = records(out)
    assert len(rows) == 4 and {r["id"] for r in rows} == {b["id"] for b in baseline}
    for r in rows:
        assert r["error"] is None and r["judge_usage"]["calls"] == 2
        assert "answer_first: " in r["detail"] and "baseline_first: " in r["detail"]
        assert r["score"] in (0.0, 0.5, 1.0) and r["correct"] is (r["score"] > 0.5)


ELEMENTS = {"Hydrogen": "H", "Helium": "He", "Lithium": "Li", "Carbon": "C", "Nitrogen": "N",
            "Oxygen": "O", "Sodium": "Na", "Magnesium": "Mg", "Aluminium": "Al",
            "Silicon": "Si", "Sulfur": "S", "Chlorine": "Cl", "Argon": "Ar", "Potassium": "K",
            "Calcium": "Ca", "Iron": "Fe", "Copper": "Cu", "Zinc": "Zn", "Silver": "Ag",
            "Tin": "Sn", "Gold": "Au", "Mercury": "Hg", "Lead": "Pb", "Uranium": "U",
            "Tungsten": "W", "Nickel": "Ni", "Cobalt": "Co", "Platinum": "Pt",
            "Titanium": "Ti", "Chromium": "Cr", "Manganese": "Mn", "Neon": "Ne"}


def element_benchmark(folder: Path) -> Path:
    """A benchmark of a kind itas does not ship, from scratch: chemical symbols, exact match,
    as a YAML definition beside its data."""
    rows = [{"id": f"el-{i}", "element": e, "symbol": s} for i, (e, s) in
            enumerate(ELEMENTS.items())]
    (folder / "elements.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    definition = folder / "elements.yaml"
    definition.write_text(
        "name: elements\ndata: elements.jsonl\nscorer: exact\nid_field: id\n"
        "question_field: element\nanswer_field: symbol\n"
        "prompt: \"What is the chemical symbol of {element}? End with 'The answer is X.'\"\n")
    return definition


def test_a_benchmark_of_ones_own_through_the_cli(mesh: str, tmp_path: Path) -> None:
    """Written from scratch, evaluated as a YAML definition and as a data file plus flags:
    the same questions, the same scores, within sampling error of the simulated skill."""
    from itas.benchmarks.question import difficulty

    definition = element_benchmark(tmp_path)
    done = run_eval(mesh, tmp_path / "yaml", "--arch", str(ARCHS / "sim_single.yaml"),
                    "--benchmark", str(definition))
    flags = run_eval(mesh, tmp_path / "flags", "--arch", str(ARCHS / "sim_single.yaml"),
                     "--benchmark", str(tmp_path / "elements.jsonl"), "--scorer", "exact",
                     "--benchmark-name", "elements", "--id-field", "id", "--question-field",
                     "element", "--answer-field", "symbol", "--prompt-template",
                     "What is the chemical symbol of {element}? End with 'The answer is X.'")
    by_yaml, by_flags = records(tmp_path / "yaml"), records(tmp_path / "flags")
    assert len(by_yaml) == len(ELEMENTS) and all(r["error"] is None for r in by_yaml)
    assert sorted((r["id"], r["answer"], r["score"]) for r in by_yaml) == sorted(
        (r["id"], r["answer"], r["score"]) for r in by_flags)
    summary = summaries(tmp_path / "yaml")["sim_single"]
    ok, why = within_sampling_error(summary["score"], [
        p_solve(skill("generator@sim:strong"), difficulty("elements", f"el-{i}"))
        for i in range(len(ELEMENTS))])
    assert ok, why
    assert "itas eval: elements" in done.stdout and "itas eval: elements" in flags.stdout
    broken = subprocess.run(eval_args(mesh, tmp_path / "bad", "--arch",
                                      str(ARCHS / "sim_single.yaml"), "--benchmark",
                                      str(tmp_path / "elements.jsonl"), "--scorer", "exact",
                                      "--answer-field", "symbol",
                                      "--prompt-template", "Symbol of {elemnt}?"),
                            capture_output=True, text=True, timeout=CLI_TIMEOUT_S, cwd=REPO,
                            check=False)
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert "elements.jsonl:1: missing field 'elemnt'" in broken.stderr


def test_out_dir_of_another_benchmark_is_refused(mesh: str, tmp_path: Path) -> None:
    """The issue's case: reusing --out for another benchmark mixed both in results.jsonl."""
    run_eval(mesh, tmp_path, "--arch", str(ARCHS / "sim_single.yaml"), "--benchmark", "gsm8k",
             "--limit", "5")
    before = (tmp_path / "results.jsonl").read_text()
    summary = (tmp_path / "summary.json").read_text()
    other = subprocess.run(eval_args(mesh, tmp_path, "--arch", str(ARCHS / "sim_single.yaml"),
                                     "--benchmark", "math500", "--limit", "5"),
                           capture_output=True, text=True, timeout=CLI_TIMEOUT_S, cwd=REPO,
                           check=False)
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "written by a different run" in other.stderr and "benchmark:" in other.stderr
    assert "math500" in other.stderr and "choose another --out" in other.stderr
    assert (tmp_path / "results.jsonl").read_text() == before
    assert (tmp_path / "summary.json").read_text() == summary


def test_official_judge_files_through_the_cli(mesh: str, tmp_path: Path) -> None:
    """--judge-prompts/--reference-answers for MT-Bench (rated on its 1-10 scale) and
    --baseline-answers for Arena-Hard (no baseline architecture needed)."""
    from tests.test_judge_official import arena_style, fastchat_style

    refs = tmp_path / "gpt-4.jsonl"
    refs.write_text("".join(json.dumps({"question_id": q.id, "choices": [
        {"index": 0, "turns": ["ref one", "ref two"]}]}) + "\n"
        for q in questions("mt_bench", 80)))
    done = run_eval(mesh, tmp_path / "mt", "--arch", str(ARCHS / "sim_single.yaml"),
                    "--benchmark", "mt_bench", "--limit", "3", "--judge", "sim:strong",
                    "--judge-prompts", str(fastchat_style(tmp_path)), "--reference-answers",
                    str(refs))
    summary = summaries(tmp_path / "mt")["sim_single"]
    assert summary["errors"] == 0 and summary["rating"]["scale"] == "1-10"
    assert summary["rating"]["mean"] == pytest.approx(summary["score"] * 10)
    assert "rating 1-10" in done.stdout
    manifest = json.loads((tmp_path / "mt" / "run.json").read_text())
    assert manifest["judge_prompts"] and manifest["questions"]["n"] == 3
    baselines = tmp_path / "gpt-4-0314.jsonl"
    baselines.write_text("".join(json.dumps({"uid": q.id, "messages": [
        {"role": "user", "content": q.prompt},
        {"role": "assistant", "content": {"answer": f"baseline answer {q.id}"}}]}) + "\n"
        for q in questions("arena_hard", 500)))
    arena = run_eval(mesh, tmp_path / "arena", "--arch", str(ARCHS / "sim_single.yaml"),
                     "--benchmark", "arena_hard", "--limit", "3", "--judge", "sim:strong",
                     "--judge-prompts", str(arena_style(tmp_path)), "--baseline-answers",
                     str(baselines))
    rows = records(tmp_path / "arena")
    assert len(rows) == 3 and all(r["error"] is None and r["judge_usage"]["calls"] == 2
                                  for r in rows)
    assert not (tmp_path / "arena" / "baseline.jsonl").exists() and arena.returncode == 0


def test_judge_benchmark_without_judge_is_one_clear_error(mesh: str, tmp_path: Path) -> None:
    done = subprocess.run(eval_args(mesh, tmp_path / "a", "--arch",
                                    str(ARCHS / "sim_single.yaml"),
                                    "--benchmark", "mt_bench", "--limit", "2"),
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, cwd=REPO,
                          check=False)
    assert done.returncode == 2
    assert "scored by an LLM judge; pass --judge" in done.stderr
    missing = subprocess.run(eval_args(mesh, tmp_path / "b", "--arch",
                                       str(ARCHS / "sim_gcrf.yaml"),
                                       "--benchmark", "gsm8k", "--limit", "2"),
                             capture_output=True, text=True, timeout=CLI_TIMEOUT_S, cwd=REPO,
                          check=False)
    assert missing.returncode == 2 and "no worker serves" in missing.stderr
    assert "critic@sim:medium" in missing.stderr
