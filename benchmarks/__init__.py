"""Benchmark datasets and their scorers.

    questions = load_benchmark("gsm8k", split="search", limit=50)
    scorer = scorer_for("gsm8k")
    score = await scorer.score(questions[0], response_text)   # Score(value, correct, detail)

Loaders (one module per dataset) turn the standard public files into
``Question`` records with answer keys for simulated models; ``splits`` makes
the deterministic search / held-out split; scorers grade by answer matching
(``numeric``, ``mathequiv``, ``choice``), by running code in ``itas.execution.sandbox``
(``codeexec``), or through an LLM judge that the caller plugs in (``score``).
"""

from itas.benchmarks.datafiles import DATA_DIR_ENV, data_dir
from itas.benchmarks.question import Question, difficulty
from itas.benchmarks.registry import BENCHMARKS, BenchmarkSpec, fetch_benchmark, load_benchmark
from itas.benchmarks.score import Judge, JudgeScorer, Score, Scorer
from itas.benchmarks.scoring import score_answer, scorer_for
from itas.benchmarks.splits import HELDOUT, SEARCH, split_of

__all__ = [
    "BENCHMARKS",
    "DATA_DIR_ENV",
    "HELDOUT",
    "SEARCH",
    "BenchmarkSpec",
    "Judge",
    "JudgeScorer",
    "Question",
    "Score",
    "Scorer",
    "data_dir",
    "difficulty",
    "fetch_benchmark",
    "load_benchmark",
    "score_answer",
    "scorer_for",
    "split_of",
]
