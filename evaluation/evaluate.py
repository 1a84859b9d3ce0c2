"""Scoring an architecture on benchmark questions: the API behind ``itas eval`` and the search.

    async with AsyncClient(broker) as client:
        summary = await evaluate(arch, questions, ViaBroker(client), concurrency=16,
                                 results_path=Path("runs/x/results.jsonl"), progress=True)

Questions run through any ``QueryRunner``: ``ViaBroker`` (whole queries to the
orchestrator service) or an ``Orchestrator`` over an ``InProcessCaller``; up to
``concurrency`` are in flight at once. Each query carries the question's answer
key as ``sim`` (only simulated models read it) and, when the architecture says
``tests: benchmark``, the tests a model may be shown (``Question.visible_tests``) as
``tests``; grading uses the hidden ones. ``oracle_tests=True`` sends the grading tests
instead (pass@k studies); every record and the summary say which
(``selection_tests``: visible, oracle or none; see ``itas.benchmarks.selection``). A
multi-turn
question (MT-Bench) is answered turn by turn, each turn with the conversation so
far, and each turn is scored on its own (its judge sees the conversation up to
that turn); the question's score is the mean over turns.

A question that fails (provider error, no candidates, timeout, a judge without a
verdict) is recorded with its error and scored 0, and counted in ``errors``;
it is never dropped, so a flaky provider cannot raise a score by losing the
hard questions. A ``ConfigError`` (no judge for a judge-scored benchmark, a bad
file) stops the evaluation instead: every question would fail the same way.

Resume: with ``results_path`` every scored question is appended to a JSONL file
at once (one line, flushed), keyed by (architecture name + hash of its spec + the
selection tests, benchmark, question id); an evaluation finds the questions already there and
runs only the others. Killing the process loses at most the questions in
flight; a torn last line is cut off when the file is opened again. A changed
spec gets a new hash, so its old results are not reused. Errors count as done
(rerunning would change the sample a failing provider is measured on) unless
``retry_errors`` is set; a later record for the same key replaces an earlier one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anyio

from itas.benchmarks.mixeval import MULTIPLE_CHOICE
from itas.benchmarks.question import Question
from itas.benchmarks.score import Judge, JudgeScorer, Score, Scorer
from itas.benchmarks.scoring import MixEvalScorer, scorer_for
from itas.benchmarks.selection import SelectionTests, selection_label, selection_tests_for
from itas.errors import ConfigError, ItasError
from itas.orchestrator.runner import QueryRunner
from itas.spec import Architecture
from itas.techniques.contract import UsageTotals

DEFAULT_CONCURRENCY = 8
SPEC_HASH_CHARS = 12
ERROR_CHARS = 500
Key = tuple[str, str, str]  # (architecture name#spec hash@selection, benchmark, question id)
LEGACY_SELECTION = "unlabelled"  # records written before the label existed never match


def spec_hash(arch: Architecture) -> str:
    """A short stable hash of the spec: same spec, same hash, in any process."""
    blob = json.dumps(arch.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:SPEC_HASH_CHARS]


def arch_label(arch: Architecture) -> str:
    return f"{arch.name}#{spec_hash(arch)}"


def selection_of(arch: Architecture, oracle_tests: bool) -> SelectionTests:
    return selection_label(arch.tests == "benchmark", oracle_tests)


def record_key(record: Mapping[str, Any]) -> Key:
    selection = record.get("selection_tests", LEGACY_SELECTION)
    return (f"{record['architecture']}#{record['spec_hash']}@{selection}",
            str(record["benchmark"]), str(record["id"]))


@dataclass
class Tally:
    """Running totals while an evaluation goes (what a progress bar shows)."""

    total: int
    done: int = 0
    score_sum: float = 0.0
    errors: int = 0
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True

    def add(self, record: Mapping[str, Any]) -> None:
        self.done += 1
        self.score_sum += float(record["score"])
        self.errors += 1 if record.get("error") else 0
        self.calls += int(record.get("calls", 0))
        self.tokens += int(record.get("tokens", 0))
        self.cost_usd += float(record.get("cost_usd", 0.0))
        self.cost_known = self.cost_known and record_cost_known(record)

    @property
    def score(self) -> float:
        return self.score_sum / self.done if self.done else 0.0


Progress = Callable[[dict[str, Any], Tally], None]


def record_cost_known(record: Mapping[str, Any]) -> bool:
    """False when some call of the record had no price (its ``cost_usd`` is a lower bound)."""
    return bool((record.get("usage") or {}).get("cost_known", True))


@runtime_checkable
class Board(Protocol):
    """Shows several evaluations' progress (``eval_report.ProgressBoard``)."""

    def track(self, name: str, tally: Tally) -> Progress: ...


