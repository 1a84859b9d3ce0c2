"""Benchmarks defined by their user: every scorer kind, keys the scorer agrees with, and bad
definitions or data named in one line.

For each kind a small dataset of a kind the project does not ship is written here; its
derived answer key must score 1 with the kind's scorer and each wrong answer 0 (code runs
in the real sandbox), and the resolver must accept the same benchmark as a YAML file, a
data file plus fields, or a definition object.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from itas.benchmarks import Question, load_benchmark
from itas.benchmarks.custom import BenchmarkDefinition, parse_definition
from itas.benchmarks.question import questions_digest
from itas.benchmarks.registry import resolve_benchmark
from itas.benchmarks.scoring import scorer_for
from itas.benchmarks.selection import VISIBLE, selection_tests_for
from itas.errors import ConfigError

pytestmark = pytest.mark.anyio

ELEMENTS = {
    "Hydrogen": "H", "Helium": "He", "Lithium": "Li", "Beryllium": "Be", "Boron": "B",
    "Carbon": "C", "Nitrogen": "N", "Oxygen": "O", "Fluorine": "F", "Neon": "Ne",
    "Sodium": "Na", "Magnesium": "Mg", "Aluminium": "Al", "Silicon": "Si", "Phosphorus": "P",
    "Sulfur": "S", "Chlorine": "Cl", "Argon": "Ar", "Potassium": "K", "Calcium": "Ca",
    "Iron": "Fe", "Copper": "Cu", "Zinc": "Zn", "Silver": "Ag", "Tin": "Sn", "Gold": "Au",
    "Mercury": "Hg", "Lead": "Pb", "Uranium": "U", "Tungsten": "W", "Nickel": "Ni",
    "Cobalt": "Co", "Platinum": "Pt", "Titanium": "Ti", "Chromium": "Cr", "Manganese": "Mn",
}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def elements(tmp_path: Path) -> Path:
    rows = [{"id": f"el-{i}", "element": name, "symbol": symbol}
            for i, (name, symbol) in enumerate(ELEMENTS.items())]
    return write_jsonl(tmp_path / "elements.jsonl", rows)


def datasets(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """One definition per scorer kind, each over data written here."""
    rng = random.Random(5)
    unit = [{"q": f"How many grams are in {k} kilograms?", "a": str(1000 * k)}
            for k in range(1, 25)]
    colours = ["red", "green", "blue", "yellow", "violet", "orange"]
    choice = [{"q": f"Which colour is listed at position {i % 6}?",
               "options": colours[i % 6:] + colours[:i % 6], "a": i % 2}
              for i in range(20)]
    maths = [{"q": f"Simplify {a}/{b}.", "a": f"\\frac{{{a // 2}}}{{{b // 2}}}"}
             for a, b in ((2, 6), (4, 10), (6, 14), (2, 18), (8, 22), (10, 26))]
    code = [{"task": f"Write add_{n}(x) returning x + {n}.", "solution":
             f"def add_{n}(x):\n    return x + {n}\n",
             "tests": [f"assert add_{n}({v}) == {v + n}" for v in rng.sample(range(50), 3)],
             "shown": [f"assert add_{n}(0) == {n}"], "fn": f"add_{n}"} for n in range(1, 9)]
    judged = [{"q": f"Describe the colour {c} in one sentence.", "ref": f"{c} is a colour."}
              for c in colours]
    files = {name: write_jsonl(tmp_path / f"{name}.jsonl", rows) for name, rows in (
        ("units", unit), ("colours", choice), ("fractions", maths), ("adders", code),
        ("describe", judged))}
    return {
        "numeric": {"name": "units", "data": str(files["units"]), "scorer": "numeric",
                    "question_field": "q", "answer_field": "a"},
        "exact": {"name": "elements", "data": str(elements(tmp_path)), "scorer": "exact",
                  "id_field": "id", "question_field": "element", "answer_field": "symbol",
                  "prompt": "What is the chemical symbol of {element}? End with 'The answer "
                            "is X.'"},
        "choice": {"name": "colours", "data": str(files["colours"]), "scorer": "choice",
                   "question_field": "q", "answer_field": "a", "choices_field": "options",
                   "prompt": "{q}\n{choices}"},
        "math": {"name": "fractions", "data": str(files["fractions"]), "scorer": "math",
                 "question_field": "q", "answer_field": "a"},
        "code": {"name": "adders", "data": str(files["adders"]), "scorer": "code",
                 "prompt": "{task}", "answer_field": "solution", "tests_field": "tests",
                 "visible_tests_field": "shown", "entry_point_field": "fn"},
        "judge": {"name": "describe", "data": str(files["describe"]), "scorer": "judge",
                  "question_field": "q", "answer_field": "ref", "prompt": "{q}"},
    }


@pytest.mark.parametrize("kind", ["numeric", "exact", "choice", "math", "code"])
async def test_derived_keys_score_right_and_wrong_with_the_kind_scorer(
        tmp_path: Path, kind: str) -> None:
    definition = datasets(tmp_path)[kind]
    questions = load_benchmark(parse_definition(definition, "test"))
    assert len(questions) >= 6 and all(q.scorer == kind for q in questions)
    assert len({q.id for q in questions}) == len(questions)
    scorer = scorer_for(questions[0].benchmark, kind=kind, limiter=anyio.CapacityLimiter(2))
    failures: list[str] = []
    for q in questions:
        key = q.answer_key
        assert key is not None and key["id"] == f"{q.benchmark}/{q.id}"
        right = await scorer.score(q, key["answer"])
        if not right.correct:
            failures.append(f"{q.id} answer {key['answer']!r}: {right.detail}")
        assert key["wrong"], q.id
        for wrong in key["wrong"]:
            verdict = await scorer.score(q, wrong)
            if verdict.correct:
                failures.append(f"{q.id} wrong {wrong!r}: {verdict.detail}")
    assert not failures, failures


async def test_code_benchmark_shows_visible_tests_and_grades_with_its_own(
        tmp_path: Path) -> None:
    questions = load_benchmark(parse_definition(datasets(tmp_path)["code"], "test"))
    for q in questions:
        assert selection_tests_for(q, VISIBLE) == list(q.visible_tests)
        assert not set(q.visible_tests) & set(q.reference)
        assert q.answer_key is not None and q.answer_key["tests"] == list(q.visible_tests)


def test_the_same_benchmark_three_ways(tmp_path: Path) -> None:
    definition = datasets(tmp_path)["exact"]
    from_object = load_benchmark(parse_definition(definition, "test"))
    yaml_file = tmp_path / "elements.yaml"
    yaml_file.write_text(yaml.safe_dump({**definition, "data": "elements.jsonl"}))
    from_yaml = load_benchmark(str(yaml_file))
    fields = {k: v for k, v in definition.items() if k not in ("data",)}
    from_flags = load_benchmark(definition["data"], fields=fields)
    assert questions_digest(from_object) == questions_digest(from_yaml) == questions_digest(
        from_flags)
    assert resolve_benchmark(str(yaml_file)).identity() == resolve_benchmark(
        definition["data"], fields).identity()
    search = load_benchmark(str(yaml_file), split="search", seed=3)
    heldout = load_benchmark(str(yaml_file), split="heldout", seed=3)
    assert {q.id for q in search}.isdisjoint({q.id for q in heldout})
    assert len(search) + len(heldout) == len(ELEMENTS)


def test_judge_benchmark_keeps_its_reference_and_needs_a_judge(tmp_path: Path) -> None:
    questions = load_benchmark(parse_definition(datasets(tmp_path)["judge"], "test"))
    assert all(q.reference and q.answer_key for q in questions)
    assert scorer_for(questions[0].benchmark, kind="judge").needs_judge


# -- errors -----------------------------------------------------------------------------


def bad(tmp_path: Path, definition: dict[str, Any], rows: list[dict[str, Any]] | None = None
        ) -> str:
    data = write_jsonl(tmp_path / "bad.jsonl", rows or [{"question": "q?", "answer": "1"}])
    with pytest.raises(ConfigError) as caught:
        load_benchmark(parse_definition({"name": "bad", "data": str(data), **definition},
                                        "bad.yaml"))
    return str(caught.value)


def test_bad_definitions_and_records_are_named(tmp_path: Path) -> None:
    assert "scorer: Input should be" in bad(tmp_path, {"scorer": "fuzzy"})
    assert "unknown field" in bad(tmp_path, {"scorer": "exact", "anser_field": "a"})
    assert "choices_field" in bad(tmp_path, {"scorer": "choice"})
    assert "tests_field" in bad(tmp_path, {"scorer": "code"})
    assert "built-in" in bad(tmp_path, {"scorer": "exact", "name": "gsm8k"})
    assert "not a valid template" in bad(tmp_path, {"scorer": "exact", "prompt": "{oops"})
    assert "plain field names" in bad(tmp_path, {"scorer": "exact", "prompt": "{a.b}"})
    message = bad(tmp_path, {"scorer": "exact", "prompt": "{question} in {unit}"})
    assert "bad.jsonl:1: missing field 'unit'" in message
    message = bad(tmp_path, {"scorer": "numeric"}, [{"question": "q", "answer": "lots"}])
    assert "bad.jsonl:1: field 'answer' holds no number" in message
    message = bad(tmp_path, {"scorer": "exact", "id_field": "id"},
                  [{"id": 1, "question": "a", "answer": "x"},
                   {"id": 1, "question": "b", "answer": "y"}])
    assert "bad.jsonl:2: id '1' again (first at" in message
    message = bad(tmp_path, {"scorer": "choice", "choices_field": "o"},
                  [{"question": "q", "o": ["x", "y"], "answer": "C"}])
    assert "must name one of the 2 options" in message
    message = bad(tmp_path, {"scorer": "code", "tests_field": "t"},
                  [{"question": "q", "t": ["assert (("], "answer": "def f(): pass"}])
    assert "bad.jsonl:1: tests or solution is not valid Python" in message
    with pytest.raises(ConfigError, match="needs a scorer"):
        load_benchmark(str(write_jsonl(tmp_path / "x.jsonl", [{"question": "q"}])))
    with pytest.raises(ConfigError, match="unknown benchmark 'nope'.*benchmark file"):
        load_benchmark("nope")
    with pytest.raises(ConfigError, match="go with a benchmark file"):
        load_benchmark("gsm8k", fields={"scorer": "exact"})
    with pytest.raises(ConfigError, match="data file .* not found"):
        load_benchmark(BenchmarkDefinition(name="gone", data="/nonexistent.jsonl",
                                           scorer="exact"))


def test_random_records_of_texts_load_or_fail_with_a_line(tmp_path: Path) -> None:
    """Seeded random records (missing fields, wrong types, empty values): every file either
    loads fully or fails with a ConfigError naming the file and line."""
    rng = random.Random(11)
    values: list[Any] = ["", "x", 3, 2.5, None, [], ["a"], {"k": 1}, True]
    for trial in range(150):
        rows = []
        for _ in range(rng.randint(1, 5)):
            row: dict[str, Any] = {}
            for name in ("question", "answer"):
                if rng.random() < 0.8:
                    row[name] = rng.choice(values + ["".join(rng.choices(string.ascii_letters,
                                                                         k=4))])
            rows.append(row)
        data = write_jsonl(tmp_path / f"r{trial}.jsonl", rows)
        definition = parse_definition({"name": "r", "data": str(data), "scorer": "exact"}, "r")
        try:
            questions = load_benchmark(definition)
        except ConfigError as e:
            assert f"r{trial}.jsonl:" in str(e) and "\n" not in str(e), str(e)
        else:
            assert len(questions) == len(rows)
            assert all(isinstance(q.prompt, str) and q.prompt for q in questions)


def test_question_digest_sees_every_change(tmp_path: Path) -> None:
    base = load_benchmark(parse_definition(datasets(tmp_path)["exact"], "t"))
    digest = questions_digest(base)
    assert digest == questions_digest(load_benchmark(parse_definition(datasets(tmp_path)["exact"],
                                                                      "t")))
    changed = list(base)
    changed[3] = Question(**{**{f: getattr(base[3], f) for f in base[3].__slots__},
                             "reference": ["Xx"]})
    assert questions_digest(changed) != digest
    assert questions_digest(base[:-1]) != digest
    assert questions_digest(list(reversed(base))) != digest
