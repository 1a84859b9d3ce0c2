"""Reusing an output folder never mixes runs: ``itas eval --out`` and ``itas search --resume``
refuse, naming what differs, for each thing a score depends on: the benchmark, its data
(the questions' digest), the split, the seed, the sample size, the architectures, the
judge, the selection tests, a user-defined benchmark's definition and (search) the
schedule; and accept a rerun of the very same run."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itas.errors import ConfigError
from itas.evaluation.manifest import differences, refuse_if_different
from itas.evaluation.run import MANIFEST_FILE, RESULTS_FILE, EvalOptions, run_eval
from itas.search.config import parse_search_config
from itas.search.run import load_questions, run_search
from itas.search.store import TrialStore
from tests.helpers import DATA_DIR, REPO, Processes
from tests.test_search_run import search_config

pytestmark = pytest.mark.anyio
ARCHS = REPO / "configs" / "architectures"


@pytest.fixture
def empty_broker(procs: Processes) -> str:
    """A broker without agents: an eval gets past its out-dir check, then stops at once."""
    return procs.broker().endpoint


def options(broker: str, out: Path, **changes: Any) -> EvalOptions:
    base: dict[str, Any] = {"archs": [str(ARCHS / "sim_single.yaml")], "benchmark": "gsm8k",
                            "limit": 5, "broker": broker, "out": out, "data_dir": DATA_DIR}
    base.update(changes)
    return EvalOptions(**base)


async def claim(opts: EvalOptions) -> None:
    """Run the eval up to where it needs agents (there are none): only the out-dir check
    may fail differently."""
    with pytest.raises(ConfigError) as caught:
        await run_eval(opts)
    if "no worker serves" not in str(caught.value):
        raise caught.value


def modified_data(tmp_path: Path) -> Path:
    """A copy of the data folder whose GSM8K questions are all reworded (a sample of any
    size sees the change; a change outside the sample rightly would not count)."""
    root = tmp_path / "data"
    (root / "gsm8k").mkdir(parents=True)
    lines = (DATA_DIR / "gsm8k" / "test.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:
        record["question"] = "Please: " + record["question"]
    (root / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def definition(tmp_path: Path, prompt: str) -> Path:
    data = tmp_path / "sq.jsonl"
    data.write_text("".join(json.dumps({"q": f"{i} squared?", "a": str(i * i)}) + "\n"
                            for i in range(20)))
    path = tmp_path / f"sq-{abs(hash(prompt))}.yaml"
    path.write_text(json.dumps({"name": "squares", "data": str(data), "scorer": "numeric",
                                "question_field": "q", "answer_field": "a", "prompt": prompt}))
    return path


async def test_eval_out_dir_refuses_each_mismatch(tmp_path: Path, empty_broker: str) -> None:
    out = tmp_path / "out"
    await claim(options(empty_broker, out))
    await claim(options(empty_broker, out))  # the same run: accepted
    changed_data = modified_data(tmp_path)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"benchmark": "math500"}, "benchmark:"),
        ({"split": "heldout"}, "split: null -> \"heldout\""),
        ({"seed": 1}, "seed: 0 -> 1"),
        ({"limit": 6}, "limit: 5 -> 6"),
        ({"data_dir": changed_data}, "questions:"),
        ({"archs": [str(ARCHS / "sim_single.yaml"), str(ARCHS / "sim_gcrf.yaml")]},
         "architectures: +\"sim_gcrf#"),
        ({"judge": "sim:strong"}, "judge: null -> \"judge@sim:strong\""),
        ({"oracle_tests": True}, "selection_tests: \"visible\" -> \"oracle\""),
    ]
    for change, named in cases:
        with pytest.raises(ConfigError, match="written by a different run") as caught:
            await run_eval(options(empty_broker, out, **change))
        assert named in str(caught.value), (change, str(caught.value))
        assert "choose another --out" in str(caught.value)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["benchmark"]["name"] == "gsm8k" and manifest["limit"] == 5


async def test_eval_out_dir_refuses_a_changed_definition_and_a_legacy_folder(
        tmp_path: Path, empty_broker: str) -> None:
    out = tmp_path / "custom"
    first = definition(tmp_path, "What is {question}")
    await claim(options(empty_broker, out, benchmark=str(first), limit=None))
    second = definition(tmp_path, "Compute {question}")
    with pytest.raises(ConfigError, match="benchmark:.*questions:"):
        await run_eval(options(empty_broker, out, benchmark=str(second), limit=None))
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / RESULTS_FILE).write_text("{}\n")
    with pytest.raises(ConfigError, match="without a run fingerprint"):
        await run_eval(options(empty_broker, legacy))
    (out / MANIFEST_FILE).write_text("{torn")
    with pytest.raises(ConfigError, match="not a readable run fingerprint"):
        await run_eval(options(empty_broker, out, benchmark=str(first), limit=None))


def open_store(data: dict[str, Any], out: Path) -> None:
    """What run_search does first: the store, with the fingerprint of this config's run."""
    config = parse_search_config(data, "tiny.yaml")
    questions = load_questions(config)
    TrialStore.open(out, config.fingerprint(questions.digests(),
                                            questions.benchmark.identity()), resume=False)