@dataclass
class EvalSummary:
    """One architecture on one question set. ``score`` is the mean in [0, 1] (errors count 0);
    ``correct`` counts right/wrong verdicts that were right (judge ratings have none);
    ``stderr`` is the standard error of ``score`` over the questions;
    ``calls``, ``tokens``, ``cost_usd`` are totals for the architecture (judging apart,
    in ``judge_usage``); ``cost_known`` False means some call had no price, so
    ``cost_usd`` is only a lower bound; ``latency_s`` is the mean time to answer a
    question; ``selection_tests`` says what tests selection saw (visible, oracle, none)."""

    architecture: str
    benchmark: str
    n: int
    score: float
    correct: int
    errors: int
    calls: int
    tokens: int
    cost_usd: float
    latency_s: float
    results: list[dict[str, Any]] = field(default_factory=list, repr=False)
    spec_hash: str = ""
    cached_calls: int = 0
    stderr: float = 0.0
    judge_usage: dict[str, Any] = field(default_factory=dict)
    resumed: int = 0
    wall_s: float = 0.0
    cost_known: bool = True
    selection_tests: SelectionTests = "none"

    @classmethod
    def from_results(cls, arch: Architecture, benchmark: str, results: list[dict[str, Any]],
                     *, resumed: int = 0, wall_s: float = 0.0,
                     selection_tests: SelectionTests = "none") -> EvalSummary:
        n = len(results)
        scores = [float(r["score"]) for r in results]
        mean = math.fsum(scores) / n if n else 0.0
        var = math.fsum((s - mean) ** 2 for s in scores) / (n - 1) if n > 1 else 0.0
        judge = UsageTotals()
        for r in results:
            judge.merge(r.get("judge_usage"))
        return cls(
            architecture=arch.name, benchmark=benchmark, n=n, score=mean,
            correct=sum(1 for r in results if r.get("correct") is True),
            errors=sum(1 for r in results if r.get("error")),
            calls=sum(int(r.get("calls", 0)) for r in results),
            tokens=sum(int(r.get("tokens", 0)) for r in results),
            cost_usd=math.fsum(float(r.get("cost_usd", 0.0)) for r in results),
            latency_s=math.fsum(float(r.get("latency_s", 0.0)) for r in results) / n if n
            else 0.0,
            results=results, spec_hash=spec_hash(arch),
            cached_calls=sum(int((r.get("usage") or {}).get("cached_calls", 0))
                             for r in results),
            stderr=math.sqrt(var / n) if n else 0.0,
            judge_usage=judge.to_dict() if judge.calls else {},
            resumed=resumed, wall_s=wall_s,
            cost_known=all(record_cost_known(r) for r in results),
            selection_tests=selection_tests)

    def scores(self) -> dict[str, float]:
        """Score by question id (``benchmark/id`` when several benchmarks are mixed), for
        paired comparisons of two architectures on the same questions."""
        several = len({r["benchmark"] for r in self.results}) > 1
        return {(f"{r['benchmark']}/{r['id']}" if several else str(r["id"])): float(r["score"])
                for r in self.results}

    def to_dict(self, *, with_results: bool = False) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not with_results:
            data.pop("results")
        return data


