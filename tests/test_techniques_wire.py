"""The technique contract, parameters, parsers, merges and agent settings, without processes.

Everything here is pure: request and reply bodies through ``from_body`` (and through msgpack,
as the wire carries them), every technique's parameter model as the agent applies it, every
parser against its sim renderer and against hand-written replies, and each technique's
``check_reply`` and ``merge`` (where every selection rule lives) against reference rules over
seeded random inputs.
"""

from __future__ import annotations

import collections
import math
import random
from typing import Any

import pytest

from itas.agents.kinds import build_agent
from itas.errors import ConfigError, ProviderError
from itas.protocol import pack, unpack
from itas.techniques import SPEC_TECHNIQUES, TECHNIQUES
from itas.techniques.base import (
    ComponentParams,
    OutputFormatError,
    Shard,
    Technique,
    candidate_block,
    gather,
    query_text,
    with_tests,
)
from itas.techniques.contract import (
    MAX_ID_CHARS,
    MAX_ITEMS,
    MAX_META_BYTES,
    MAX_TEXT_CHARS,
    Candidate,
    ContractError,
    ParseRecord,
    TechniqueReply,
    TechniqueRequest,
    UsageTotals,
)
from itas.techniques.critic import (
    batch_parser,
    batch_sections,
    parse_critique,
    render_sim_batch,
)
from itas.techniques.critic import render_sim as render_critique
from itas.techniques.fuser import FuserParams, length_limit, parse_fused, words
from itas.techniques.judge import parse_game, parse_rating, render_preference, render_rating
from itas.techniques.majority_vote import vote_key
from itas.techniques.ranker import parse_better, ranking_parser, render_better, render_ranking
from itas.techniques.unit_test_evaluator import render_results, results_parser
from itas.techniques.unit_test_generator import code_tests, render_tests, text_tests
from itas.techniques.verifier import parse_reasoning, parse_verdict, reasoning_of
from itas.techniques.verifier import render_sim as render_verdict

pytestmark = pytest.mark.anyio

QUERY = [{"role": "user", "content": "q"}]
SEEDS = range(300)


def technique(name: str) -> Technique[Any]:
    return TECHNIQUES[name]


def component(name: str, **fields: Any) -> Any:
    """A spec component of ``name`` (sim placement for techniques with an LLM)."""
    t = technique(name)
    placement = {"provider": "sim", "model": "strong"} if t.uses_llm else {}
    return t.params_model.model_validate({"technique": name, **placement, **fields})


def cands(n: int) -> list[Candidate]:
    return [Candidate(f"c{i}", f"text {i}", "gen") for i in range(n)]


# -- requests -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "where", "problem"), [
    ([], "request", "must be a map"),
    ({"messages": QUERY, "candidate": []}, "request", "unknown field(s) ['candidate']"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role", "must be one of"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content",
     "must be a string, got int"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "must be a string"),
    ({"messages": [{"role": "user", "content": "x", "name": "b"}]}, "messages[0]",
     "unknown field(s) ['name']"),
    ({"messages": "hello"}, "messages", "must be a list, got str"),
    # Falsy values of the wrong type are wrong too, not "absent".
    ({"messages": ""}, "messages", "must be a list, got str"),
    ({"candidates": {}}, "candidates", "must be a list, got dict"),
    ({"params": []}, "params", "must be a map, got list"),
    ({"params": 0}, "params", "must be a map, got int"),
    ({"candidates": {"id": "a"}}, "candidates", "must be a list"),
    ({"candidates": [{"id": "a"}]}, "candidates[0].text", "missing; must be a string"),
    ({"candidates": [{"id": "", "text": "x"}]}, "candidates[0].id", "must not be empty"),
    ({"candidates": [{"id": 7, "text": "x"}]}, "candidates[0].id", "must be a string"),
    ({"candidates": [{"id": "a", "text": "x", "score": "high"}]}, "candidates[0].score",
     "must be a number in [0.0, 1.0]"),
    ({"candidates": [{"id": "a", "text": "x", "score": 1.5}]}, "candidates[0].score",
     "got 1.5"),
    ({"candidates": [{"id": "a", "text": "x", "score": math.nan}]}, "candidates[0].score",
     "got nan"),
    ({"candidates": [{"id": "a", "text": "x", "score": True}]}, "candidates[0].score",
     "must be a number"),
    ({"candidates": [{"id": "a", "text": "x", "rank": 0}]}, "candidates[0].rank",
     "must be an integer in [1, "),
    ({"candidates": [{"id": "a", "text": "x", "rank": 1.0}]}, "candidates[0].rank",
     "must be an integer"),
    ({"candidates": [{"id": "a", "text": "x", "verdict": 1}]}, "candidates[0].verdict",
     "must be true, false or null"),
    ({"candidates": [{"id": "a", "text": "x", "tests_passed": 3, "tests_total": 2}]},
     "candidates[0].tests_passed", "3 passed of 2 tests"),
    ({"candidates": [{"id": "a", "text": "x", "tests_total": -1}]}, "candidates[0].tests_total",
     "must be an integer in [0, "),
    ({"candidates": [{"id": "a", "text": "x", "meta": []}]}, "candidates[0].meta",
     "must be a map, got list"),
    ({"candidates": [{"id": "a", "text": "x", "extra": 1}]}, "candidates[0]",
     "unknown field(s) ['extra']"),
    ({"candidates": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, "candidates",
     "duplicate id 'a'"),
    ({"sample_index": -1}, "sample_index", "must be an integer in [0, "),
    ({"sample_index": "3"}, "sample_index", "must be an integer"),
    ({"tests": "assert x"}, "tests", "must be a list, got str"),
    ({"tests": ["assert x", 3]}, "tests[1]", "must be a string, got int"),
    ({"sim": {"id": "q"}}, "sim", "must be an answer key map"),
    ({"max_calls": -1}, "max_calls", "must be an integer in [0, "),
    ({"max_calls": True}, "max_calls", "must be an integer"),
    ({"max_calls": 2.0}, "max_calls", "must be an integer"),
    ({"trace": 1}, "trace", "must be true or false"),
])
def test_bad_requests_name_the_field(body: object, where: str, problem: str) -> None:
    with pytest.raises(ContractError) as failure:
        TechniqueRequest.from_body(body)
    assert failure.value.where == where
    assert problem in failure.value.problem
    assert str(failure.value).startswith(f"{where}: ")


