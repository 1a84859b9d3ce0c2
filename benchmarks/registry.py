"""The benchmarks itas knows, and the resolver that also takes benchmarks of one's own.

``resolve_benchmark`` turns what a user wrote into a ``ResolvedBenchmark``: a built-in
name (``BENCHMARKS``: files, public sources, loaders), a YAML definition file, a JSONL or
JSON data file plus definition fields (``itas.benchmarks.custom``), or a definition
object. ``load_benchmark`` resolves, reads every record (built-ins: explicit ``paths``,
else the standard names inside the data directory, optionally downloading missing ones
from the public source; see ``datafiles``), then applies the split and the seeded limit
(see ``splits``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itas.benchmarks import chat, datafiles, gsm8k, humaneval, math500, mbpp, mixeval
from itas.benchmarks.custom import (
    BenchmarkDefinition,
    definition_from,
    is_data_file,
    is_definition_file,
    load_definition,
)
from itas.benchmarks.question import Question
from itas.benchmarks.splits import DEFAULT_SEARCH_FRACTION, select
from itas.errors import ConfigError

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class BenchmarkSpec:
    name: str
    files: tuple[str, ...]
    urls: tuple[str, ...]
    load: Callable[[Sequence[Path]], list[Question]]
    description: str


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(
            "gsm8k", gsm8k.FILES, gsm8k.URLS, gsm8k.load, "grade-school math, numeric answer"
        ),
        BenchmarkSpec(
            "math500", math500.FILES, math500.URLS, math500.load, "MATH-500, LaTeX answer"
        ),
        BenchmarkSpec(
            "humaneval",
            humaneval.FILES,
            humaneval.URLS,
            humaneval.load,
            "Python functions, unit tests",
        ),
        BenchmarkSpec("mbpp", mbpp.FILES, mbpp.URLS, mbpp.load, "Python tasks, three asserts each"),
        BenchmarkSpec(
            "mixeval_hard", mixeval.FILES, mixeval.URLS, mixeval.load, "MixEval-Hard, both parts"
        ),
        BenchmarkSpec(
            "mixeval_hard_mc",
            mixeval.FILES[:1],
            mixeval.URLS[:1],
            mixeval.load_mc,
            "MixEval-Hard multiple-choice part",
        ),
        BenchmarkSpec(
            "mixeval_hard_ff",
            mixeval.FILES[1:],
            mixeval.URLS[1:],
            mixeval.load_ff,
            "MixEval-Hard free-form part (judge)",
        ),
        BenchmarkSpec(
            "mt_bench",
            chat.MT_BENCH_FILES,
            chat.MT_BENCH_URLS,
            chat.load_mt_bench,
            "two-turn chat (judge)",
        ),
        BenchmarkSpec(
            "arena_hard",
            chat.ARENA_HARD_FILES,
            chat.ARENA_HARD_URLS,
            chat.load_arena_hard,
            "hard chat prompts (judge)",
        ),
        BenchmarkSpec(
            "alpaca_eval",
            chat.ALPACA_EVAL_FILES,
            chat.ALPACA_EVAL_URLS,
            chat.load_alpaca_eval,
            "instructions vs a baseline output (judge)",
        ),
    )
}


def spec_of(name: str) -> BenchmarkSpec:
    spec = BENCHMARKS.get(name)
    if spec is None:
        raise ConfigError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}; "
                          "or give a benchmark file: a YAML definition, or a .jsonl/.json "
                          "data file with --scorer and its fields (see the README)")
    return spec


@dataclass(frozen=True, slots=True)
class ResolvedBenchmark:
    """A built-in benchmark or a user-defined one, ready to load."""

    name: str
    builtin: BenchmarkSpec | None = None
    definition: BenchmarkDefinition | None = None

    def identity(self) -> dict[str, Any]:
        """What distinguishes this benchmark in fingerprints (not where its files are)."""
        return {"name": self.name,
                "definition": None if self.definition is None else self.definition.identity()}

    def read(self, data_dir: PathLike | None = None,
             paths: Sequence[PathLike] | PathLike | None = None,
             download: bool = False) -> list[Question]:
        """Every question, before any split."""
        if self.definition is not None:
            return load_definition(self.definition)
        if self.builtin is None:
            raise ConfigError(f"benchmark {self.name!r}: neither built-in nor defined")
        return _read_builtin(self.builtin, data_dir, paths, download)


BenchmarkRef = str | os.PathLike[str] | BenchmarkDefinition


def resolve_benchmark(ref: BenchmarkRef, fields: Mapping[str, Any] | None = None
                      ) -> ResolvedBenchmark:
    """What ``ref`` names (see the module docstring); ``fields`` complete or override a
    file's definition. ConfigError for unknown names and bad definitions."""
    if isinstance(ref, BenchmarkDefinition):
        return ResolvedBenchmark(ref.name, definition=ref)
    text = os.fspath(ref)
    if text in BENCHMARKS and not fields:
        return ResolvedBenchmark(text, builtin=BENCHMARKS[text])
    if is_definition_file(text) or is_data_file(text):
        definition = definition_from(text, fields)
        return ResolvedBenchmark(definition.name, definition=definition)
    if fields:
        raise ConfigError(f"benchmark {text!r}: definition fields (question field, scorer, ...) "
                          "go with a benchmark file (.yaml, .jsonl or .json), not a built-in")
    return ResolvedBenchmark(text, builtin=spec_of(text))