class ResultsLog:
    """The append-only JSONL of per-question records behind resume (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._cut_torn_tail()
        self._file = path.open("a", encoding="utf-8")

    def _cut_torn_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # A process killed mid-write leaves a partial line; the question reruns.
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def load(self) -> dict[Key, dict[str, Any]]:
        """Every record by key, later lines winning; ConfigError names a bad line."""
        records: dict[Key, dict[str, Any]] = {}
        with self.path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    records[record_key(record)] = record
                except (ValueError, KeyError, TypeError) as e:
                    raise ConfigError(f"{self.path}:{number}: not a results record ({e}); "
                                      "fix or delete that line to resume") from e
        return records

    def append(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def needs_missing_judge(scorer: Scorer, questions: Sequence[Question]) -> bool:
    """True when ``scorer`` would ask for a judge it does not have for some question."""
    if isinstance(scorer, JudgeScorer):
        return scorer.judge is None
    if isinstance(scorer, MixEvalScorer):
        return scorer.free_form.judge is None and any(
            q.metadata.get("problem_type") != MULTIPLE_CHOICE for q in questions)
    return False


def _scorers(questions: Sequence[Question], scorer: Scorer | None, judge: Judge | None
             ) -> dict[str, Scorer]:
    limiter = anyio.CapacityLimiter(os.cpu_count() or 1)  # code runs, one per core
    scorers: dict[str, Scorer] = {}
    kinds = {q.benchmark: q.scorer for q in questions}
    for benchmark, kind in kinds.items():
        chosen = scorer or scorer_for(benchmark, kind=kind, judge=judge, limiter=limiter)
        if needs_missing_judge(chosen, [q for q in questions if q.benchmark == benchmark]):
            raise ConfigError(f"benchmark {benchmark!r} is scored by an LLM judge; pass "
                              "judge=... (itas eval --judge PROVIDER:MODEL)")
        scorers[benchmark] = chosen
    return scorers


class _QuestionRun:
    """Answers and scores one question; every failure becomes the record's ``error``."""

    def __init__(self, arch: Architecture, runner: QueryRunner, scorer: Scorer,
                 judge: Judge | None, timeout_s: float | None, selection: SelectionTests
                 ) -> None:
        self.arch, self.runner, self.scorer = arch, runner, scorer
        self.judge, self.timeout_s, self.selection = judge, timeout_s, selection

    async def __call__(self, question: Question) -> dict[str, Any]:
        record: dict[str, Any] = {
            "architecture": self.arch.name, "spec_hash": spec_hash(self.arch),
            "selection_tests": self.selection,
            "benchmark": question.benchmark, "id": question.id, "answer": None,
            "score": 0.0, "correct": None, "detail": "", "error": None,
            "calls": 0, "tokens": 0, "cost_usd": 0.0, "latency_s": 0.0, "usage": {},
        }
        usage = UsageTotals()
        answers: list[str] = []
        started = anyio.current_time()
        try:
            with anyio.fail_after(self.timeout_s):
                await self._answer(question, answers, usage)
                record["latency_s"] = anyio.current_time() - started
                score = await self._score(question, answers)
            record.update(score=score.value, correct=score.correct, detail=score.detail)
        except ConfigError:
            raise
        except (ItasError, TimeoutError) as e:
            message = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            record.update(score=0.0, correct=False, error=message[:ERROR_CHARS])
            if not record["latency_s"]:
                record["latency_s"] = anyio.current_time() - started
        record.update(answer=answers[-1] if answers else None, calls=usage.calls,
                      tokens=usage.tokens, cost_usd=usage.cost_usd, usage=usage.to_dict())
        if len(answers) > 1 or len(question.turns) > 1:
            record["answers"] = answers
        take_usage = getattr(self.judge, "take_usage", None)
        if take_usage is not None:
            judge_usage = take_usage(question)
            if judge_usage.get("calls"):
                record["judge_usage"] = judge_usage
        return record

    def _turn_messages(self, question: Question, answers: list[str]) -> list[dict[str, str]]:
        return question.conversation(answers) if answers else list(question.messages)

    async def _answer(self, question: Question, answers: list[str], usage: UsageTotals) -> None:
        tests = selection_tests_for(question, self.selection)
        for _ in range(max(1, len(question.turns))):
            reply = await self.runner.run(self.arch, self._turn_messages(question, answers),
                                          sim=question.answer_key, tests=tests)
            usage.merge(reply.get("usage"))
            answer = reply.get("answer")
            if not isinstance(answer, str):
                raise ItasError(f"the runner's reply has no answer text: {reply!r:.200}")
            answers.append(answer)

    async def _score(self, question: Question, answers: list[str]) -> Score:
        if len(answers) == 1:
            return await self.scorer.score(question, answers[0])
        scores = []
        for turn, answer in enumerate(answers, 1):
            asked = dataclasses.replace(
                question, messages=self._turn_messages(question, answers[:turn - 1]), turns=(),
                metadata={**question.metadata, "turn": turn})
            scores.append(await self.scorer.score(asked, answer))
        verdicts = [s.correct for s in scores]
        return Score(math.fsum(s.value for s in scores) / len(scores),
                     None if None in verdicts else all(verdicts),
                     "; ".join(s.detail for s in scores))