@pytest.mark.parametrize(("body", "where"), [
    ({"candidates": [{"id": "a", "text": "x" * (MAX_TEXT_CHARS + 1)}]}, "candidates[0].text"),
    ({"candidates": [{"id": "a" * (MAX_ID_CHARS + 1), "text": "x"}]}, "candidates[0].id"),
    ({"candidates": [{"id": "a", "text": "x", "meta": {"k": "v" * MAX_META_BYTES}}]},
     "candidates[0].meta"),
    ({"candidates": [{"id": f"c{i}", "text": ""} for i in range(MAX_ITEMS + 1)]}, "candidates"),
    ({"tests": ["t"] * (MAX_ITEMS + 1)}, "tests"),
    ({"messages": QUERY * (MAX_ITEMS + 1)}, "messages"),
])
def test_every_part_of_a_request_has_a_bound(body: dict[str, Any], where: str) -> None:
    with pytest.raises(ContractError) as failure:
        TechniqueRequest.from_body(body)
    assert failure.value.where == where
    assert "at most" in failure.value.problem or "larger than" in failure.value.problem


def test_request_defaults_and_round_trip() -> None:
    request = TechniqueRequest.from_body({"messages": QUERY,
                                          "candidates": [{"id": "a", "text": "x"}]})
    assert (request.params, request.sample_index, request.tests, request.sim,
            request.max_calls, request.trace) == ({}, 0, None, None, None, False)
    assert request.candidates == [Candidate("a", "x")]
    assert TechniqueRequest.from_body(request.to_dict()) == request
    assert "max_calls" not in request.to_dict()  # absent means "every re-ask allowed"
    # null is "absent" for every optional field
    nulls = TechniqueRequest.from_body({k: None for k in ("messages", "candidates", "params",
                                                          "tests", "sim", "max_calls")})
    assert (nulls.messages, nulls.candidates, nulls.params, nulls.max_calls) == ([], [], {},
                                                                                 None)


def random_candidate(rng: random.Random, ident: str) -> Candidate:
    def maybe(value: Any) -> Any:
        return value if rng.random() < 0.5 else None

    total = rng.randint(0, 5)
    return Candidate(
        ident, rng.choice(["", "x", "The answer is 42.", "ünïcödé ✓\n\t[/b]"]),
        rng.choice(["", "generator@sim:strong"]), maybe("Strengths:\n- a\nWeaknesses:\n- b"),
        maybe(rng.random()), maybe(rng.randint(1, 9)), maybe(rng.random() < 0.5),
        maybe(rng.randint(0, total)), maybe(total), maybe("42"),
        rng.choice([{}, {"k": [1, "two", None]}, {"nested": {"x": 1.5}}]))


