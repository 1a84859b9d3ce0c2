"""Deterministic search / held-out splits and seeded subsets.

The architecture search tunes on the ``search`` part and reports on the
``heldout`` part, so the two must never overlap and must not depend on file
order, Python's hash seed or the machine: a question's side is a keyed hash of
(seed, benchmark, id). ``limit`` takes a seeded sample (the questions with the
smallest sample hash), not the first lines of the file, because files are often
ordered by topic or source; the sample keeps file order.
"""

from __future__ import annotations

from collections.abc import Sequence

from itas.benchmarks.question import Question, unit_hash
from itas.errors import ConfigError

SEARCH = "search"
HELDOUT = "heldout"
SPLITS = (SEARCH, HELDOUT)
DEFAULT_SEARCH_FRACTION = 0.5


def split_of(
    question: Question, seed: int = 0, search_fraction: float = DEFAULT_SEARCH_FRACTION
) -> str:
    side = unit_hash("split", seed, question.benchmark, question.id)
    return SEARCH if side < search_fraction else HELDOUT


def select(
    questions: Sequence[Question],
    split: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    search_fraction: float = DEFAULT_SEARCH_FRACTION,
) -> list[Question]:
    """The questions of ``split`` (None: all), at most ``limit`` of them (None: all)."""
    if split is not None and split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} or None")
    if not 0.0 <= search_fraction <= 1.0:
        raise ConfigError(f"search_fraction must be in [0, 1], got {search_fraction}")
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    chosen = [q for q in questions if split is None or split_of(q, seed, search_fraction) == split]
    if limit is None or limit >= len(chosen):
        return chosen
    ranked = sorted(
        range(len(chosen)),
        key=lambda i: unit_hash("sample", seed, chosen[i].benchmark, chosen[i].id),
    )
    keep = sorted(ranked[:limit])
    return [chosen[i] for i in keep]
