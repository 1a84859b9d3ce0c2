"""The trial store: records survive a reopen, a half-written line is cut off, and a store
from another config or an unasked-for overwrite is refused with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from itas.errors import ConfigError
from itas.search.store import STORE_FILE, Measurement, Record, TrialStore

FP = {"budget": 3, "questions.search": "6:abc"}
RESULT = Measurement(score=0.5, n=4, correct=2, errors=0, calls=12, cached_calls=5, tokens=900,
                     cost_usd=0.0, latency_s=0.01, time_s=0.3)


def record(key: str, index: int, reused: bool = False) -> Record:
    return Record("trial", key, {"name": key, "layers": []}, "search", RESULT, strategy="bo",
                  index=index, point={"models": 1}, objective=0.49, calls_per_query=3,
                  reused=reused)


def test_records_survive_reopen(tmp_path: Path) -> None:
    store = TrialStore.open(tmp_path, FP, resume=False, describe={"budget": 3})
    store.append(record("a", 1))
    store.append(record("b", 2))
    store.append(record("a", 3, reused=True))
    again = TrialStore.open(tmp_path, FP, resume=True)
    assert again.records == store.records
    assert [r.key for r in again.trials("bo")] == ["a", "b", "a"]
    assert set(again.evaluated()) == {"a", "b"}
    assert again.records[0].result.calls_made == 7


def test_half_written_line_is_dropped_and_appending_goes_on(tmp_path: Path) -> None:
    store = TrialStore.open(tmp_path, FP, resume=False)
    store.append(record("a", 1))
    with (tmp_path / STORE_FILE).open("a") as f:
        f.write('{"kind": "trial", "key": "b", "spl')  # killed mid-write
    again = TrialStore.open(tmp_path, FP, resume=True)
    assert [r.key for r in again.records] == ["a"]
    again.append(record("c", 2))
    assert [r.key for r in TrialStore.open(tmp_path, FP, resume=True).records] == ["a", "c"]


def test_refuses_overwrite_and_foreign_store(tmp_path: Path) -> None:
    TrialStore.open(tmp_path, FP, resume=False).append(record("a", 1))
    with pytest.raises(ConfigError, match="pass --resume"):
        TrialStore.open(tmp_path, FP, resume=False)
    with pytest.raises(ConfigError, match="different search"):
        TrialStore.open(tmp_path, {"budget": 4}, resume=True)
    (tmp_path / STORE_FILE).write_text("not json\n")
    with pytest.raises(ConfigError, match="not a trial store"):
        TrialStore.open(tmp_path, FP, resume=True)


def test_resume_of_an_empty_folder_starts_fresh(tmp_path: Path) -> None:
    store = TrialStore.open(tmp_path / "new", FP, resume=True)
    assert store.records == []
    assert (tmp_path / "new" / STORE_FILE).exists()