def test_random_requests_and_replies_survive_the_wire() -> None:
    """Whatever one side writes with ``to_dict``, msgpack carries and the other side reads
    back equal, for seeded random bodies."""
    for seed in SEEDS:
        rng = random.Random(seed)
        candidates = [random_candidate(rng, f"c{i}") for i in range(rng.randint(0, 4))]
        request = TechniqueRequest(
            messages=[{"role": rng.choice(["system", "user", "assistant"]), "content": f"m{i}"}
                      for i in range(rng.randint(0, 3))],
            candidates=candidates, params={"top_k": rng.randint(1, 3)},
            sample_index=rng.randint(0, 10**6), tests=rng.choice([None, [], ["assert 1"]]),
            sim=rng.choice([None, {"id": "q", "answer": "42", "wrong": ["41"]}]),
            max_calls=rng.choice([None, 0, rng.randint(1, 100)]), trace=rng.random() < 0.5)
        assert TechniqueRequest.from_body(unpack(pack(request.to_dict()))) == request, seed
        usage = UsageTotals(rng.randint(0, 9), rng.randint(0, 10**6), rng.randint(0, 10**6),
                            round(rng.random(), 6), rng.random(), rng.randint(0, 3),
                            rng.random() < 0.5)
        reply = TechniqueReply(
            candidates, rng.choice([None, ["assert f(1) == 2"]]),
            [ParseRecord(rng.random() < 0.5, "m", rng.randint(0, 5),
                         rng.choice([None, "tie"]), "d") for _ in range(rng.randint(0, 3))],
            usage, [{"code": "early_stop", "detail": "x"}] if rng.random() < 0.5 else [],
            rng.choice([None, [[{"role": "user", "content": "p"}]]]))
        again = TechniqueReply.from_body(unpack(pack(reply.to_dict())))
        assert again == reply, seed


def test_candidate_round_trip_and_annotations_cannot_rewrite_what_was_judged() -> None:
    candidate = Candidate("g#0", "text", "generator@sim:strong", "crit", 0.5, 2, True, 2, 3,
                          "42", {"k": [1]})
    assert Candidate.from_dict(candidate.to_dict()) == candidate
    forged = Candidate("g#0", "FORGED", "evil", rank=1, verdict=False, meta={"j": 1})
    judged = candidate.annotated(forged)
    assert (judged.id, judged.text, judged.model) == ("g#0", "text", "generator@sim:strong")
    assert (judged.rank, judged.verdict, judged.critique, judged.score) == (1, False, "crit", 0.5)
    assert judged.meta == {"k": [1], "j": 1}
    assert candidate.rank == 2 and candidate.meta == {"k": [1]}  # the original is untouched


# -- replies ------------------------------------------------------------------------------------

GOOD_USAGE = {"calls": 1}


@pytest.mark.parametrize(("body", "where", "problem"), [
    ("text", "reply", "must be a map"),
    ({"usage": GOOD_USAGE}, "reply", "missing field(s) ['candidates']"),
    ({"candidates": []}, "reply", "missing field(s) ['usage']"),
    ({"candidates": [], "usage": GOOD_USAGE, "sneaky": 1}, "reply",
     "unknown field(s) ['sneaky']"),
    ({"candidates": {}, "usage": GOOD_USAGE}, "reply.candidates", "must be a list"),
    ({"candidates": [{"id": "a", "text": 1}], "usage": GOOD_USAGE}, "reply.candidates[0].text",
     "must be a string, got int"),
    ({"candidates": [], "usage": {"calls": -1}}, "reply.usage.calls", "must be an integer"),
    ({"candidates": [], "usage": {"calls": "1"}}, "reply.usage.calls", "must be an integer"),
    ({"candidates": [], "usage": {"prompt_tokens": 10**13}}, "reply.usage.prompt_tokens",
     "must be an integer in [0, "),
    ({"candidates": [], "usage": {"latency_s": math.inf}}, "reply.usage.latency_s",
     "must be a number"),
    ({"candidates": [], "usage": {"cost_usd": -0.5}}, "reply.usage.cost_usd", "must be a number"),
    ({"candidates": [], "usage": {"cost_known": "yes"}}, "reply.usage.cost_known",
     "must be true or false"),
    ({"candidates": [], "usage": {"calls": 1, "bogus": 2}}, "reply.usage",
     "unknown field(s) ['bogus']"),
    ({"candidates": [], "usage": []}, "reply.usage", "must be a map"),
    ({"candidates": [], "usage": GOOD_USAGE, "tests": "assert x"}, "reply.tests",
     "must be a list"),
    ({"candidates": [], "usage": GOOD_USAGE, "parse": [{"method": "x"}]}, "reply.parse[0].ok",
     "must be true or false"),
    ({"candidates": [], "usage": GOOD_USAGE, "parse": {}}, "reply.parse", "must be a list"),
    ({"candidates": [], "usage": GOOD_USAGE, "notes": [{"detail": "x"}]},
     "reply.notes[0].code", "must be a string"),
    ({"candidates": [], "usage": GOOD_USAGE, "notes": ""}, "reply.notes", "must be a list"),
    ({"candidates": [], "usage": GOOD_USAGE, "prompts": [[{"role": "robot", "content": "x"}]]},
     "reply.prompts[0][0].role", "must be one of"),
])
def test_bad_replies_name_the_field(body: object, where: str, problem: str) -> None:
    with pytest.raises(ContractError) as failure:
        TechniqueReply.from_body(body)
    assert failure.value.where == where
    assert problem in failure.value.problem


