# ruff: noqa: F811  (the llm and mesh fixtures of test_judge, used as parameters)
"""Judges comparable with published numbers: judge prompts, reference answers and baseline
answers read from the benchmarks' own file formats, and sent to the judge exactly.

Fixtures are written here in FastChat's and Arena-Hard's formats (field names and
placeholders as those projects ship them; the prompt wording is our own). When the
real files are at hand (snapshots of lm-sys/FastChat and lmarena/arena-hard-auto
fetched under /work/.mirror), they are read too: every real prompt must render for
every MT-Bench question, and the real baseline answers must cover the Arena-Hard
questions.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from itas.benchmarks import load_benchmark
from itas.benchmarks.question import Question, user
from itas.benchmarks.scoring import scorer_for
from itas.client import AsyncClient
from itas.errors import ConfigError, RemoteError
from itas.evaluation.evaluate import evaluate
from itas.evaluation.judging import ServiceJudge, rating_scale
from itas.evaluation.official import (
    NEED_REF_CATEGORIES,
    load_baseline_answers,
    load_judge_prompts,
    load_reference_answers,
    with_references,
)
from itas.evaluation.report import print_report
from itas.orchestrator.inprocess import InProcessCaller
from itas.orchestrator.runner import Orchestrator
from itas.spec import parse_architecture
from itas.techniques.judge import ANSWER_SLOT, FIRST_SLOT, SECOND_SLOT
from tests.helpers import DATA_DIR
from tests.test_eval_api import POOL
from tests.test_judge import JudgeLLM, fake_judge, llm, mesh  # noqa: F401

pytestmark = pytest.mark.anyio

FASTCHAT = Path("/work/.mirror/lm-sys+FastChat/repo")
ARENA = Path("/work/.mirror/lmarena+arena-hard-auto/repo")
ARENA_V01_COMMIT = "e0a8ea1df42c1df76451a6cd04b14e31ff992b87"  # v0.1 answers and config


def fastchat_style(tmp_path: Path) -> Path:
    """judge_prompts.jsonl in FastChat's format, our own wording."""
    single = "Rate the reply on a scale of 1 to 10 as 'Rating: [[N]]'."
    rows = [
        {"name": "single-v1", "type": "single", "system_prompt": "You grade replies.",
         "prompt_template": f"[Question]\n{{question}}\n[Reply]\n{{answer}}\n{single}",
         "description": "general", "category": "general", "output_format": "[[rating]]"},
        {"name": "single-math-v1", "type": "single", "system_prompt": "You grade replies.",
         "prompt_template": f"[Question]\n{{question}}\n[Reference]\n{{ref_answer_1}}\n"
                            f"[Reply]\n{{answer}}\n{single}",
         "description": "math", "category": "math", "output_format": "[[rating]]"},
        {"name": "single-v1-multi-turn", "type": "single", "system_prompt": "Grade turn 2.",
         "prompt_template": "U: {question_1}\nA: {answer_1}\nU: {question_2}\nA: {answer_2}",
         "description": "general", "category": "general", "output_format": "[[rating]]"},
        {"name": "single-math-v1-multi-turn", "type": "single", "system_prompt": "Grade 2.",
         "prompt_template": "R1: {ref_answer_1}\nR2: {ref_answer_2}\nU: {question_1}\n"
                            "A: {answer_1}\nU: {question_2}\nA: {answer_2}",
         "description": "math", "category": "math", "output_format": "[[rating]]"},
        {"name": "pair-v2", "type": "pairwise", "system_prompt": "x",
         "prompt_template": "{question} {answer_a} {answer_b}", "description": "",
         "category": "general", "output_format": "[[A]]"},
    ]
    path = tmp_path / "judge_prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def arena_style(tmp_path: Path, new_keys: bool = False) -> Path:
    template = ("<|Prompt|>\n{QUESTION}\n<|A|>\n{ANSWER_A}\n<|B|>\n{ANSWER_B}" if new_keys
                else "<|Prompt|>\n{question_1}\n<|A|>\n{answer_1}\n<|B|>\n{answer_2}")
    path = tmp_path / ("arena-new.yaml" if new_keys else "judge_config.yaml")
    path.write_text(yaml.safe_dump({
        "bench_name": "arena-hard-v0.1", "system_prompt": "Compare; end with [[A>B]] etc.",
        "prompt_template": [template] if not new_keys else template,
        "regex_pattern": r"\[\[([AB<>=]+)\]\]"}))
    return path


def conversation(category: str, reference: list[str] | None, turn: int) -> Question:
    messages = user("Solve {x}: 2x = 4.")
    if turn == 2:
        messages = [*messages, {"role": "assistant", "content": "x = 2"},
                    {"role": "user", "content": "And 3x = 9?"}]
    return Question("q1", "mt_bench", messages, reference=reference,
                    metadata={"category": category, "turn": turn})


