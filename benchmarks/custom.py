"""Benchmarks defined by their user: a JSONL or JSON data file plus a few fields.

A definition (a YAML file, a mapping in a search config, or ``itas eval`` flags)::

    name: capitals               # names the questions (ids are "<name>/<id>" in keys)
    data: capitals.jsonl         # JSONL, a JSON list of objects, or .gz of either;
                                 # relative paths start at the definition file's folder
    scorer: exact                # numeric | exact | choice | math | code | judge
    question_field: question     # shown to the model through the prompt template
    answer_field: answer         # what grades (see below)
    id_field: id                 # optional; default: the record's 0-based position
    prompt: "Name the capital of {question}. End with 'The answer is X.'"
                                 # {question} is the question field, {choices} the lettered
                                 # options (choice), {field} any field of the record;
                                 # {{ and }} are braces; default "{question}"
    choices_field: options       # choice: the options (a list of texts)
    tests_field: tests           # code: the grading asserts (a list of statements)
    visible_tests_field: examples  # code, optional: asserts a model may be shown
    entry_point_field: entry_point # code, optional: the function under test

What the answer field holds, by scorer: ``numeric`` a number (or a text holding one);
``exact`` the accepted answer, or a list of them; ``choice`` the right option as a letter,
a 0-based index or the option's text; ``math`` a LaTeX answer; ``code`` a reference
solution (optional: only simulated models need it); ``judge`` an optional reference
answer the judge is shown.

Simulated models need an answer key per question; it is derived here the way the
built-in loaders derive theirs: a correct response the scorer accepts and up to three
wrong ones it rejects (numbers off by a slip, other questions' answers, other option
letters, a changed final box, mutants of the reference program). A key is only made
when the answer field is there; without one a simulated model writes filler text.

Errors name the definition or the data file, the line and the field. No I/O beyond
reading the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from itas.answers.choice import LETTERS
from itas.answers.mathequiv import normalize as normalize_math
from itas.answers.numeric import extract_number, format_number
from itas.benchmarks import gsm8k, math500
from itas.benchmarks.datafiles import read_json, read_jsonl
from itas.benchmarks.examples import signature_test
from itas.benchmarks.humaneval import fenced
from itas.benchmarks.mbpp import called_function
from itas.benchmarks.mutate import mutants
from itas.benchmarks.question import Question, make_key, unit_hash, user
from itas.errors import ConfigError

ScorerKind = Literal["numeric", "exact", "choice", "math", "code", "judge"]
#: The built-in scorers a definition may name (``itas.benchmarks.scoring`` builds them).
SCORER_KINDS: tuple[str, ...] = get_args(ScorerKind)
DEFINITION_SUFFIXES = (".yaml", ".yml")
DATA_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
MAX_WRONG = 3
CHOICES_PLACEHOLDER = "choices"
QUESTION_PLACEHOLDER = "question"
CHOICE_INSTRUCTION = "Answer with the letter of the correct option."


class BenchmarkDefinition(BaseModel):
    """One user-defined benchmark (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    data: str = Field(min_length=1)
    scorer: ScorerKind
    question_field: str = "question"
    answer_field: str | None = "answer"
    id_field: str | None = None
    prompt: str = "{question}"
    choices_field: str | None = None
    tests_field: str | None = None
    visible_tests_field: str | None = None
    entry_point_field: str | None = None
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> BenchmarkDefinition:
        from itas.benchmarks.registry import BENCHMARKS

        if self.name in BENCHMARKS:
            raise ValueError(f"name: {self.name!r} is a built-in benchmark; pick another name")
        if self.scorer == "choice" and not self.choices_field:
            raise ValueError("choices_field: the choice scorer needs the field with the options")
        if self.scorer == "code" and not self.tests_field:
            raise ValueError("tests_field: the code scorer needs the field with the tests")
        if self.scorer in ("numeric", "exact", "choice", "math") and not self.answer_field:
            raise ValueError(f"answer_field: the {self.scorer} scorer needs the answer")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.prompt) if f is not None]
        except ValueError as e:
            raise ValueError(f"prompt: not a valid template ({e}); write {{ and }} as "
                             "{{{{ and }}}}") from e
        if any(not f.isidentifier() for f in fields):
            raise ValueError("prompt: placeholders must be plain field names like {question}")
        return self

    def placeholders(self) -> list[str]:
        return [f for _, f, _, _ in string.Formatter().parse(self.prompt) if f]

    def identity(self) -> dict[str, Any]:
        """What the scores depend on besides the data's content (the data's path does not)."""
        return self.model_dump(mode="json", exclude={"data", "description"})


def validation_lines(error: ValidationError, source: str) -> str:
    """A pydantic error as lines ``source: field.path: problem`` (config files share it)."""
    lines = []
    for err in error.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{source}: {where}: {message}")
    return "\n".join(lines)