def test_reply_keys_and_usage_totals() -> None:
    reply = TechniqueReply([Candidate("a", "x")], ["assert 1"])
    assert set(reply.to_dict()) == {"candidates", "tests", "parse", "usage", "notes"}
    assert set(TechniqueReply([], prompts=[]).to_dict()) == {
        "candidates", "tests", "parse", "usage", "notes", "prompts"}
    assert set(reply.to_dict()["usage"]) == {"calls", "prompt_tokens", "completion_tokens",
                                             "tokens", "latency_s", "cost_usd", "cached_calls",
                                             "cost_known"}
    total = UsageTotals()
    total.merge({"calls": 2, "prompt_tokens": 5, "cost_known": False})
    total.merge(UsageTotals(calls=1, completion_tokens=3))
    total.merge(None)
    assert (total.calls, total.tokens, total.cost_known) == (3, 8, False)


# -- parameters, as the agent applies them --------------------------------------------------------

def agent_params(name: str, data: dict[str, Any]) -> Any:
    t = technique(name)
    placement = {"provider": "sim", "model": "m"} if t.uses_llm else {}
    return t.params(data, **placement)


@pytest.mark.parametrize(("name", "data", "where", "problem"), [
    ("ranker", {"top_k": 1, "topk": 1}, "params.topk", "Extra inputs are not permitted"),
    ("ranker", {}, "params.top_k", "Field required"),
    ("ranker", {"top_k": 1, "mode": "tournament"}, "params.mode", "'listwise' or 'pairwise'"),
    ("ranker", {"top_k": True}, "params.top_k", "valid integer"),
    ("ranker", {"top_k": 1.5}, "params.top_k", "valid integer"),
    ("ranker", {"top_k": "2"}, "params.top_k", "valid integer"),
    ("ranker", {"top_k": 0}, "params.top_k", "greater than or equal to 1"),
    # what the old agents took: n and select are gone, parse_retries is a request parameter
    ("generator", {"n": 3}, "params.n", "Extra inputs are not permitted"),
    ("unit_test_evaluator", {"select": "first_pass"}, "params.select", "Extra inputs"),
    ("verifier", {"parse_retries": 6}, "params.parse_retries", "less than or equal to 5"),
    ("verifier", {"parse_retries": -1}, "params.parse_retries", "greater than or equal to 0"),
    ("verifier", {"first_k": 0}, "params.first_k", "greater than or equal to 1"),
    ("generator", {"samples": 0}, "params.samples", "greater than or equal to 1"),
    ("generator", {"temperature": 2.5}, "params.temperature", "less than or equal to 2"),
    ("generator", {"max_tokens": 0}, "params.max_tokens", "greater than or equal to 1"),
    ("generator", {"base_url": "http://elsewhere"}, "params", "['base_url'] say where"),
    ("generator", {"api_key_env": "OTHER_KEY"}, "params", "['api_key_env'] say where"),
    ("fuser", {"length": 0}, "params.length", "must be a word count >= 1 or 'longest'"),
    ("fuser", {"length": True}, "params.length", "must be a word count"),
    ("fuser", {"length": "short"}, "params.length", "must be a word count"),
    ("fuser", {"n_outputs": 65}, "params.n_outputs", "less than or equal to 64"),
    ("unit_test_generator", {"num_tests": 51}, "params.num_tests", "less than or equal to 50"),
    ("unit_test_generator", {"task": "essay"}, "params.task", "'text' or 'code'"),
    ("code_tester", {"memory_mb": 1}, "params.memory_mb", "greater than or equal to 64"),
    ("code_tester", {"timeout_s": 0}, "params.timeout_s", "greater than 0"),
    ("code_tester", {"top_k": 0}, "params.top_k", "greater than or equal to 1"),
    ("majority_vote", {"top_k": 0}, "params.top_k", "greater than or equal to 1"),
    ("majority_vote", {"provider": "sim"}, "params", "['provider'] say where a component runs"),
])
def test_bad_params_name_the_field(name: str, data: dict[str, Any], where: str,
                                   problem: str) -> None:
    with pytest.raises(ContractError) as failure:
        agent_params(name, data)
    assert failure.value.where == where
    assert problem in failure.value.problem


def test_a_request_cannot_move_the_agent() -> None:
    """A request cannot move an agent to another provider, model or endpoint, nor change the
    technique: placement in a request is refused, naming the fields."""
    with pytest.raises(ContractError) as failure:
        agent_params("ranker", {"top_k": 1, "provider": "openai", "model": "other",
                                "technique": "generator"})
    assert "['model', 'provider', 'technique'] say where a component runs" in str(failure.value)
    got = agent_params("ranker", {"top_k": 1})
    assert (got.technique, got.provider, got.model) == ("ranker", "sim", "m")


