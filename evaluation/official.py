"""Judge prompts, reference answers and baseline answers read from benchmarks' own files, so
judged scores can be compared with published ones.

The project's judge prompts (``itas.techniques.judge``) stay the default; these files
replace them when given (``itas eval --judge-prompts/--reference-answers/
--baseline-answers``). Formats read, as their projects ship them:

* FastChat ``judge_prompts.jsonl`` (MT-Bench): one JSON object per line with ``name``,
  ``type`` ("single" or "pairwise"), ``system_prompt``, ``prompt_template`` (Python format
  placeholders) and ``output_format``. Single-answer grading uses, as FastChat does,
  ``single-v1`` for a first turn, ``single-v1-multi-turn`` for a second, and their
  ``single-math-v1*`` twins (reference-guided) for the categories FastChat grades with
  a reference (``NEED_REF_CATEGORIES``) when a reference answer is there.
* Arena-Hard's judge config (YAML): ``system_prompt`` and ``prompt_template`` (a string
  or a one-element list) with ``{question_1}``/``{answer_1}``/``{answer_2}`` (v0.1's
  ``judge_config.yaml``) or ``{QUESTION}``/``{ANSWER_A}``/``{ANSWER_B}`` (later configs,
  whose system prompt lives in code: write it into the YAML as ``system_prompt``).
* FastChat reference answers (``mt_bench/reference_answer/gpt-4.jsonl``):
  ``{"question_id", "choices": [{"turns": [str, ...]}]}``.
* Arena-Hard baseline answers (``model_answer/<model>.jsonl``): v0.1's
  ``{"question_id", "choices": [{"turns": [{"content"}]}]}`` or the later
  ``{"uid", "messages": [..., {"role": "assistant", "content": {"answer"}}]}``.

The judge agent fills the answer slots itself (``ANSWER_SLOT``...), so a prompt is sent
rendered except for the answers. Substitution is one pass over the template's own
placeholders: braces inside questions or answers are text, never placeholders. Every
file error names the file and line.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from itas.benchmarks.datafiles import read_jsonl
from itas.benchmarks.question import Question
from itas.errors import ConfigError
from itas.techniques.judge import ANSWER_SLOT, FIRST_SLOT, SECOND_SLOT

#: FastChat grades these MT-Bench categories against a reference answer.
NEED_REF_CATEGORIES = frozenset({"math", "reasoning", "coding", "arena-hard-200"})
PLACEHOLDER_RE = re.compile(r"\{(\w+)\}")
DIGEST_CHARS = 16
PAIR_KEYS = ({"question_1", "answer_1", "answer_2"}, {"QUESTION", "ANSWER_A", "ANSWER_B"})


def file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:DIGEST_CHARS]
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e


@dataclass(frozen=True, slots=True)
class OfficialPrompt:
    name: str
    system: str
    template: str

    def placeholders(self) -> set[str]:
        return set(PLACEHOLDER_RE.findall(self.template))

    def render(self, values: Mapping[str, str]) -> str:
        """The template with its placeholders filled in one pass; ConfigError naming a
        placeholder this prompt needs and the caller cannot fill."""
        missing = sorted(self.placeholders() - set(values))
        if missing:
            raise ConfigError(f"judge prompt {self.name!r} needs {', '.join(missing)}, which "
                              "this benchmark's questions do not provide")
        return PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], self.template)


@dataclass(frozen=True)
class JudgePrompts:
    """Prompts from one official file: FastChat's single-answer prompts by name, or one
    Arena-Hard pairwise prompt."""

    source: Path
    digest: str
    single: dict[str, OfficialPrompt] = field(default_factory=dict)
    pairwise: OfficialPrompt | None = None

    def for_single(self, question: Question, references: Sequence[str]
                   ) -> tuple[OfficialPrompt, dict[str, str]]:
        """The prompt and values (the answer as ``ANSWER_SLOT``) for grading the last turn of
        ``question.messages`` (the conversation so far), FastChat's way; ``references``:
        the reference answer of each turn (MT-Bench), or the one reference of a question."""
        turns = [m["content"] for m in question.messages if m["role"] == "user"]
        answers = [m["content"] for m in question.messages if m["role"] == "assistant"]
        category = str(question.metadata.get("category") or "")
        guided = bool(references) and (category in NEED_REF_CATEGORIES
                                       or question.benchmark != "mt_bench")
        multi = len(turns) > 1
        name = ("single-math-v1" if guided else "single-v1") + ("-multi-turn" if multi else "")
        prompt = self.single.get(name)
        if prompt is None:
            raise ConfigError(f"{self.source}: no judge prompt named {name!r} (FastChat's "
                              "judge_prompts.jsonl has it)")
        values = {"question": turns[-1], "answer": ANSWER_SLOT}
        for i, turn in enumerate(turns[:2], 1):
            values[f"question_{i}"] = turn
        if multi:
            values.update(answer_1=answers[0], answer_2=ANSWER_SLOT)
        for i, ref in enumerate(references[:2], 1):
            values[f"ref_answer_{i}"] = ref
        return prompt, values

    def for_pairwise(self, question: Question) -> tuple[OfficialPrompt, dict[str, str]]:
        if self.pairwise is None:
            raise ConfigError(f"{self.source}: no pairwise judge prompt (Arena-Hard's judge "
                              "config has one)")
        text = question.prompt
        return self.pairwise, {"question_1": text, "QUESTION": text, "answer_1": FIRST_SLOT,
                               "ANSWER_A": FIRST_SLOT, "answer_2": SECOND_SLOT,
                               "ANSWER_B": SECOND_SLOT}


def load_judge_prompts(path: str | Path) -> JudgePrompts:
    """FastChat's judge_prompts.jsonl, or an Arena-Hard judge config (.yaml)."""
    path = Path(path)
    digest = file_digest(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return JudgePrompts(path, digest, pairwise=_arena_prompt(path))
    single = {}
    for line, record in read_jsonl(path):
        where = f"{path}:{line}"
        for name in ("name", "type", "system_prompt", "prompt_template"):
            if not isinstance(record.get(name), str):
                raise ConfigError(f"{where}: field {name!r} must be a string")
        if record["type"] == "single":
            single[record["name"]] = OfficialPrompt(record["name"], record["system_prompt"],
                                                    record["prompt_template"])
    if not single:
        raise ConfigError(f"{path}: no single-answer judge prompts (type 'single')")
    return JudgePrompts(path, digest, single=single)


def _arena_prompt(path: Path) -> OfficialPrompt:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not a readable judge config ({e})") from e
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a judge config must be a mapping")
    template: Any = data.get("prompt_template")
    if isinstance(template, list) and len(template) == 1:
        template = template[0]
    if not isinstance(template, str):
        raise ConfigError(f"{path}: field 'prompt_template' must be a string (or a list of "
                          "one)")
    system = data.get("system_prompt")
    if not isinstance(system, str) or not system.strip():
        raise ConfigError(f"{path}: field 'system_prompt' is missing: Arena-Hard keeps it in "
                          "code since v2; copy it into the config")
    prompt = OfficialPrompt(str(data.get("bench_name") or path.stem), system, template)
    if not any(keys <= prompt.placeholders() for keys in PAIR_KEYS):
        raise ConfigError(f"{path}: 'prompt_template' must place the question and both "
                          "answers ({question_1}, {answer_1}, {answer_2} or {QUESTION}, "
                          "{ANSWER_A}, {ANSWER_B})")
    return prompt


def load_reference_answers(path: str | Path) -> dict[str, list[str]]:
    """FastChat reference answers: question id -> the answer of each turn."""
    path = Path(path)
    found: dict[str, list[str]] = {}
    for line, record in read_jsonl(path):
        where = f"{path}:{line}"
        qid = record.get("question_id")
        turns = _first_choice_turns(record, where)
        if not isinstance(qid, str | int) or not turns:
            raise ConfigError(f"{where}: expected question_id and choices[0].turns")
        found[str(qid)] = [t if isinstance(t, str) else str(t.get("content", "")) for t in turns]
    return found


def load_baseline_answers(path: str | Path) -> dict[str, str]:
    """Arena-Hard baseline answers (either format): question id -> answer text."""
    path = Path(path)
    found: dict[str, str] = {}
    for line, record in read_jsonl(path):
        where = f"{path}:{line}"
        if "uid" in record:
            qid, text = record["uid"], _assistant_answer(record, where)
        else:
            qid = record.get("question_id")
            turns = _first_choice_turns(record, where)
            first = turns[0] if turns else None
            text = first.get("content") if isinstance(first, dict) else first
        if not isinstance(qid, str | int) or not isinstance(text, str) or not text:
            raise ConfigError(f"{where}: expected a question id and an answer text "
                              "(Arena-Hard model_answer format)")
        found[str(qid)] = text
    return found


def _first_choice_turns(record: Mapping[str, Any], where: str) -> list[Any]:
    choices = record.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ConfigError(f"{where}: field 'choices' must be a non-empty list of objects")
    turns = choices[0].get("turns")
    return turns if isinstance(turns, list) else []


def _assistant_answer(record: Mapping[str, Any], where: str) -> str | None:
    messages = record.get("messages")
    if not isinstance(messages, list):
        raise ConfigError(f"{where}: field 'messages' must be a list")
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "assistant":
            content = message.get("content")
            if isinstance(content, dict):
                content = content.get("answer")
            return content if isinstance(content, str) else None
    return None


def with_references(questions: Sequence[Question], references: Mapping[str, list[str]]
                    ) -> list[Question]:
    """The questions with their reference answers from a file (those it has)."""
    import dataclasses

    return [dataclasses.replace(q, reference=references[q.id]) if q.id in references else q
            for q in questions]