def parse_definition(data: Any, source: str, base_dir: Path | None = None
                     ) -> BenchmarkDefinition:
    """A validated definition; ``data`` relative to ``base_dir``. ConfigError lines read
    ``source: field: problem``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a benchmark definition must be a mapping")
    try:
        definition = BenchmarkDefinition.model_validate(dict(data))
    except ValidationError as e:
        raise ConfigError(validation_lines(e, source)) from e
    path = Path(definition.data).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = (base_dir / path).resolve()
    return definition.model_copy(update={"data": str(path)})


def is_data_file(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(DATA_SUFFIXES)


def is_definition_file(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(DEFINITION_SUFFIXES)


def definition_from(ref: str | os.PathLike[str], fields: Mapping[str, Any] | None = None
                    ) -> BenchmarkDefinition:
    """The definition a file names: a YAML definition (``fields`` override its values) or
    a data file described by ``fields`` (``scorer`` at least; ``name`` defaults to the file
    name)."""
    path = Path(ref).expanduser()
    given = {k: v for k, v in (fields or {}).items() if v is not None}
    if is_definition_file(path):
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"{path}: cannot read benchmark definition ({e.strerror})") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from e
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: a benchmark definition must be a mapping")
        return parse_definition({**loaded, **given}, str(path), path.parent.resolve())
    stem = path.name.split(".", 1)[0] or "custom"
    data = {"name": stem, **given, "data": str(path.resolve())}
    if "scorer" not in data:
        raise ConfigError(f"benchmark {path}: a data file needs a scorer (--scorer "
                          f"{'|'.join(SCORER_KINDS)}) and its fields (--question-field, "
                          "--answer-field, ...), or a YAML definition")
    return parse_definition(data, f"benchmark {path}")


def definition_digest(definition: BenchmarkDefinition) -> str:
    blob = json.dumps(definition.identity(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# -- loading ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    qid: str
    where: str
    record: dict[str, Any]


def _rows(definition: BenchmarkDefinition) -> list[_Row]:
    path = Path(definition.data)
    if not path.is_file():
        raise ConfigError(f"benchmark {definition.name!r}: data file {path} not found")
    if ".jsonl" in path.name.lower():
        records = [(f"{path}:{line}", record) for line, record in read_jsonl(path)]
    else:
        data = read_json(path)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ConfigError(f"{path}: expected a JSON list of objects (one per question)")
        records = [(f"{path}: item {i}", r) for i, r in enumerate(data)]
    rows: list[_Row] = []
    seen: dict[str, str] = {}
    for position, (where, record) in enumerate(records):
        if definition.id_field is None:
            qid = str(position)
        else:
            value = record.get(definition.id_field)
            if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
                raise ConfigError(f"{where}: field {definition.id_field!r} (the id) must be a "
                                  "non-empty string or an integer")
            qid = str(value)
        if qid in seen:
            raise ConfigError(f"{where}: id {qid!r} again (first at {seen[qid]})")
        seen[qid] = where
        rows.append(_Row(qid, where, record))
    if not rows:
        raise ConfigError(f"{path}: no questions")
    return rows


def _text(row: _Row, name: str) -> str:
    if name not in row.record:
        raise ConfigError(f"{row.where}: missing field {name!r}")
    value = row.record[name]
    if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
        raise ConfigError(f"{row.where}: field {name!r} must be a non-empty text or a number, "
                          f"got {type(value).__name__}")
    return str(value)


def _strings(row: _Row, name: str) -> list[str]:
    if name not in row.record:
        raise ConfigError(f"{row.where}: missing field {name!r}")
    value = row.record[name]
    if not isinstance(value, list) or not value or not all(
            isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{row.where}: field {name!r} must be a non-empty list of texts")
    return list(value)


def _choice_index(row: _Row, name: str, options: Sequence[str]) -> int:
    value = row.record.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(options):
        return value
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 1 and text.upper() in LETTERS[:len(options)]:
            return LETTERS.index(text.upper())
        if text in options:
            return list(options).index(text)
    raise ConfigError(f"{row.where}: field {name!r} must name one of the {len(options)} "
                      "options: a letter, a 0-based index or the option's text")


def _prompt(definition: BenchmarkDefinition, row: _Row, choices: str | None) -> str:
    values: dict[str, str] = {}
    for name in definition.placeholders():
        if name == CHOICES_PLACEHOLDER and choices is not None:
            values[name] = choices
        elif name == QUESTION_PLACEHOLDER:
            values[name] = _text(row, definition.question_field)
        else:
            values[name] = _text(row, name)
    text = definition.prompt.format_map(values)
    if choices is not None and CHOICES_PLACEHOLDER not in values:
        text = f"{text}\n{choices}\n{CHOICE_INSTRUCTION}"
    return text


@dataclass(frozen=True, slots=True)
class _Pools:
    """Answers across the file, where wrong answers for one question come from others."""

    accepted: dict[str, list[str]]  # exact: accepted answers by id; judge: the reference
    wordy_math: list[str]  # math: answers without a digit (names, expressions)

    @classmethod
    def of(cls, definition: BenchmarkDefinition, rows: Sequence[_Row]) -> _Pools:
        field_name, kind = definition.answer_field, definition.scorer
        accepted: dict[str, list[str]] = {}
        if field_name and kind in ("exact", "judge", "math"):
            for row in rows:
                if kind == "exact" or field_name in row.record:
                    accepted[row.qid] = _accepted(row, field_name)
        wordy = sorted({a[0] for a in accepted.values()
                        if kind == "math" and not any(c.isdigit() for c in a[0])})
        return cls(accepted, wordy)

    def others(self, qid: str, salt: str) -> list[str]:
        """Up to three other questions' answers not accepted for ``qid``, seeded order."""
        taken = {a.strip().casefold() for a in self.accepted.get(qid, [])}
        pool = sorted({a[0] for a in self.accepted.values()
                       if a[0].strip().casefold() not in taken},
                      key=lambda a: unit_hash(salt, qid, a))
        return pool[:MAX_WRONG]