def random_fields(name: str, rng: random.Random) -> dict[str, Any]:
    llm = {"temperature": round(rng.uniform(0, 2), 2), "max_tokens": rng.randint(1, 4096),
           "parse_retries": rng.randint(0, 5), "tests_in_prompt": rng.random() < 0.5}
    k = rng.randint(1, 8)
    pick = rng.choice
    fields = {
        "generator": {"samples": rng.randint(1, 16)},
        "critic": {"batched": rng.random() < 0.5},
        "ranker": {"top_k": k, "mode": pick(["listwise", "pairwise"]),
                   "use_critiques": rng.random() < 0.5},
        "fuser": {"n_outputs": rng.randint(1, 4), "length": pick([None, "longest", k])},
        "verifier": {"top_k": pick([None, k]), "first_k": pick([None, k]),
                     "two_step": rng.random() < 0.5, "use_critiques": rng.random() < 0.5},
        "unit_test_generator": {"num_tests": k, "task": pick(["text", "code"]),
                                "entry_point": pick([None, "f"])},
        "unit_test_evaluator": {"top_k": pick([None, k]), "first_k": pick([None, k]),
                                "task": pick(["text", "code"]), "timeout_s": 2.5},
        "majority_vote": {"top_k": k},
        "code_tester": {"top_k": pick([None, k]), "memory_mb": 256, "entry_point": "f",
                        "setup": pick([None, "x = 1"])},
    }[name]
    return {**(llm if technique(name).uses_llm else {}),
            **{key: v for key, v in fields.items() if v is not None}}


@pytest.mark.parametrize("name", list(SPEC_TECHNIQUES))
def test_what_the_spec_sends_the_agent_accepts_unchanged(name: str) -> None:
    """The orchestrator sends ``wire_params()`` of a spec component; the agent, applying its
    own placement, gets the same parameters back, for random valid fields."""
    rng = random.Random(name)
    for _ in range(50):
        spec_side: ComponentParams = component(name, **random_fields(name, rng))
        wire = unpack(pack(spec_side.wire_params()))
        assert not set(wire) & ComponentParams.PLACEMENT
        agent_side = agent_params(name, wire)
        assert agent_side.model_dump(exclude=set(ComponentParams.PLACEMENT)) == \
            spec_side.model_dump(exclude=set(ComponentParams.PLACEMENT))


# -- parsers ------------------------------------------------------------------------------------

def test_every_sim_renderer_writes_what_its_parser_reads() -> None:
    """Simulated models write through the technique's own renderer; each parser must read
    back exactly the decision, for seeded random decisions."""
    for seed in SEEDS:
        rng = random.Random(seed)
        n = rng.randint(2, 9)
        order = rng.sample(range(n), n)
        assert ranking_parser(n, n)(render_ranking(order)).value == order
        choice = rng.randrange(2)
        assert parse_better(render_better(choice)).value == (1.0 if choice == 0 else 0.0)
        verdicts = [rng.random() < 0.5 for _ in range(n)]
        assert parse_verdict(render_verdict(verdicts)).value is verdicts[0]
        critique = parse_critique(render_critique(verdicts)).value
        assert ("appears incorrect" in critique) is not verdicts[0]
        sections = batch_parser(n)(render_sim_batch(verdicts)).value
        assert sorted(sections) == list(range(1, n + 1))
        assert [("appears incorrect" in sections[k]) for k in range(1, n + 1)] == [
            not v for v in verdicts]
        assert results_parser(n)(render_results(verdicts)).value == verdicts
        checks = [f"check {i}: the   answer holds" for i in range(n)]
        assert text_tests(render_tests("text")(checks)).value == [
            " ".join(c.split()) for c in checks]
        asserts = [f"assert f({i}) == {2 * i}" for i in range(n)]
        assert code_tests(render_tests("code")(asserts)).value == asserts
        rating = rng.randint(1, 10)
        assert parse_rating(render_rating(rating)).value == rating
        assert parse_game(render_preference(choice)).value[0] == ("win" if choice == 0
                                                                   else "loss")


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
                         ("Ranking: [1] > [0] > [2]", "response number 0 does not exist"),
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
    for text in ("I think it might pass.", "", "Verdict: maybe"):
        with pytest.raises(OutputFormatError):
            parse_verdict(text)
    assert reasoning_of("I checked 6 * 7.\nVerdict: PASS") == "I checked 6 * 7."
    assert reasoning_of("no verdict here") == "no verdict here"
    assert parse_reasoning("  step one\n").value == "step one"
    with pytest.raises(OutputFormatError, match="empty"):
        parse_reasoning(" \n ")


