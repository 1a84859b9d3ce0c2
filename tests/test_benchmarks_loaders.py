"""Benchmark loaders on the real shared data files: every record parses, splits behave."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from itas.benchmarks import (
    BENCHMARKS,
    DATA_DIR_ENV,
    HELDOUT,
    SEARCH,
    Question,
    load_benchmark,
    split_of,
)
from itas.benchmarks.datafiles import download
from itas.benchmarks.splits import select
from itas.errors import ConfigError

DATA = Path(__file__).parents[2] / "shared" / "data"
# Record counts from shared/data/README.md.
EXPECTED = {
    "gsm8k": 1319,
    "math500": 500,
    "humaneval": 164,
    "mbpp": 974,
    "mixeval_hard": 1000,
    "mixeval_hard_mc": 500,
    "mixeval_hard_ff": 500,
    "mt_bench": 80,
    "arena_hard": 500,
}
JUDGE_ONLY = ("mt_bench", "arena_hard")


@functools.cache
def everything(name: str) -> tuple[Question, ...]:
    return tuple(load_benchmark(name, data_dir=DATA))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_record_loads(name: str) -> None:
    questions = everything(name)
    assert len(questions) == EXPECTED[name]
    assert len({q.id for q in questions}) == len(questions)
    for q in questions:
        assert q.messages and all(set(m) == {"role", "content"} for m in q.messages)
        assert q.messages[0]["role"] == "user" and q.messages[0]["content"].strip()
        if name not in JUDGE_ONLY:
            key = q.answer_key
            assert key is not None and key["answer"] and 0.0 <= key["difficulty"] < 1.0
            assert key["id"] == f"{q.benchmark}/{q.id}"
            assert key["answer"] not in key["wrong"]
            assert len(set(key["wrong"])) == len(key["wrong"])
        else:
            assert q.answer_key is None


def test_keys_have_enough_wrong_answers() -> None:
    for name in ("gsm8k", "math500", "humaneval", "mbpp"):
        assert all(len(q.answer_key["wrong"]) >= 2 for q in everything(name)), name
    for q in everything("mixeval_hard_mc"):
        assert len(q.answer_key["wrong"]) == min(3, len(q.metadata["options"]) - 1)


def test_question_contents() -> None:
    gsm = everything("gsm8k")[0]
    assert gsm.id == "0" and gsm.reference == "18" and "Janet" in gsm.prompt
    math = {q.id: q for q in everything("math500")}["test/precalculus/807.json"]
    assert math.reference == r"\left( 3, \frac{\pi}{2} \right)" and "boxed" in math.prompt
    he = everything("humaneval")[0]
    assert he.metadata["entry_point"] == "has_close_elements" and "def check" in he.reference
    assert he.answer_key["tests"][0].startswith("assert has_close_elements(")
    mbpp = everything("mbpp")[0]
    assert mbpp.metadata["entry_point"] == "min_cost" and len(mbpp.reference) == 3
    assert mbpp.metadata["split"] == "prompt" and "assert min_cost" in mbpp.prompt
    mc = everything("mixeval_hard_mc")[0]
    assert mc.id == "mc-0" and mc.reference == [1] and "\nB. contractionary" in mc.prompt
    ff = everything("mixeval_hard_ff")[0]
    assert ff.metadata["problem_type"] == "free-form" and ff.reference == ["367", "367"]


def test_mt_bench_has_two_turns() -> None:
    q = everything("mt_bench")[0]
    assert len(q.turns) == 2 and q.messages == [{"role": "user", "content": q.turns[0]}]
    follow_up = q.conversation(["first answer"])
    assert [m["role"] for m in follow_up] == ["user", "assistant", "user"]
    assert follow_up[1]["content"] == "first answer"
    assert follow_up[2]["content"] == q.turns[1]
    with pytest.raises(IndexError, match="2 turn"):
        q.conversation(["a", "b"])


def test_alpaca_eval_from_a_small_file(tmp_path: Path) -> None:
    items = [
        {"instruction": "Say hi.", "output": "Hi!", "generator": "base", "dataset": "demo"},
        {"instruction": "Count to 3.", "output": "1 2 3", "generator": "base", "dataset": "x"},
    ]
    (tmp_path / "alpaca_eval").mkdir()
    (tmp_path / "alpaca_eval" / "alpaca_eval.json").write_text(json.dumps(items))
    questions = load_benchmark("alpaca_eval", data_dir=tmp_path)
    assert [q.prompt for q in questions] == ["Say hi.", "Count to 3."]
    assert questions[1].reference == "1 2 3" and questions[1].metadata["dataset"] == "x"
    assert questions[0].answer_key is None
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"output": "no instruction"}]))
    with pytest.raises(ConfigError, match=r"bad\.json: item 0: missing field 'instruction'"):
        load_benchmark("alpaca_eval", paths=bad)


@pytest.mark.parametrize("name", ["gsm8k", "mixeval_hard", "mbpp"])
def test_splits_are_deterministic_disjoint_and_cover(name: str) -> None:
    questions = everything(name)
    search, heldout = select(questions, SEARCH), select(questions, HELDOUT)
    ids_s, ids_h = {q.id for q in search}, {q.id for q in heldout}
    assert not ids_s & ids_h
    assert ids_s | ids_h == {q.id for q in questions}
    assert 0.4 < len(ids_s) / len(questions) < 0.6
    assert all(split_of(q, 0) == SEARCH for q in search)
    assert {q.id for q in select(questions, SEARCH, seed=1)} != ids_s
    reversed_file = select(questions[::-1], SEARCH)
    assert {q.id for q in reversed_file} == ids_s  # independent of file order


def test_load_benchmark_applies_the_split() -> None:
    loaded = load_benchmark("gsm8k", split=HELDOUT, seed=3, data_dir=DATA)
    assert [q.id for q in loaded] == [q.id for q in select(everything("gsm8k"), HELDOUT, seed=3)]
    assert [q.id for q in load_benchmark("gsm8k", split=HELDOUT, seed=3, data_dir=DATA)] == [
        q.id for q in loaded
    ]


def test_limit_is_a_seeded_sample_in_file_order() -> None:
    first = load_benchmark("gsm8k", split=SEARCH, limit=20, data_dir=DATA)
    again = load_benchmark("gsm8k", split=SEARCH, limit=20, data_dir=DATA)
    assert [q.id for q in first] == [q.id for q in again] and len(first) == 20
    positions = {q.id: i for i, q in enumerate(everything("gsm8k"))}
    order = [positions[q.id] for q in first]
    assert order == sorted(order)
    assert max(order) > 100  # a sample, not the head of the file
    assert {q.id for q in first} <= {
        q.id for q in load_benchmark("gsm8k", split=SEARCH, data_dir=DATA)
    }
    assert len(load_benchmark("gsm8k", limit=0, data_dir=DATA)) == 0
    bigger = load_benchmark("gsm8k", split=SEARCH, limit=40, data_dir=DATA)
    assert {q.id for q in first} <= {q.id for q in bigger}


def test_search_fraction() -> None:
    small = load_benchmark("gsm8k", split=SEARCH, search_fraction=0.2, data_dir=DATA)
    assert 0.15 < len(small) / EXPECTED["gsm8k"] < 0.25
    with pytest.raises(ConfigError, match="search_fraction"):
        load_benchmark("gsm8k", search_fraction=1.5, data_dir=DATA)
    with pytest.raises(ConfigError, match="unknown split 'train'"):
        load_benchmark("gsm8k", split="train", data_dir=DATA)


def test_unknown_benchmark_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown benchmark 'gsm9k'.*gsm8k"):
        load_benchmark("gsm9k")
    with pytest.raises(ConfigError, match=str(tmp_path / "humaneval" / "HumanEval.jsonl.gz")):
        load_benchmark("humaneval", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="reads 2 file"):
        load_benchmark("mixeval_hard", paths=tmp_path / "one.json")


def test_data_dir_from_environment_and_cwd_fallback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(DATA))
    monkeypatch.chdir(tmp_path)
    assert len(load_benchmark("mt_bench")) == EXPECTED["mt_bench"]
    monkeypatch.delenv(DATA_DIR_ENV)
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "shared").symlink_to(DATA.parent)
    monkeypatch.chdir(project)
    assert len(load_benchmark("mt_bench")) == EXPECTED["mt_bench"]


def test_bad_records_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "test.jsonl"
    path.write_text('{"question": "q", "answer": "#### 4"}\n{not json\n')
    with pytest.raises(ConfigError, match=r"test\.jsonl:2: not valid JSON"):
        load_benchmark("gsm8k", paths=path)
    path.write_text('{"question": "q", "answer": "#### 4"}\n{"question": "q"}\n')
    with pytest.raises(ConfigError, match=r"test\.jsonl:2: missing field 'answer'"):
        load_benchmark("gsm8k", paths=path)
    path.write_text('{"question": "q", "answer": "it is 4"}\n')
    with pytest.raises(ConfigError, match=r"test\.jsonl:1: field 'answer' has no '####"):
        load_benchmark("gsm8k", paths=path)
    gz = tmp_path / "HumanEval.jsonl.gz"
    gz.write_bytes(b"not gzip")
    with pytest.raises(ConfigError, match="HumanEval.jsonl.gz"):
        load_benchmark("humaneval", paths=gz)


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server for ``tmp_path/www`` (real HTTP, no internet)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_download_from_the_public_source(
    file_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with gzip.open(DATA / "humaneval" / "HumanEval.jsonl.gz", "rt") as source:
        lines = source.read().splitlines()[:3]
    with gzip.open(tmp_path / "www" / "HumanEval.jsonl.gz", "wt") as out:
        out.write("\n".join(lines) + "\n")
    spec = dataclasses.replace(BENCHMARKS["humaneval"], urls=(f"{file_server}/HumanEval.jsonl.gz",))
    monkeypatch.setitem(BENCHMARKS, "humaneval", spec)
    cache = tmp_path / "cache"
    questions = load_benchmark("humaneval", data_dir=cache, download=True)
    assert [q.id for q in questions] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert (cache / "humaneval" / "HumanEval.jsonl.gz").is_file()
    assert not list((cache / "humaneval").glob("*.part"))
    with pytest.raises(ConfigError, match=r"could not download .*/missing\.json.*HTTP 404"):
        download(f"{file_server}/missing.json", tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="could not download http://127.0.0.1:9/x"):
        download("http://127.0.0.1:9/x", tmp_path / "x.json", timeout_s=5)
    assert not (tmp_path / "x.json").exists()


def test_public_names() -> None:
    import itas.benchmarks as public

    assert len(set(public.__all__)) == len(public.__all__)
    for name in public.__all__:
        assert not name.startswith("_") and hasattr(public, name), name