def benchmark_files(
    name: str,
    data_dir: PathLike | None = None,
    paths: Sequence[PathLike] | PathLike | None = None,
) -> list[Path]:
    """The files ``name`` loads from: ``paths`` (one per standard file) or the standard names."""
    spec = spec_of(name)
    if paths is None:
        root = datafiles.data_dir(data_dir)
        return [root / f for f in spec.files]
    given = [Path(paths)] if isinstance(paths, str | os.PathLike) else [Path(p) for p in paths]
    if len(given) != len(spec.files):
        raise ConfigError(
            f"benchmark {name!r} reads {len(spec.files)} file(s) ({', '.join(spec.files)}); "
            f"{len(given)} path(s) given"
        )
    return given


def fetch_benchmark(name: str, data_dir: PathLike | None = None) -> list[Path]:
    """Download the files of ``name`` that are missing from the data directory."""
    spec = spec_of(name)
    files = benchmark_files(name, data_dir)
    for path, url in zip(files, spec.urls, strict=True):
        if not path.exists():
            datafiles.download(url, path)
    return files


def _read_builtin(spec: BenchmarkSpec, data_dir: PathLike | None,
                  paths: Sequence[PathLike] | PathLike | None, download: bool) -> list[Question]:
    if download and paths is None:
        files = fetch_benchmark(spec.name, data_dir)
    else:
        files = benchmark_files(spec.name, data_dir, paths)
    for path in files:
        if not path.is_file():
            raise ConfigError(
                f"benchmark {spec.name!r}: file {path} not found (pass data_dir=..., set "
                f"{datafiles.DATA_DIR_ENV}, or download=True to fetch it from its public source)"
            )
    return spec.load(files)


def load_benchmark(
    name: BenchmarkRef,
    split: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    data_dir: PathLike | None = None,
    *,
    paths: Sequence[PathLike] | PathLike | None = None,
    download: bool = False,
    search_fraction: float = DEFAULT_SEARCH_FRACTION,
    fields: Mapping[str, Any] | None = None,
) -> list[Question]:
    """Questions of a benchmark (a name, a benchmark file or a definition; see
    ``resolve_benchmark``); ConfigError for unknown names and missing/bad files.

    split: None (all), "search" or "heldout". limit: a seeded sample of at most
    that many. download: fetch a built-in's missing files from the public source first.
    """
    questions = resolve_benchmark(name, fields).read(data_dir, paths, download)
    return select(questions, split, limit, seed, search_fraction)