def test_fastchat_prompts_are_chosen_as_fastchat_chooses_them(tmp_path: Path) -> None:
    prompts = load_judge_prompts(fastchat_style(tmp_path))
    assert set(prompts.single) == {"single-v1", "single-math-v1", "single-v1-multi-turn",
                                   "single-math-v1-multi-turn"}
    cases = [("writing", None, 1, "single-v1"), ("math", ["2", "3"], 1, "single-math-v1"),
             ("writing", ["r"], 1, "single-v1"), ("math", None, 1, "single-v1"),
             ("writing", None, 2, "single-v1-multi-turn"),
             ("reasoning", ["2", "3"], 2, "single-math-v1-multi-turn")]
    for category, reference, turn, name in cases:
        q = conversation(category, reference, turn)
        prompt, values = prompts.for_single(q, reference or [])
        assert prompt.name == name, (category, turn)
        text = prompt.render(values)
        assert ANSWER_SLOT in text and "{x}" in text  # braces in a question stay text
        if name.startswith("single-math"):
            assert "2" in text and (turn == 1 or "R2: 3" in text)
        if turn == 2:
            assert "A: x = 2" in text and "U: And 3x = 9?" in text
    assert NEED_REF_CATEGORIES >= {"math", "reasoning", "coding"}


def test_arena_configs_of_both_generations_place_question_and_both_answers(
        tmp_path: Path) -> None:
    for new_keys in (False, True):
        prompts = load_judge_prompts(arena_style(tmp_path, new_keys))
        q = Question("u1", "arena_hard", user("Write {json} please"))
        prompt, values = prompts.for_pairwise(q)
        text = prompt.render(values)
        assert text.index(FIRST_SLOT) < text.index(SECOND_SLOT)
        assert "Write {json} please" in text and prompt.system.startswith("Compare")
    with pytest.raises(ConfigError, match="no pairwise judge prompt"):
        load_judge_prompts(fastchat_style(tmp_path)).for_pairwise(q)
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"prompt_template": "{QUESTION} {ANSWER_A}",
                                      "system_prompt": "x"}))
    with pytest.raises(ConfigError, match="must place the question and both answers"):
        load_judge_prompts(broken)
    broken.write_text(yaml.safe_dump({"prompt_template": "{QUESTION} {ANSWER_A} {ANSWER_B}"}))
    with pytest.raises(ConfigError, match="system_prompt' is missing"):
        load_judge_prompts(broken)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"name": "single-v1", "type": "single"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: field 'system_prompt'"):
        load_judge_prompts(bad)


def test_reference_and_baseline_answers_in_every_shipped_shape(tmp_path: Path) -> None:
    refs = tmp_path / "gpt-4.jsonl"
    refs.write_text(json.dumps({"question_id": 101, "answer_id": "a", "model_id": "gpt-4",
                                "choices": [{"index": 0, "turns": ["one", "two"]}],
                                "tstamp": 1.0}) + "\n")
    assert load_reference_answers(refs) == {"101": ["one", "two"]}
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"question_id": "q9", "answer_id": "x", "model_id": "m",
                               "choices": [{"index": 0, "turns": [{"content": "old answer",
                                                                   "token_len": 2}]}]}) + "\n")
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"uid": "q9", "ans_id": "x", "model": "m", "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant",
                                           "content": {"answer": "new answer"}}]}) + "\n")
    assert load_baseline_answers(old) == {"q9": "old answer"}
    assert load_baseline_answers(new) == {"q9": "new answer"}
    new.write_text(json.dumps({"uid": "q9", "messages": []}) + "\n")
    with pytest.raises(ConfigError, match=r"new.jsonl:1: expected a question id and an answer"):
        load_baseline_answers(new)
    qs = with_references([Question("101", "mt_bench", user("?")),
                          Question("102", "mt_bench", user("?"))], {"101": ["one", "two"]})
    assert qs[0].reference == ["one", "two"] and qs[1].reference is None


# -- the real files, when a snapshot is at hand ------------------------------------------


def git_file(repo: Path, commit: str, path: str, into: Path) -> Path:
    data = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"],
                          capture_output=True, check=True).stdout
    into.write_bytes(data)
    return into


@pytest.mark.skipif(not FASTCHAT.exists(), reason="no FastChat snapshot here")
def test_real_fastchat_prompts_render_for_every_mt_bench_turn(tmp_path: Path) -> None:
    prompts = load_judge_prompts(git_file(FASTCHAT, "HEAD", "fastchat/llm_judge/data/"
                                          "judge_prompts.jsonl", tmp_path / "jp.jsonl"))
    refs = load_reference_answers(git_file(
        FASTCHAT, "HEAD", "fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl",
        tmp_path / "ref.jsonl"))
    questions = with_references(load_benchmark("mt_bench", data_dir=DATA_DIR), refs)
    assert len(questions) == 80 and sum(q.reference is not None for q in questions) >= 30
    used = set()
    for q in questions:
        for turn in (1, 2):
            asked = Question(q.id, q.benchmark, q.conversation(["first answer"])
                             if turn == 2 else q.messages, reference=q.reference,
                             metadata={**q.metadata, "turn": turn})
            prompt, values = prompts.for_single(asked, q.reference or [])
            text = prompt.render(values)
            used.add(prompt.name)
            assert text.count(ANSWER_SLOT) == 1 and "{" + "answer" not in text
            assert prompt.system and "[[" in prompt.system + text
    assert used == {"single-v1", "single-math-v1", "single-v1-multi-turn",
                    "single-math-v1-multi-turn"}


