"""Open-ended chat benchmarks scored by an LLM judge: MT-Bench, Arena-Hard, AlpacaEval.

They have no checkable answer, so ``answer_key`` is None (simulated models
then write a deterministic text and judge at random).

* MT-Bench ``question.jsonl``: ``{"question_id", "category", "turns": [str, str]}``
  (and ``reference`` for some math/coding questions, kept as the reference).
  Two user turns: ``turns`` holds both, ``messages`` the first; the second is
  asked with ``Question.conversation([first_answer])``.
* Arena-Hard ``question.jsonl``: ``{"question_id", "category", "cluster",
  "turns": [{"content"}]}``.
* AlpacaEval: a JSON list of ``{"instruction", "output", "generator",
  "dataset"}``; ``output`` is the baseline model's answer that a judge
  compares against, kept as the reference. Ids are 0-based positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from itas.benchmarks.datafiles import field, read_json, read_jsonl
from itas.benchmarks.question import Question, user
from itas.errors import ConfigError

MT_BENCH_FILES = ("mt_bench/question.jsonl",)
MT_BENCH_URLS = (
    "https://raw.githubusercontent.com/lm-sys/FastChat/main/fastchat/llm_judge/data/mt_bench/question.jsonl",
)
ARENA_HARD_FILES = ("arena_hard/question.jsonl",)
ARENA_HARD_URLS = (
    "https://raw.githubusercontent.com/lmarena/arena-hard-auto/main/data/arena-hard-v0.1/question.jsonl",
)
ALPACA_EVAL_FILES = ("alpaca_eval/alpaca_eval.json",)
ALPACA_EVAL_URLS = (
    "https://huggingface.co/datasets/tatsu-lab/alpaca_eval/resolve/main/alpaca_eval.json",
)


def _strings(values: list[object], where: str, name: str) -> tuple[str, ...]:
    if not values or not all(isinstance(v, str) and v for v in values):
        raise ConfigError(f"{where}: field {name!r} must be a non-empty list of strings")
    return tuple(str(v) for v in values)


def load_mt_bench(paths: Sequence[Path]) -> list[Question]:
    path = paths[0]
    questions = []
    for line, record in read_jsonl(path):
        where = f"{path}:{line}"
        qid = str(field(record, "question_id", where, (int, str)))
        turns = _strings(field(record, "turns", where, list), where, "turns")
        questions.append(
            Question(
                id=qid,
                benchmark="mt_bench",
                messages=user(turns[0]),
                reference=record.get("reference"),
                metadata={"category": record.get("category")},
                turns=turns,
            )
        )
    return questions


def load_arena_hard(paths: Sequence[Path]) -> list[Question]:
    path = paths[0]
    questions = []
    for line, record in read_jsonl(path):
        where = f"{path}:{line}"
        qid = str(field(record, "question_id", where, (int, str)))
        raw_turns = field(record, "turns", where, list)
        contents = [t.get("content") if isinstance(t, dict) else None for t in raw_turns]
        turns = _strings(contents, where, "turns[].content")
        questions.append(
            Question(
                id=qid,
                benchmark="arena_hard",
                messages=user(turns[0]),
                metadata={"category": record.get("category"), "cluster": record.get("cluster")},
                turns=turns if len(turns) > 1 else (),
            )
        )
    return questions


def load_alpaca_eval(paths: Sequence[Path]) -> list[Question]:
    path = paths[0]
    data = read_json(path)
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a JSON list of {{'instruction', 'output', ...}}")
    questions = []
    for index, record in enumerate(data):
        where = f"{path}: item {index}"
        if not isinstance(record, dict):
            raise ConfigError(f"{where}: expected an object")
        instruction = field(record, "instruction", where)
        questions.append(
            Question(
                id=str(index),
                benchmark="alpaca_eval",
                messages=user(instruction),
                reference=record.get("output"),
                metadata={"generator": record.get("generator"), "dataset": record.get("dataset")},
            )
        )
    return questions