async def test_search_resume_refuses_each_mismatch(tmp_path: Path) -> None:
    base = search_config()
    out = tmp_path / "run"
    open_store(base, out)  # its header alone marks a started search
    changed_data = modified_data(tmp_path)
    squares = definition(tmp_path, "Work out {question}")

    def variant(**sections: dict[str, Any]) -> dict[str, Any]:
        data = copy.deepcopy(base)
        for name, fields in sections.items():
            data[name] = {**data.get(name, {}), **fields}
        return data

    cases: list[tuple[dict[str, Any], str]] = [
        (variant(benchmark={"data_dir": str(changed_data)}), "questions.heldout"),
        (variant(benchmark={"name": "math500"}), "benchmark:"),
        (variant(benchmark={"seed": 4}), "benchmark.seed: 0 -> 4"),
        (variant(benchmark={"search": 7}), "benchmark.search: 6 -> 7"),
        (variant(benchmark={"confirm": 10}), "benchmark.confirm"),
        (variant(benchmark={"heldout": 9}), "benchmark.heldout: 6 -> 9"),
        (variant(benchmark={"oracle_tests": True}), "benchmark.oracle_tests: false -> true"),
        (variant(space={"samples": [1, 3]}), "space:"),
        (variant(budget={"calls_per_query": 7}), "budget:"),
        (variant(search={"parallel": 1}), "search.parallel: 2 -> 1"),
        (variant(search={"seed": 9}), "search.seed: 3 -> 9"),
        (variant(benchmark={"name": str(squares), "data_dir": None}), "benchmark:"),
    ]
    models = copy.deepcopy(base)
    models["models"][1]["settings"]["skill"] = 0.41
    cases.append((models, "models:"))
    for data, named in cases:
        config = parse_search_config(data, "tiny.yaml")
        with pytest.raises(ConfigError, match="different search") as caught:
            await run_search(config, out, resume=True, show_progress=False)
        assert named in str(caught.value), (named, str(caught.value))
        assert "use a new output folder" in str(caught.value)


def test_more_trials_or_another_strategy_only_extend_a_search(tmp_path: Path) -> None:
    base = parse_search_config(search_config(), "tiny.yaml")
    questions = load_questions(base)
    fingerprint = base.fingerprint(questions.digests(), questions.benchmark.identity())
    longer = parse_search_config(search_config(search={
        **search_config()["search"], "trials": 9, "strategies": ["bo", "random", "greedy"],
        "rescore_top": 1}), "tiny.yaml")
    assert longer.fingerprint(questions.digests(), questions.benchmark.identity()) == fingerprint
    moved = tmp_path / "moved"
    shutil.copytree(DATA_DIR / "gsm8k", moved / "gsm8k")
    elsewhere = parse_search_config(search_config(benchmark={
        **search_config()["benchmark"], "data_dir": str(moved)}), "tiny.yaml")
    again = load_questions(elsewhere)
    assert elsewhere.fingerprint(again.digests(), again.benchmark.identity()) == fingerprint


values = st.one_of(st.none(), st.integers(-3, 3), st.text("ab", max_size=3),
                   st.lists(st.text("xyz", min_size=1, max_size=2), max_size=3))
prints = st.dictionaries(st.sampled_from(["benchmark", "split", "seed", "architectures",
                                          "judge"]), values)


@settings(max_examples=300, deadline=None)
@given(prints, prints)
def test_differences_name_exactly_the_fields_that_differ(before: dict[str, Any],
                                                         now: dict[str, Any]) -> None:
    lines = differences(before, now)
    named = [line.split(":", 1)[0] for line in lines]
    expected = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    assert named == expected
    assert differences(before, dict(before)) == []
    if expected:
        with pytest.raises(ConfigError, match="written by a different run"):
            refuse_if_different("here", before, now, "advice")
    else:
        refuse_if_different("here", before, now, "advice")