def test_critique_parsers() -> None:
    parsed = parse_critique("## Strengths:\n- clear\n\n**Weaknesses**:\n- wrong sum")
    assert parsed.value == "Strengths:\n- clear\nWeaknesses:\n- wrong sum"
    swapped = parse_critique("Weaknesses: none\nStrengths: short")
    assert swapped.value == "Strengths:\nshort\nWeaknesses:\nnone"
    with pytest.raises(OutputFormatError, match="no 'Weaknesses:' section"):
        parse_critique("Strengths:\n- good")
    with pytest.raises(OutputFormatError, match="the Strengths section is empty"):
        parse_critique("Strengths:\nWeaknesses:\n- bad")
    # Batched: sections by number, decorated, out of order; a bad or unknown one is left out.
    text = ("**[2]**\nStrengths:\n- b2\nWeaknesses:\n- w2\n\n"
            "[1]:\nStrengths: s1\nWeaknesses: w1\n\n"
            "[3]\nStrengths:\n- only strengths\n\n[9]\nStrengths: x\nWeaknesses: y")
    assert batch_sections(text, 3) == {1: "Strengths:\ns1\nWeaknesses:\nw1",
                                       2: "Strengths:\n- b2\nWeaknesses:\n- w2"}
    with pytest.raises(OutputFormatError, match=r"no readable review for response\(s\) \[3\]"):
        batch_parser(3)(text)
    assert batch_sections("Strengths: s\nWeaknesses: w", 2) == {}  # no numbers: nothing


def test_test_result_parser() -> None:
    parse = results_parser(3)
    assert parse("Test 1: PASS\nTest 2: fail\n**Test 3**: PASS").value == [True, False, True]
    assert parse("Test 1: FAIL\nTest 2: PASS\nTest 3: PASS\nTest 1: PASS").value == [
        True, True, True]  # the last line for a test wins
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


def test_fuser_pieces() -> None:
    assert words("one  two\nthree") == 3
    assert parse_fused("  fused \n").value == "fused"
    with pytest.raises(OutputFormatError, match="empty"):
        parse_fused("\n\t ")
    sources = [Candidate("a", "one two three"), Candidate("b", "one")]
    assert length_limit(FuserParams(provider="sim", model="m", length="longest"), sources) == 3
    assert length_limit(FuserParams(provider="sim", model="m", length=7), sources) == 7
    assert length_limit(FuserParams(provider="sim", model="m"), sources) is None


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


def test_prompt_helpers() -> None:
    assert query_text(QUERY) == "q"
    convo = query_text([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                        {"role": "user", "content": "c"}])
    assert "[user]\na" in convo and convo.endswith("[user]\nc")
    conversation = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"},
                    {"role": "user", "content": "second"}]
    shown = with_tests(conversation, ["assert f(1)  ==\n 2", "states 42"])
    assert shown[0] == conversation[0] and shown[1] == conversation[1]
    assert shown[2]["content"].startswith("second\n\n")
    assert shown[2]["content"].endswith("\n- assert f(1) == 2\n- states 42")
    assert conversation[2]["content"] == "second"  # the caller's conversation is untouched
    block = candidate_block(2, Candidate("a", " text ", critique="crit"), with_critique=True)
    assert block == "### Response [2]\ntext\n\n### Critique of response [2]\ncrit"
    assert "Critique" not in candidate_block(2, Candidate("a", "t", critique="c"),
                                             with_critique=False)


# -- the orchestrator's side: reply checks ------------------------------------------------------

def request_for(candidates: list[Candidate], max_calls: int | None = None) -> TechniqueRequest:
    return TechniqueRequest(QUERY, candidates, {}, max_calls=max_calls)


def check(name: str, params: Any, request: TechniqueRequest, reply: TechniqueReply) -> str:
    with pytest.raises(ContractError) as failure:
        technique(name).check_reply(params, request, reply)
    return str(failure.value)


