"""The technique wire schema, the output parsers and agent settings, without processes."""

from __future__ import annotations

import pytest

from itas.agents.kinds import build_agent
from itas.errors import AgentError, ConfigError, ProviderError
from itas.techniques.base import OutputFormatError, gather, query_text
from itas.techniques.contract import Candidate, Params, TechniqueReply, TechniqueRequest
from itas.techniques.critic import parse_critique
from itas.techniques.fuser import cut_to_words
from itas.techniques.majority_vote import vote_key
from itas.techniques.ranker import parse_better, ranking_parser
from itas.techniques.unit_test_evaluator import results_parser
from itas.techniques.unit_test_generator import code_tests, text_tests
from itas.techniques.verifier import parse_verdict

pytestmark = pytest.mark.anyio

QUERY = [{"role": "user", "content": "q"}]


# -- requests and replies -----------------------------------------------------------------------

@pytest.mark.parametrize(("body", "message"), [
    ([], "request: must be a map"),
    ({"messages": QUERY, "candidate": []}, "request: unknown field(s) ['candidate']"),
    ({}, "messages: must hold the query conversation"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role: must be one of"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content: must be a string"),
    ({"messages": QUERY, "candidates": {"id": "a"}}, "candidates: must be a list"),
    ({"messages": QUERY, "candidates": [{"id": "a", "text": "x", "score": "high"}]},
     "candidates[0].score: must be a number"),
    ({"messages": QUERY, "candidates": [{"id": "a", "text": "x", "verdict": 1}]},
     "candidates[0].verdict: must be a boolean"),
    ({"messages": QUERY, "candidates": [{"id": "a", "text": "x", "extra": 1}]},
     "candidates[0]: unknown field(s) ['extra']"),
    ({"messages": QUERY, "candidates": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]},
     "candidates: duplicate id 'a'"),
    ({"messages": QUERY, "sample_index": -1}, "sample_index: must be an integer >= 0"),
    ({"messages": QUERY, "tests": "assert x"}, "tests: must be a list of strings"),
    ({"messages": QUERY, "sim": {"id": "q"}}, "sim: must be an answer key map"),
])
def test_bad_requests_name_the_field(body: object, message: str) -> None:
    with pytest.raises(AgentError) as failure:
        TechniqueRequest.from_body(body)
    assert failure.value.code == "bad_request"
    assert message in failure.value.message


def test_request_defaults_and_round_trip() -> None:
    request = TechniqueRequest.from_body({"messages": QUERY, "candidates": [{"id": "a", "text": "x"}]})
    assert (request.params, request.sample_index, request.tests, request.sim) == ({}, 0, None,
                                                                                   None)
    assert request.candidates == [Candidate("a", "x")]
    assert TechniqueRequest.from_body(request.to_dict()) == request
    assert TechniqueRequest.from_body({}, need_messages=False).messages == []


def test_candidate_and_reply_round_trip() -> None:
    candidate = Candidate("g#0", "text", "generator@sim:strong", "crit", 0.5, True, 2, 3, "42",
                          {"k": [1]})
    assert Candidate.from_dict(candidate.to_dict()) == candidate
    reply = TechniqueReply([candidate], ["assert 1"])
    again = TechniqueReply.from_dict(reply.to_dict())
    assert again.candidates == [candidate] and again.tests == ["assert 1"]
    assert set(reply.to_dict()) == {"candidates", "tests", "parse", "usage", "notes"}
    assert set(reply.to_dict()["usage"]) == {"calls", "prompt_tokens", "completion_tokens",
                                             "tokens", "latency_s", "cost_usd", "cached_calls",
                                             "cost_known"}


def test_params_are_checked() -> None:
    params = Params({"top_k": 2, "mode": "pairwise"}, {"top_k", "mode", "n"}, "ranker")
    assert params.integer("top_k", None, low=1) == 2
    assert params.integer("n", None) is None
    assert params.choice("mode", "listwise", ("listwise", "pairwise")) == "pairwise"
    with pytest.raises(AgentError, match=r"params: unknown parameter\(s\) \['k'\] for ranker"):
        Params({"k": 1}, {"top_k"}, "ranker")
    for bad in (0, True, 1.5):
        with pytest.raises(AgentError, match=r"params\.top_k: must be an integer"):
            Params({"top_k": bad}, {"top_k"}, "r").integer("top_k", None, low=1)


# -- parsers ------------------------------------------------------------------------------------

def test_ranking_parser() -> None:
    parse = ranking_parser(3, 3)
    assert parse("thoughts\nRanking: [2] > [3] > [1]").value == [1, 2, 0]
    assert parse("**Ranking**: [1] > [2] > [3]\n").method == "ranking_line"
    assert parse("[3] > [1] > [2]").value == [2, 0, 1]  # unlabelled line
    assert parse("Ranking: [1] > [2]\nRanking: [3] > [2] > [1]").value == [2, 1, 0]  # last wins
    partial = ranking_parser(3, 1)("Ranking: [2]")
    assert (partial.value, partial.method) == ([1, 0, 2], "partial_ranking")
    for text, reason in [("no idea", "no 'Ranking:' line"),
                         ("Ranking: [1] > [4] > [2]", "response number 4 does not exist"),
                         ("Ranking: [1] > [1] > [2]", "more than once"),
                         ("Ranking: [1] > [2]", "lists 2 of 3")]:
        with pytest.raises(OutputFormatError, match=reason):
            parse(text)