@pytest.mark.skipif(not ARENA.exists(), reason="no arena-hard-auto snapshot here")
def test_real_arena_hard_config_and_baselines_cover_the_questions(tmp_path: Path) -> None:
    prompts = load_judge_prompts(git_file(ARENA, ARENA_V01_COMMIT, "config/judge_config.yaml",
                                          tmp_path / "judge_config.yaml"))
    old = load_baseline_answers(git_file(ARENA, ARENA_V01_COMMIT, "data/arena-hard-v0.1/"
                                         "model_answer/gpt-4-0314.jsonl", tmp_path / "o.jsonl"))
    new = load_baseline_answers(git_file(ARENA, "HEAD", "data/arena-hard-v0.1/model_answer/"
                                         "gpt-4-0314.jsonl", tmp_path / "n.jsonl"))
    questions = load_benchmark("arena_hard", data_dir=DATA_DIR)
    assert {q.id for q in questions} <= set(old) and set(old) == set(new)
    assert all(old[k] == new[k] for k in old)
    prompt, values = prompts.for_pairwise(questions[0])
    text = prompt.render(values)
    assert FIRST_SLOT in text and SECOND_SLOT in text and questions[0].prompt in text


# -- what the judge is sent ---------------------------------------------------------------


async def test_the_judge_is_sent_the_official_prompt_with_the_answer_in_place(tmp_path: Path, llm: JudgeLLM, mesh: str, fake_judge: str) -> None:
    prompts = load_judge_prompts(fastchat_style(tmp_path))
    q = Question("81", "mt_bench", user("Write {a} haiku."), metadata={"category": "writing"})
    llm.script.extend(["Fine.\nRating: [[6]]"])
    before = len(llm.posts())
    async with AsyncClient(mesh) as client:
        judge = ServiceJudge(client, fake_judge, prompts=prompts)
        score = await judge(q, "An answer with <<ITAS:ANSWER_B>> and {braces}.")
    sent = llm.bodies(before)[0]["messages"]
    assert sent[0] == {"role": "system", "content": "You grade replies."}
    assert sent[1]["content"] == ("[Question]\nWrite {a} haiku.\n[Reply]\nAn answer with "
                                  "<<ITAS:ANSWER_B>> and {braces}.\nRate the reply on a scale "
                                  "of 1 to 10 as 'Rating: [[N]]'.")
    assert score.value == 0.6 and "rating 6/10" in score.detail
    arena = load_judge_prompts(arena_style(tmp_path))
    llm.script.extend(["[[A>B]]", "[[B>A]]"])  # the answer wins in both orders
    before = len(llm.posts())
    async with AsyncClient(mesh) as client:
        pair = ServiceJudge(client, fake_judge, prompts=arena, baselines={"u": "base says 1"})
        won = await pair(Question("u", "arena_hard", user("Say 42")), "I say 42")
    games = [b["messages"][1]["content"] for b in llm.bodies(before)]
    assert sorted(games) == sorted(["<|Prompt|>\nSay 42\n<|A|>\nI say 42\n<|B|>\nbase says 1",
                                    "<|Prompt|>\nSay 42\n<|A|>\nbase says 1\n<|B|>\nI say 42"])
    assert won.value == 1.0
    async with AsyncClient(mesh) as client:
        with pytest.raises(RemoteError, match="params.template: must hold"):
            await client.call(fake_judge, {"messages": user("q"), "candidates": [
                {"id": "a", "text": "x"}], "params": {"template": "no slot here"}})


async def test_mt_bench_reads_on_its_1_to_10_scale(tmp_path: Path, llm: JudgeLLM,
                                                   mesh: str, fake_judge: str) -> None:
    """Two turns each rated 7 and 9 read as an MT-Bench score of 8.0, as published."""
    questions = load_benchmark("mt_bench", limit=2, data_dir=DATA_DIR)
    arch = parse_architecture({"name": "one", "layers": [[{
        "technique": "generator", "provider": "sim", "model": "strong"}]]}, "test")
    llm.script.extend(["Rating: [[7]]", "Rating: [[9]]"] * 2)
    async with InProcessCaller(POOL) as caller, AsyncClient(mesh) as client:
        judge = ServiceJudge(client, fake_judge, prompts=load_judge_prompts(fastchat_style(tmp_path)))
        summary = await evaluate(arch, questions, Orchestrator(caller), judge=judge,
                                 concurrency=1)
    scale = rating_scale(scorer_for("mt_bench", judge=judge), questions)
    assert scale == 10 and summary.score * scale == pytest.approx(8.0)
    out = io.StringIO()
    print_report([summary], "mt_bench", Console(file=out, width=200), rating_scale=scale)
    assert "rating 1-10" in out.getvalue() and "8.00" in out.getvalue()
