"""The benchmarks itas knows: their files, public sources and loaders.

``load_benchmark`` resolves the files (explicit ``paths``, else the standard
names inside the data directory; see ``datafiles``), optionally downloads
missing ones from the public source, parses every record, then applies the
split and the seeded limit (see ``splits``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from itas.benchmarks import chat, datafiles, gsm8k, humaneval, math500, mbpp, mixeval
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
        raise ConfigError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    return spec


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


def load_benchmark(
    name: str,
    split: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    data_dir: PathLike | None = None,
    *,
    paths: Sequence[PathLike] | PathLike | None = None,
    download: bool = False,
    search_fraction: float = DEFAULT_SEARCH_FRACTION,
) -> list[Question]:
    """Questions of benchmark ``name``; ConfigError for unknown names and missing/bad files.

    split: None (all), "search" or "heldout". limit: a seeded sample of at most
    that many. download: fetch missing files from the public source first.
    """
    spec = spec_of(name)
    if download and paths is None:
        files = fetch_benchmark(name, data_dir)
    else:
        files = benchmark_files(name, data_dir, paths)
    for path in files:
        if not path.is_file():
            raise ConfigError(
                f"benchmark {name!r}: file {path} not found (pass data_dir=..., set "
                f"{datafiles.DATA_DIR_ENV}, or download=True to fetch it from its public source)"
            )
    questions = spec.load(files)
    return select(questions, split, limit, seed, search_fraction)
