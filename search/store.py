"""Trial persistence: one JSON line per finished evaluation, so a stopped search resumes.

``trials.jsonl`` in the output folder starts with a header holding the search's
fingerprint (``SearchConfig.fingerprint``: the config's result fields, the benchmark, the
digests of the questions); every later line is a record:

- ``kind: ranking``: a model evaluated alone on the search split (ranks the models);
- ``kind: trial``: a strategy's evaluation of a point on the search split (``reused: true``
  when another strategy had already evaluated the same architecture: no calls were made);
- ``kind: confirm``: a finalist re-scored on one round of fresh search-split questions;
- ``kind: heldout``: a re-score on the held-out split.

Each record carries the spec, score and its standard error, the score of every question
(paired comparisons need them), calls, cached calls, tokens, cost and time. A line is
written and fsynced only once its evaluation finished, so a kill loses at most the
evaluations in flight; a half-written last line (killed mid-write) is cut off when the
store is reopened. Resuming refuses a store written for a different search, naming every
field of the fingerprint that differs (see ``itas.evaluation.manifest``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from itas.errors import ConfigError
from itas.evaluation.manifest import refuse_if_different

STORE_FILE = "trials.jsonl"
STORE_VERSION = 2  # 2: fingerprint by field, per-question scores, confirm records
Kind = Literal["ranking", "trial", "confirm", "heldout"]


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one evaluation of one architecture on one split gave."""

    score: float
    n: int
    correct: int
    errors: int
    calls: int  # LLM calls the queries reported, cached ones included
    cached_calls: int  # of those, answered by the response cache (no provider call)
    tokens: int
    cost_usd: float
    latency_s: float  # mean per query
    time_s: float  # wall time of the whole evaluation
    stderr: float = 0.0  # of ``score``, over the questions
    scores: dict[str, float] = field(default_factory=dict)  # by question id
    cost_known: bool = True  # False: some call had no price, ``cost_usd`` is a lower bound

    @property
    def calls_made(self) -> int:
        return self.calls - self.cached_calls

    @property
    def variance(self) -> float:
        """Of ``score`` as an estimate: what the optimizer is told about its noise."""
        return self.stderr ** 2


@dataclass(frozen=True, slots=True)
class Record:
    kind: Kind
    key: str  # point key, or "single:<model>" for rankings
    spec: dict[str, Any]
    split: str
    result: Measurement
    strategy: str | None = None
    index: int | None = None  # 1-based position within the strategy's trials
    point: dict[str, int] | None = None
    objective: float | None = None
    calls_per_query: int | None = None
    reused: bool = False
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Record:
        values = dict(data)
        values["result"] = Measurement(**values["result"])
        return cls(**values)


class TrialStore:
    """Append-only JSONL of records; ``records`` holds what is on disk."""

    def __init__(self, path: Path, records: list[Record]) -> None:
        self.path = path
        self.records = records

    @classmethod
    def open(cls, out_dir: Path, fingerprint: Mapping[str, Any], *, resume: bool,
             describe: Mapping[str, Any] | None = None) -> TrialStore:
        """Open the store in ``out_dir``: new, or (``resume``) the one a stopped run left.

        Without ``resume`` an existing non-empty store is an error rather than being
        overwritten; with it, a store from a different search is an error naming every
        field that differs (models, space, budget, benchmark, questions, schedule...).
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / STORE_FILE
        if path.exists() and path.stat().st_size > 0:
            if not resume:
                raise ConfigError(f"{path}: a search was already run here; pass --resume to "
                                  "continue it, or choose another output folder")
            header, records = _read(path)
            refuse_if_different(f"{path}", header.get("fingerprint") or {}, fingerprint,
                                "this is a different search; use a new output folder")
            return cls(path, records)
        header = {"kind": "header", "version": STORE_VERSION,
                  "fingerprint": dict(fingerprint), "config": dict(describe or {})}
        _append_line(path, json.dumps(header, sort_keys=True))
        return cls(path, [])

    def append(self, record: Record) -> None:
        _append_line(self.path, record.to_json())
        self.records.append(record)

    def of_kind(self, kind: Kind) -> Iterator[Record]:
        return (r for r in self.records if r.kind == kind)

    def confirmations(self) -> dict[tuple[str, int], Record]:
        """Finalists' confirm records by (key, round)."""
        return {(r.key, int(r.extra.get("round", 0))): r for r in self.of_kind("confirm")}

    def trials(self, strategy: str | None = None) -> list[Record]:
        return [r for r in self.of_kind("trial") if strategy is None or r.strategy == strategy]

    def evaluated(self, split: str = "search") -> dict[str, Record]:
        """Architectures already evaluated on ``split`` (first evaluation), by key."""
        found: dict[str, Record] = {}
        for r in self.records:
            if r.split == split and not r.reused and r.kind != "ranking":
                found.setdefault(r.key, r)
        return found


def _append_line(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _read(path: Path) -> tuple[dict[str, Any], list[Record]]:
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    if len(complete) != len(raw):  # killed mid-write: drop the partial line for good
        with path.open("r+b") as f:
            f.truncate(len(complete))
    lines = complete.decode("utf-8").splitlines()
    try:
        header = json.loads(lines[0])
    except (ValueError, IndexError) as e:
        raise ConfigError(f"{path}: not a trial store this version can read ({e})") from e
    if not isinstance(header, dict) or header.get("kind") != "header" \
            or header.get("version") != STORE_VERSION:
        version = header.get("version") if isinstance(header, dict) else None
        raise ConfigError(f"{path}: not a trial store this version can read (header version "
                          f"{version!r}, this one reads {STORE_VERSION}); use a new output "
                          "folder")
    try:
        records = [Record.from_dict(json.loads(line)) for line in lines[1:] if line.strip()]
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{path}: not a trial store this version can read ({e})") from e
    return header, records