def test_better_and_verdict_parsers() -> None:
    assert parse_better("Reasoning...\nBetter response: A").value == 1.0
    assert parse_better("**Better response:** [B]").value == 0.0
    with pytest.raises(OutputFormatError):
        parse_better("Response A is better")
    assert parse_verdict("steps\nVerdict: PASS").value is True
    assert parse_verdict("**Verdict:** fail").value is False
    assert parse_verdict("Verdict: FAIL\n...on reflection\nVerdict: PASS").value is True
    last = parse_verdict("It holds up.\n\n**PASS**")
    assert (last.value, last.method) == (True, "last_line")
    with pytest.raises(OutputFormatError):
        parse_verdict("I think it might pass.")


def test_critique_parser() -> None:
    parsed = parse_critique("## Strengths:\n- clear\n\n**Weaknesses**:\n- wrong sum")
    assert parsed.value == "Strengths:\n- clear\nWeaknesses:\n- wrong sum"
    swapped = parse_critique("Weaknesses: none\nStrengths: short")
    assert swapped.value == "Strengths:\nshort\nWeaknesses:\nnone"
    with pytest.raises(OutputFormatError, match="no 'Weaknesses:' section"):
        parse_critique("Strengths:\n- good")
    with pytest.raises(OutputFormatError, match="the Strengths section is empty"):
        parse_critique("Strengths:\nWeaknesses:\n- bad")


def test_test_result_parser() -> None:
    parse = results_parser(3)
    assert parse("Test 1: PASS\nTest 2: fail\n**Test 3**: PASS").value == [True, False, True]
    with pytest.raises(OutputFormatError, match=r"test\(s\) 2, 3"):
        parse("Test 1: PASS\nTest 4: PASS")


def test_unit_test_parsers() -> None:
    code = code_tests("Tests:\n```python\nimport math\nassert f(1) == 2\n"
                      "assert math.isclose(f(0.5),\n                    1.5)\n```")
    assert code.value == ["import math\nassert f(1) == 2",
                          "import math\nassert math.isclose(f(0.5),\n                    1.5)"]
    with pytest.raises(OutputFormatError, match="no assert statements"):
        code_tests("```python\nx = 1\n```")
    with pytest.raises(OutputFormatError, match="not valid Python"):
        code_tests("```python\nassert f(1) ==\n```")
    text = text_tests("Checks:\n1. states 42\n2) shows the product\n- is one line\nthanks")
    assert text.value == ["states 42", "shows the product", "is one line"]
    with pytest.raises(OutputFormatError):
        text_tests("just prose")


@pytest.mark.parametrize(("text", "expected"), [
    ("The answer is 42.", ("42", "stated_number")),
    ("We get $\\boxed{1,000.0}$", ("1000", "stated_number")),
    ("The answer is \\frac{1}{2}", ("\\frac{1}{2}", "stated")),
    ("so 40 + 2 = 42\n#### 42", ("42", "hash_marker")),
    ("I think it is 41 or so", ("41", "last_number")),
    ("The answer is (C) because", ("C", "option")),
    ("Answer: B", ("B", "option")),
    ("The answer is A bit more than 3", ("3", "stated_number")),
    ("The answer is Paris.", ("paris", "stated")),
    ("The answer is the capital of France.", ("the capital of france", "stated_text")),
    ("Paris is  the capital.", ("paris is the capital", "whole_text")),
])
def test_vote_key(text: str, expected: tuple[str, str]) -> None:
    assert vote_key(text) == expected


def test_helpers() -> None:
    assert cut_to_words("one  two\nthree four", 3) == "one  two\nthree"
    assert cut_to_words("one two", 5) == "one two"
    assert query_text(QUERY) == "q"
    convo = query_text([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                        {"role": "user", "content": "c"}])
    assert "[user]\na" in convo and convo.endswith("[user]\nc")


# -- settings -----------------------------------------------------------------------------------

def test_service_names_follow_the_one_rule() -> None:
    sim = {"provider": "sim", "model": "strong", "skill": 0.8}
    assert build_agent("critic", sim).service == "critic@sim:strong"
    assert build_agent("majority_vote", {}).service == "majority_vote"
    assert build_agent("code_tester", {"provider": "sim", "model": "box"}).service == (
        "code_tester@sim:box")
    assert build_agent("ranker", {**sim, "credit": 3}).credit == 3
    assert build_agent("fuser", {**sim, "model": "llama3:8b"}).service == "fuser@sim:llama3:8b"


@pytest.mark.parametrize(("kind", "settings", "message"), [
    ("ranker", {"provider": "sim"}, "'provider' and 'model' are required"),
    ("ranker", {"provider": "sim", "model": "a b"}, "setting 'model' must be a non-empty name"),
    ("ranker", {"provider": "sim", "model": "x", "skil": 0.5}, "unknown setting(s) 'skil'"),
    ("ranker", {"provider": "nope", "model": "x"}, "unknown provider 'nope'"),
    ("verifier", {"provider": "sim", "model": "x", "parse_retries": 9}, "'parse_retries'"),
    ("majority_vote", {"provider": "sim"}, "both 'provider' and 'model', or neither"),
    ("majority_vote", {"skill": 1}, "unknown setting(s) ['skill']"),
    ("code_tester", {"max_parallel_runs": 0}, "'max_parallel_runs' must be an integer >= 1"),
])
def test_bad_settings_are_config_errors(kind: str, settings: dict, message: str) -> None:
    with pytest.raises(ConfigError) as failure:
        build_agent(kind, settings)
    assert message in str(failure.value)


async def test_gather_keeps_order_and_unwraps_agent_errors() -> None:
    async def value(x: int) -> int:
        return x

    async def fail() -> int:
        raise ProviderError("sim", "down")

    assert await gather([lambda x=x: value(x) for x in range(5)]) == [0, 1, 2, 3, 4]
    with pytest.raises(ProviderError, match="down"):
        await gather([lambda: value(1), fail])