def test_check_reply_holds_every_technique_to_its_shape() -> None:
    three = cands(3)
    gen = component("generator")
    assert "exactly 1 new candidate, got 0" in check("generator", gen, request_for([]),
                                                     TechniqueReply([]))
    assert "exactly 1 new candidate, got 2" in check("fuser", component("fuser"),
                                                     request_for(three),
                                                     TechniqueReply(cands(2)))
    critic = component("critic")
    for sent, got, why in [
        (three, three[:2], "missing ['c2']"),
        (three, [*three, Candidate("zz", "")], "unknown ['zz']"),
        (three, [three[0], three[0], three[1]], "missing ['c2'], repeated ['c0']"),
    ]:
        assert why in check("critic", critic, request_for(sent), TechniqueReply(got))
    assert "reply.usage.calls: 4 calls made; the request allowed 3" in check(
        "critic", critic, request_for(three, max_calls=3),
        TechniqueReply(three, usage=UsageTotals(calls=4)))
    technique("critic").check_reply(critic, request_for(three, 3),
                                    TechniqueReply(three[::-1], usage=UsageTotals(calls=3)))
    ranker = component("ranker", top_k=1)
    ranked = [Candidate(c.id, c.text, rank=r) for c, r in zip(three, (2, 1, 2), strict=True)]
    assert "must rank the candidates 1..n, each once; got [1, 2, 2]" in check(
        "ranker", ranker, request_for(three), TechniqueReply(ranked))
    assert "got [1, 2]" in check("ranker", ranker, request_for(three), TechniqueReply(
        [Candidate("c0", "", rank=1), Candidate("c1", "", rank=2), Candidate("c2", "")]))
    vote = component("majority_vote")
    assert "every candidate needs its answer" in check(
        "majority_vote", vote, request_for(three[:1]), TechniqueReply(three[:1]))
    utg = component("unit_test_generator", num_tests=2)
    assert "reply.tests: missing" in check("unit_test_generator", utg, request_for([]),
                                           TechniqueReply([]))
    assert "3 tests; the request asked for at most 2" in check(
        "unit_test_generator", utg, request_for([]), TechniqueReply([], ["a", "b", "c"]))


# -- the orchestrator's side: merges, where every selection rule lives ------------------------------

def judged(incoming: list[Candidate], **per_id: dict[str, Any]) -> list[Candidate]:
    """The reply candidates of a judge: the incoming ids, with annotations by id."""
    return [Candidate(c.id, "(judge may not rewrite)", **per_id.get(c.id, {}))
            for c in incoming]


def one_reply(incoming: list[Candidate], candidates: list[Candidate]
              ) -> list[tuple[Shard, TechniqueReply | None]]:
    return [(Shard(tuple(range(len(incoming)))), TechniqueReply(candidates))]


def per_candidate(incoming: list[Candidate], candidates: list[Candidate | None]
                  ) -> list[tuple[Shard, TechniqueReply | None]]:
    return [(Shard((i,)), None if c is None else TechniqueReply([c]))
            for i, c in enumerate(candidates)]


def test_ranker_merge_keeps_the_top_k_ranks() -> None:
    incoming = cands(4)
    p = component("ranker", top_k=2)
    ranks = {"c0": 3, "c1": 1, "c2": 4, "c3": 2}
    merged = technique("ranker").merge(
        p, incoming, one_reply(incoming, judged(incoming, **{
            i: {"rank": r} for i, r in ranks.items()})))
    assert [(c.id, c.rank, c.text) for c in merged.candidates] == [
        ("c1", 1, "text 1"), ("c3", 2, "text 3")]
    assert merged.problems == []
    failed = technique("ranker").merge(p, incoming, [(Shard((0, 1, 2, 3)), None)])
    assert [c.id for c in failed.candidates] == ["c0", "c1"]
    assert failed.problems == ["fallback: input order (the ranking request failed)"]
    assert technique("ranker").merge(p, [], []).candidates == []


def reference_verifier(p: Any, incoming: list[Candidate], verdicts: list[bool | None]
                       ) -> tuple[list[str], bool]:
    keep = min([k for k in (p.top_k, p.first_k) if k] + [len(incoming)])
    passed = [c.id for c, v in zip(incoming, verdicts, strict=True) if v]
    if passed:
        return passed[:keep], False
    return [c.id for c in incoming[:keep]], True


def test_verifier_merge_keeps_what_passed_in_input_order_and_never_more_than_promised() -> None:
    for seed in SEEDS:
        rng = random.Random(seed)
        n = rng.randint(1, 6)
        incoming = cands(n)
        p = component("verifier", top_k=rng.choice([None, rng.randint(1, 6)]),
                      first_k=rng.choice([None, rng.randint(1, 6)]))
        # A failed request (None) is no verdict, like an unverified candidate.
        verdicts = [rng.choice([True, False, None]) for _ in range(n)]
        replies = [None if v is None and rng.random() < 0.5
                   else Candidate(c.id, "", verdict=v) for c, v in zip(incoming, verdicts,
                                                                       strict=True)]
        merged = technique("verifier").merge(p, incoming, per_candidate(incoming, replies))
        ids, none_passed = reference_verifier(p, incoming, verdicts)
        assert [c.id for c in merged.candidates] == ids, (seed, verdicts)
        assert [c.text for c in merged.candidates] == [f"text {i[1:]}" for i in ids]
        assert bool(merged.problems) == none_passed
        if none_passed:
            assert merged.problems[0].startswith("none_passed: no candidate passed")
        lo, hi = technique("verifier").out_range(p, n)
        assert lo <= len(merged.candidates) <= hi


