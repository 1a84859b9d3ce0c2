"""What ``itas eval`` shows and writes: progress bars, the summary table, the comparison chart.

Kept apart from ``evaluate`` (which computes) so the API used by the search
imports no terminal or plotting code. Progress goes to stderr, so the table on
stdout can be piped; the chart needs matplotlib (extras ``plots``), drawn with
the Agg backend so it works without a display.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from itas.evaluation.evaluate import EvalSummary, Tally

Z_95 = 1.96
CHART_DPI = 120
ERROR_LINES = 3
PIPE_WIDTH = 160


def _stats(tally: Tally) -> str:
    return (f"score {tally.score:.3f}  err {tally.errors}  calls {tally.calls}  "
            f"tok {_count(tally.tokens)}  {cost_text(tally.cost_usd, tally.cost_known)}")


def cost_text(cost_usd: float, known: bool) -> str:
    """A cost for a table: "$0.0123"; with some call unpriced, "unknown" when nothing was
    priced, else ">= $0.0123" (the priced part), never a made-up total."""
    if known:
        return f"${cost_usd:.4f}"
    return "unknown" if cost_usd == 0 else f">= ${cost_usd:.4f}"


def _count(n: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


class ProgressBoard:
    """One live display with a bar per architecture (done, score so far, calls, tokens, cost,
    ETA); ``evaluate`` accepts it as ``progress``."""

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), console=console or console_for(sys.stderr))

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def track(self, name: str, tally: Tally) -> Any:
        """A ``(record, tally)`` callback driving a new bar; questions already done (resumed)
        start the bar without counting toward its speed, so the ETA reflects this run."""
        task = self.progress.add_task(escape(name), total=tally.total, completed=tally.done,
                                      stats=_stats(tally))

        def report(record: dict[str, Any], tally: Tally) -> None:
            self.progress.update(task, advance=1, stats=_stats(tally))

        return report


ARCH_COLUMN_WIDTH = 48


def summary_table(summaries: Sequence[EvalSummary], title: str, *,
                  rating_scale: int | None = None) -> Table:
    """One row per architecture; with several, the score difference to the first.

    ``selection tests`` says what tests selection inside the architecture saw (visible,
    oracle, none; see ``itas.benchmarks.selection``); ``rating_scale`` (MT-Bench: 10) adds
    the mean rating on the benchmark's own scale."""
    table = Table(title=title)
    # Long names (Archon's) fold onto more lines; the figures beside them never shrink.
    table.add_column("architecture", overflow="fold", max_width=ARCH_COLUMN_WIDTH)
    table.add_column("selection tests", no_wrap=True)
    names = ["n", "score", "±SE", "±95%"]
    if rating_scale:
        names.append(f"rating 1-{rating_scale}")
    names += ["correct", "errors", "calls/q", "tokens/q", "cost", "latency s"]
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)
    several = len(summaries) > 1
    if several:
        table.add_column("Δ score", justify="right", no_wrap=True)
    base = summaries[0].score if summaries else 0.0
    for s in summaries:
        per_q = max(s.n, 1)
        row = [s.architecture, s.selection_tests.upper() if s.selection_tests == "oracle"
               else s.selection_tests, str(s.n), f"{s.score:.3f}", f"{s.stderr:.3f}",
               f"{Z_95 * s.stderr:.3f}"]
        if rating_scale:
            row.append(f"{s.score * rating_scale:.2f}")
        row += [str(s.correct), str(s.errors), f"{s.calls / per_q:.1f}",
                _count(s.tokens / per_q), cost_text(s.cost_usd, s.cost_known),
                f"{s.latency_s:.2f}"]
        if several:
            row.append(f"{s.score - base:+.3f}")
        table.add_row(*row)
    return table


def console_for(stream: TextIO) -> Console:
    """A console on ``stream``; wide when it is not a terminal, so piped tables do not wrap.
    Markup is off: architecture names (``... [simulated]``) and error texts are data, and
    rich would take their brackets for style tags and drop them."""
    wide = None if stream.isatty() else PIPE_WIDTH
    return Console(file=stream, width=wide, markup=False)


def print_report(summaries: Sequence[EvalSummary], title: str, console: Console | None = None,
                 *, rating_scale: int | None = None) -> None:
    console = console or console_for(sys.stdout)
    console.print(summary_table(summaries, title, rating_scale=rating_scale))
    if any(s.selection_tests == "oracle" for s in summaries):
        console.print("ORACLE: selection inside the architecture saw the grading tests; the "
                      "score is an oracle pass@k, not a pass@1", highlight=False)
    if not all(s.cost_known for s in summaries):
        console.print("cost: some calls had no known price (model not in the price map); "
                      "'>=' marks the priced part only", highlight=False)
    for s in summaries:
        if s.resumed:
            console.print(f"{s.architecture}: {s.resumed} of {s.n} result(s) resumed from an "
                          "earlier run")
        failed = [r for r in s.results if r.get("error")]
        for r in failed[:ERROR_LINES]:
            console.print(f"{s.architecture}: {r['benchmark']}/{r['id']}: {r['error']}",
                          style="red", highlight=False)
        if len(failed) > ERROR_LINES:
            console.print(f"{s.architecture}: … and {len(failed) - ERROR_LINES} more "
                          "error(s) in the results file", style="red")
    judged = [s for s in summaries if s.judge_usage]
    for s in judged:
        u = s.judge_usage
        console.print(f"judging {s.architecture}: {u['calls']} call(s), "
                      f"{_count(u['tokens'])} tokens, "
                      f"{cost_text(u['cost_usd'], bool(u.get('cost_known', True)))}")


def comparison_chart(summaries: Sequence[EvalSummary], path: Path, title: str) -> Path:
    """Bars of score (with 95% intervals) and of calls per question, one per architecture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.architecture for s in summaries]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(6.0, 1.6 * len(names) + 3), 4))
    try:
        positions = range(len(names))
        # The interval clipped to [0, 1], where scores live.
        below = [min(s.score, Z_95 * s.stderr) for s in summaries]
        above = [min(1.0 - s.score, Z_95 * s.stderr) for s in summaries]
        left.bar(positions, [s.score for s in summaries], yerr=[below, above], capsize=4,
                 color="tab:blue")
        left.set_ylim(0, 1.05)
        left.set_ylabel("score")
        left.set_title("score (95% CI)")
        for position, s in zip(positions, summaries, strict=True):
            if s.selection_tests == "oracle":
                left.annotate("oracle tests", (position, s.score), ha="center", va="bottom",
                              fontsize=8, color="tab:red")
        right.bar(positions, [s.calls / max(s.n, 1) for s in summaries], color="tab:orange")
        right.set_ylabel("LLM calls per question")
        right.set_title("cost")
        for ax in (left, right):
            ax.set_xticks(list(positions))
            ax.set_xticklabels(names, rotation=20, ha="right")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=CHART_DPI)
    finally:
        plt.close(fig)
    return path