def load_definition(definition: BenchmarkDefinition) -> list[Question]:
    """Every question of the data file, with keys for simulated models (module docstring)."""
    rows = _rows(definition)
    pools = _Pools.of(definition, rows)
    questions = []
    for row in rows:
        choices = None
        options: list[str] = []
        if definition.scorer == "choice":
            options = _strings(row, definition.choices_field or "")
            if len(options) > len(LETTERS):
                raise ConfigError(f"{row.where}: at most {len(LETTERS)} options")
            choices = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
        questions.append(Question(
            id=row.qid, benchmark=definition.name,
            messages=user(_prompt(definition, row, choices)), scorer=definition.scorer,
            **_by_kind(definition, row, options, pools)))
    return questions


def _accepted(row: _Row, name: str) -> list[str]:
    if isinstance(row.record.get(name), list):
        return _strings(row, name)
    return [_text(row, name)]


def _stated(answer: str) -> str:
    return f"The answer is {answer}."


def _by_kind(definition: BenchmarkDefinition, row: _Row, options: Sequence[str],
             pools: _Pools) -> dict[str, Any]:
    """reference, metadata, visible tests and answer key of one question."""
    name, qid, kind = definition.name, row.qid, definition.scorer
    answer_field = definition.answer_field or ""
    if kind == "numeric":
        text = _text(row, answer_field)
        value = extract_number(text)
        if value is None:
            raise ConfigError(f"{row.where}: field {answer_field!r} holds no number: {text!r}")
        final = format_number(value)
        wrong = [_stated(format_number(v)) for v in gsm8k.wrong_values(value, qid)]
        return {"reference": final, "answer_key": make_key(name, qid, _stated(final), wrong)}
    if kind == "exact":
        accepted = pools.accepted[qid]
        wrong = [_stated(w) for w in pools.others(qid, "exact-wrong")]
        return {"reference": accepted,
                "answer_key": make_key(name, qid, _stated(accepted[0]), wrong)}
    if kind == "choice":
        right = _choice_index(row, answer_field, options)
        others = sorted((LETTERS[i] for i in range(len(options)) if i != right),
                        key=lambda letter: unit_hash("choice-wrong", qid, letter))
        return {"reference": [right], "metadata": {"options": list(options)},
                "answer_key": make_key(name, qid, _stated(LETTERS[right]),
                                       [_stated(w) for w in others[:MAX_WRONG]])}
    if kind == "math":
        answer = pools.accepted[qid][0]
        wrong = math500.wrong_answers(answer, qid, [
            a for a in pools.wordy_math if normalize_math(a) != normalize_math(answer)])
        return {"reference": answer, "answer_key": make_key(
            name, qid, _boxed(answer), [_boxed(w) for w in wrong])}
    if kind == "code":
        return _code_fields(definition, row)
    if qid not in pools.accepted:  # judge without a reference answer: no key
        return {}
    reference = pools.accepted[qid][0]
    return {"reference": reference,
            "answer_key": make_key(name, qid, reference, pools.others(qid, "judge-wrong"))}


def _boxed(answer: str) -> str:
    return f"The final answer is $\\boxed{{{answer}}}$."


def _code_fields(definition: BenchmarkDefinition, row: _Row) -> dict[str, Any]:
    tests = _strings(row, definition.tests_field or "")
    entry_point = (_text(row, definition.entry_point_field)
                   if definition.entry_point_field else None)
    solution = (_text(row, definition.answer_field)
                if definition.answer_field and definition.answer_field in row.record else None)
    try:
        for test in tests:
            compile(test, f"{row.where} {definition.tests_field}", "exec")
        if entry_point is None and solution is not None:
            entry_point = called_function(tests[0], solution)
        wrong = [fenced(m) for m in mutants(solution, entry_point)] if solution else []
    except SyntaxError as e:
        raise ConfigError(f"{row.where}: tests or solution is not valid Python: {e}") from e
    if definition.visible_tests_field:
        visible = _strings(row, definition.visible_tests_field)
    else:
        visible = [signature_test(entry_point)] if entry_point else []
    fields: dict[str, Any] = {"reference": tests, "visible_tests": tuple(visible),
                              "metadata": {"entry_point": entry_point}}
    if solution is not None:
        fields["answer_key"] = make_key(definition.name, row.qid, fenced(solution), wrong,
                                        tests=visible)
    return fields

