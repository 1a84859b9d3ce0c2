"""Reports that tell the truth (issue 15): one number format per column, deltas that name
their baseline, architecture keys with a legend, and a search's best the same in the
leaderboard's first row as in best.yaml, ties included."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from itas.evaluation.evaluate import EvalSummary
from itas.evaluation.report import summary_table
from itas.search.controller import Finalist, SearchOutcome, by_search_objective
from itas.search.report import leaderboard
from itas.search.space import KEY_LEGEND
from itas.search.store import Measurement, Record, TrialStore


def _text(renderable: Any, width: int = 250) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def _summary(name: str, score: float, tokens: int, n: int = 10) -> EvalSummary:
    return EvalSummary(name, "gsm8k", n, score, int(score * n), 0, 3 * n, tokens, 0.0, 1.0)


def _column(table_text: str, header: str, rows: int) -> list[str]:
    lines = [line.replace("┃", "│") for line in table_text.splitlines()
             if "│" in line or "┃" in line]
    head = next(line for line in lines if header in line)
    cells = [c.strip() for c in head.split("│")]
    where = next(i for i, c in enumerate(cells) if header in c)
    body = [line for line in lines if line != head and line.split("│")[1].strip()][-rows:]
    return [line.split("│")[where].strip() for line in body]


def test_eval_table_counts_in_one_format_and_the_delta_names_its_baseline() -> None:
    summaries = [_summary("single", 0.5, 1637), _summary("gcrf", 0.7, 48_120),
                 _summary("huge", 0.6, 12_345_678)]
    shown = _text(summary_table(summaries, "t"))
    tokens = _column(shown, "tokens/q", 3)
    assert tokens == ["164", "4,812", "1,234,568"], shown
    assert _column(shown, "Δ score vs first", 3) == ["+0.000", "+0.200", "+0.100"]
    assert "each score minus that of single, the first architecture" in shown
    marked = _text(summary_table([_summary("a [simulated]", 0.5, 10), _summary("b", 0.6, 10)],
                                 "t"))
    assert "minus that of a [simulated]" in marked  # a name is data, never markup


def _measure(score: float) -> Measurement:
    return Measurement(score, 10, int(score * 10), 0, 40, 0, 400, 0.0, 0.1, 1.0, 0.05)


def _trial(key: str, objective: float, calls: int, index: int) -> Record:
    return Record("trial", key, {"name": key, "layers": []}, "search", _measure(objective),
                  strategy="bo", index=index, objective=objective, calls_per_query=calls)


def _first_row_key(board: str) -> str:
    row = next(line for line in board.splitlines() if line.startswith("│ 1 "))
    return row.split("│")[2].strip().removesuffix(" (best)")


def _store(tmp_path: Path, trials: list[Record]) -> TrialStore:
    store = TrialStore.open(tmp_path, {"test": 1}, resume=False)
    for trial in trials:
        store.append(trial)
    return store


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.5, 0.6, 0.7]), st.sampled_from([4, 6])),
                min_size=1, max_size=8), st.integers(0, 10_000), st.booleans())
def test_the_leaderboards_first_row_is_the_chosen_best(
        tmp_path_factory: Any, points: list[tuple[float, int]], seed: int,
        confirmed: bool) -> None:
    """Many ties on purpose: with no confirm questions the best is the leaders' first, with
    them the confirm winner; either way row 1 is it, and the legend is there."""
    trials = [_trial(f"m1-s{i}-c0-r0-f0x1-v0-u0-mv0", o, c, i + 1)
              for i, (o, c) in enumerate(points)]
    store = _store(tmp_path_factory.mktemp("s"), trials)
    leaders = by_search_objective(trials)
    finalists: list[Finalist] = []
    if confirmed and len(leaders) > 1:
        order = leaders[:3]
        random.Random(seed).shuffle(order)  # the confirm questions may reorder them
        finalists = [Finalist(t, _measure(0.5), 0.5, 1) for t in order]
    best = finalists[0].trial if finalists else leaders[0]
    outcome = SearchOutcome([], None, best, [], [], 1.0, finalists,  # type: ignore[arg-type]
                            evaluated=trials)
    board = _text(leaderboard(store, outcome))
    assert _first_row_key(board) == best.key, board
    assert f"{best.key} (best)" in board
    assert " ".join(KEY_LEGEND.split()[:6]) in " ".join(board.split())
    assert "ties go to fewer calls per query" in " ".join(board.split())


def test_ties_go_to_fewer_calls_then_by_key_whatever_the_order_found() -> None:
    a, b, c = _trial("a", 0.7, 6, 1), _trial("b", 0.7, 4, 2), _trial("c", 0.7, 4, 3)
    assert [r.key for r in by_search_objective([a, b, c])] == ["b", "c", "a"]
    assert [r.key for r in by_search_objective([a, c, b])] == ["b", "c", "a"]


def test_a_heading_copied_from_the_prompt_is_not_part_of_the_fused_answer() -> None:
    from itas.techniques.fuser import parse_fused

    for heading in ("### Response [3]", "## Fused response:", "# Answer", "### response"):
        parsed = parse_fused(f"{heading}\nThe sky scatters blue light.\n")
        assert parsed.value == "The sky scatters blue light."
        assert "removed the heading" in parsed.detail and heading.strip() in parsed.detail
    kept = parse_fused("### Response [3]\n")  # nothing after it: the text stays as written
    assert kept.value == "### Response [3]"
    plain = parse_fused("Responses [1] and [2] agree: blue light scatters more.")
    assert plain.value.startswith("Responses [1]") and "removed" not in plain.detail