async def evaluate(
    arch: Architecture,
    questions: Sequence[Question],
    runner: QueryRunner,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    results_path: Path | None = None,
    progress: bool | Progress | Board = False,
    scorer: Scorer | None = None,
    judge: Judge | None = None,
    question_timeout_s: float | None = None,
    retry_errors: bool = False,
    oracle_tests: bool = False,
) -> EvalSummary:
    """Run and score every question (see the module docstring); results in question order.

    progress: True shows a rich progress bar; a ``Board`` adds a bar to the caller's
    display; a callable gets ``(record, tally)`` after each question. scorer: one scorer
    for every question (default: the benchmark's, with ``judge`` for judge-scored ones).
    question_timeout_s: a deadline per question (all its turns and its scoring), recorded
    as an error when it passes. retry_errors: rerun questions whose record is an error.
    oracle_tests: selection sees the grading tests (labelled ``oracle`` everywhere).
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    ids = [(q.benchmark, q.id) for q in questions]
    if len(set(ids)) != len(ids):
        raise ConfigError("evaluate: the questions have duplicate (benchmark, id) pairs")
    started = time.perf_counter()
    scorers = _scorers(questions, scorer, judge)
    benchmark = "+".join(scorers) or "none"
    selection = selection_of(arch, oracle_tests)
    label = f"{arch_label(arch)}@{selection}"
    log = ResultsLog(results_path) if results_path is not None else None
    try:
        done: dict[Key, dict[str, Any]] = {}
        if log is not None:
            previous = log.load()
            for q in questions:
                record = previous.get((label, q.benchmark, q.id))
                if record is not None and not (retry_errors and record.get("error")):
                    done[(label, q.benchmark, q.id)] = record
        todo = [q for q in questions if (label, q.benchmark, q.id) not in done]
        tally = Tally(len(questions))
        for record in done.values():
            tally.add(record)
        report = (progress if callable(progress) and not isinstance(progress, bool | Board)
                  else None)
        runs = {b: _QuestionRun(arch, runner, s, judge, question_timeout_s, selection)
                for b, s in scorers.items()}
        fresh: dict[Key, dict[str, Any]] = {}

        async def worker(queue: Iterator[Question]) -> None:
            for question in queue:
                record = await runs[question.benchmark](question)
                if log is not None:
                    log.append(record)
                fresh[(label, question.benchmark, question.id)] = record
                tally.add(record)
                if report is not None:
                    report(record, tally)

        queue = iter(todo)
        try:
            with _board(progress) as board:
                if board is not None:
                    report = board.track(arch.name, tally)
                async with anyio.create_task_group() as tg:
                    for _ in range(min(concurrency, len(todo))):
                        tg.start_soon(worker, queue)
        except BaseExceptionGroup as group:
            config = group.subgroup(ConfigError)
            if config is not None:
                raise _first_leaf(config) from group
            raise
    finally:
        if log is not None:
            log.close()
    results = [done.get(k) or fresh[k] for k in ((label, b, i) for b, i in ids)]
    return EvalSummary.from_results(arch, benchmark, results, resumed=len(done),
                                    wall_s=time.perf_counter() - started,
                                    selection_tests=selection)


async def collect_answers(arch: Architecture, questions: Sequence[Question],
                          runner: QueryRunner, *, concurrency: int = DEFAULT_CONCURRENCY,
                          results_path: Path | None = None,
                          progress: bool | Progress | Board = False) -> dict[str, str]:
    """Answers of ``arch`` by question id, unscored (a pairwise judge's baseline).

    Resumable like ``evaluate``; questions it failed on are left out (their judging
    then fails with a clear error and counts against the evaluated architecture's
    errors, never silently for or against it)."""
    if isinstance(progress, Board):
        progress = _Labelled(progress, "baseline ")
    summary = await evaluate(arch, questions, runner, concurrency=concurrency,
                             results_path=results_path, progress=progress,
                             scorer=_Unscored())
    return {r["id"]: r["answer"] for r in summary.results
            if not r["error"] and isinstance(r["answer"], str)}


class _Labelled:
    """A board whose bars' names start with ``prefix``."""

    def __init__(self, board: Board, prefix: str) -> None:
        self.board, self.prefix = board, prefix

    def track(self, name: str, tally: Tally) -> Progress:
        return self.board.track(self.prefix + name, tally)


class _Unscored:
    needs_judge = False

    async def score(self, question: Question, answer_text: str) -> Score:
        return Score(0.0, None, "not scored")


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _board(progress: bool | Progress | Board) -> Any:
    """A context giving the board to track with: a new one for ``True``, the caller's own
    (left open) for a board, else None."""
    if progress is True:
        from itas.evaluation.report import ProgressBoard

        return ProgressBoard()
    if isinstance(progress, Board):
        return contextlib.nullcontext(progress)
    return contextlib.nullcontext()