def test_test_based_merges_order_by_tests_passed_and_honour_first_k() -> None:
    evaluator, tester = technique("unit_test_evaluator"), technique("code_tester")
    for seed in SEEDS:
        rng = random.Random(seed)
        n = rng.randint(1, 6)
        incoming = cands(n)
        top_k = rng.choice([None, rng.randint(1, 6)])
        first_k = rng.choice([None, rng.randint(1, 6)])
        passed = [rng.choice([None, 0, 1, 2]) for _ in range(n)]  # None: not tested
        replies: list[Candidate | None] = [
            None if x is None else Candidate(c.id, "", tests_passed=x, tests_total=2,
                                             verdict=x == 2)
            for c, x in zip(incoming, passed, strict=True)]
        results = per_candidate(incoming, replies)
        tested = [i for i in range(n) if passed[i] is not None]
        keep = top_k or n
        best = [f"c{i}" for i in sorted(tested, key=lambda i: (-(passed[i] or 0), i))][:keep]
        fallback = [c.id for c in incoming[:keep]]
        got = tester.merge(component("code_tester", top_k=top_k), incoming, results)
        assert [c.id for c in got.candidates] == (best or fallback), seed
        assert bool(got.problems) == (not tested)
        p = component("unit_test_evaluator", top_k=top_k, first_k=first_k)
        full = [f"c{i}" for i in range(n) if passed[i] == 2]
        expected = full[:first_k] if first_k and len(full) >= first_k else (best or fallback)
        got = evaluator.merge(p, incoming, results)
        assert [c.id for c in got.candidates] == expected, seed
        hi = evaluator.out_range(p, n)[1]
        assert len(got.candidates) <= hi


def test_majority_vote_merge_counts_votes() -> None:
    vote = technique("majority_vote")
    for seed in SEEDS:
        rng = random.Random(seed)
        n = rng.randint(1, 8)
        incoming = cands(n)
        answers = [rng.choice("xyz") for _ in range(n)]
        top_k = rng.randint(1, 3)
        merged = vote.merge(component("majority_vote", top_k=top_k), incoming, one_reply(
            incoming, judged(incoming, **{c.id: {"answer": a}
                                          for c, a in zip(incoming, answers, strict=True)})))
        counts = collections.Counter(answers)
        order = sorted(counts, key=lambda a: (-counts[a], answers.index(a)))[:top_k]
        assert [c.answer for c in merged.candidates] == order, seed
        assert [c.id for c in merged.candidates] == [f"c{answers.index(a)}" for a in order]
        for c in merged.candidates:
            assert c.score == counts[c.answer] / n and c.meta["votes"] == counts[c.answer]
            assert c.meta["vote_counts"] == dict(counts)
    failed = vote.merge(component("majority_vote"), cands(3), [(Shard((0, 1, 2)), None)])
    assert [c.id for c in failed.candidates] == ["c0"] and failed.problems


def test_writer_and_test_writer_merges() -> None:
    incoming = cands(2)
    new = [Candidate(f"g#{k}", f"sample {k}") for k in range(3)]
    results: list[tuple[Shard, TechniqueReply | None]] = [
        (Shard((), 0), TechniqueReply([new[0]])), (Shard((), 1), None),
        (Shard((), 2), TechniqueReply([new[2]]))]
    assert [c.id for c in technique("generator").merge(component("generator", samples=3), [],
                                                       results).candidates] == ["g#0", "g#2"]
    tests = technique("unit_test_generator").merge(
        component("unit_test_generator"), incoming,
        [(Shard(), TechniqueReply(judged(incoming), ["assert a", "assert b"]))])
    assert tests.candidates == incoming and tests.tests == ["assert a", "assert b"]
    none = technique("unit_test_generator").merge(component("unit_test_generator"), incoming,
                                                  [(Shard(), None)])
    assert none.candidates == incoming and none.tests == []


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
    ("ranker", {"provider": "sim", "model": ""}, "setting 'model' must be a non-empty name"),
    ("ranker", {"provider": "sim", "model": "x", "skil": 0.5}, "unknown setting(s) 'skil'"),
    ("ranker", {"provider": "nope", "model": "x"}, "unknown provider 'nope'"),
    ("ranker", {"provider": "sim", "model": "x", "credit": 0}, "'credit' must be an integer"),
    ("ranker", "x", "settings must be a mapping"),
    # parse_retries is a request parameter now, not an agent setting
    ("verifier", {"provider": "sim", "model": "x", "parse_retries": 0},
     "unknown setting(s) 'parse_retries'"),
    ("critic", {"provider": "sim", "model": "x", "max_parallel_runs": 2},
     "unknown setting(s) 'max_parallel_runs'"),
    ("majority_vote", {"provider": "sim"}, "both 'provider' and 'model', or neither"),
    ("majority_vote", {"skill": 1}, "unknown setting(s) ['skill']"),
    ("code_tester", {"max_parallel_runs": 0}, "'max_parallel_runs' must be an integer in [1,"),
])
def test_bad_settings_are_config_errors(kind: str, settings: Any, message: str) -> None:
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
