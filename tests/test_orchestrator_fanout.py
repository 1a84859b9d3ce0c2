"""Fan-out and recombination of one layer, without sockets."""

from __future__ import annotations

from itas.orchestrator.fanout import Context, combine, merge_layer, requests_for
from itas.spec import (
    CodeTesterSpec,
    CriticSpec,
    FuserSpec,
    GeneratorSpec,
    RankerSpec,
    UnitTestGeneratorSpec,
    VerifierSpec,
)

CTX = Context([{"role": "user", "content": "q"}], {"id": "k", "answer": "a", "wrong": []}, None)
A = {"id": "L1.1.0", "text": "alpha", "model": "g"}
B = {"id": "L1.1.1", "text": "beta", "model": "g"}


def test_generator_sends_one_request_per_sample() -> None:
    spec = GeneratorSpec(provider="sim", model="m", samples=3, temperature=0.3, max_tokens=9)
    bodies = requests_for(spec, [], CTX)
    assert [b["sample_index"] for b in bodies] == [0, 1, 2]
    assert bodies[0]["params"] == {"samples": 3, "temperature": 0.3, "max_tokens": 9, "n": 1}
    assert all(b["sim"] == CTX.sim and b["messages"] == CTX.messages for b in bodies)


def test_new_candidates_get_ids_from_their_place_in_the_architecture() -> None:
    spec = GeneratorSpec(provider="sim", model="m", samples=2)
    replies = [{"candidates": [{"id": "x", "text": "one"}]}, None,
               {"candidates": [{"id": "x", "text": "two"}]}]
    out, _, _ = combine(spec, [], replies, "L1.2")
    assert [(c["id"], c["text"]) for c in out] == [("L1.2.0", "one"), ("L1.2.1", "two")]


def test_critic_judges_each_candidate_separately_and_critiques_stay_attached() -> None:
    spec = CriticSpec(provider="sim", model="m")
    bodies = requests_for(spec, [A, B], CTX)
    assert [b["candidates"] for b in bodies] == [[A], [B]]
    # Replies arrive in any order and may try to rewrite the text: only annotations count.
    replies = [{"candidates": [{**B, "text": "EVIL", "critique": "about beta"}]},
               {"candidates": [{**A, "critique": "about alpha"}]}]
    out, _, _ = combine(spec, [A, B], replies, "L2.1")
    assert [(c["text"], c["critique"]) for c in out] == [("alpha", "about alpha"),
                                                        ("beta", "about beta")]


def test_unknown_candidate_ids_are_refused() -> None:
    spec = RankerSpec(provider="sim", model="m", top_k=1)
    out, _, problems = combine(spec, [A], [{"candidates": [{"id": "forged", "text": "x"}]}], "p")
    assert out == [] and "forged" in problems[0]


def test_verifier_keeps_passing_and_falls_back_to_all_when_none_pass() -> None:
    spec = VerifierSpec(provider="sim", model="m")
    passed = [{"candidates": [{**A, "verdict": False}]}, {"candidates": [{**B, "verdict": True}]}]
    assert [c["id"] for c in combine(spec, [A, B], passed, "p")[0]] == [B["id"]]
    failed = [{"candidates": [{**A, "verdict": False}]}, None]
    out, _, problems = combine(spec, [A, B], failed, "p")
    assert out == [A, B] and "no candidate passed" in problems[0]


def test_code_tester_ranks_by_share_of_tests_passed() -> None:
    spec = CodeTesterSpec(top_k=1)
    replies = [{"candidates": [{**A, "tests_passed": 1, "tests_total": 4}]},
               {"candidates": [{**B, "tests_passed": 3, "tests_total": 4}]}]
    assert [c["id"] for c in combine(spec, [A, B], replies, "p")[0]] == [B["id"]]


def test_fuser_sends_all_candidates_once_per_output() -> None:
    spec = FuserSpec(provider="sim", model="m", n_outputs=2)
    bodies = requests_for(spec, [A, B], CTX)
    assert [b["sample_index"] for b in bodies] == [0, 1]
    assert all(b["candidates"] == [A, B] and b["params"]["n_outputs"] == 1 for b in bodies)


def test_unit_tests_pass_candidates_through() -> None:
    spec = UnitTestGeneratorSpec(provider="sim", model="m", num_tests=2)
    out, tests, _ = combine(spec, [A], [{"tests": ["assert f(1) == 1", "assert f(2) == 4"]}], "p")
    assert out == [A] and tests == ["assert f(1) == 1", "assert f(2) == 4"]


def test_layer_without_producers_joins_every_critique() -> None:
    first, second = CriticSpec(provider="sim", model="m"), CriticSpec(provider="sim", model="n")
    merged = merge_layer([A, B], [(first, [{**A, "critique": "c1"}, B]),
                                  (second, [{**A, "critique": "c2"}, B])])
    assert merged[0]["critique"] == "c1\n\nc2" and "critique" not in merged[1]


def test_layer_with_producers_concatenates_in_component_order() -> None:
    g1 = GeneratorSpec(provider="sim", model="m")
    g2 = GeneratorSpec(provider="sim", model="n")
    assert merge_layer([], [(g1, [A]), (g2, [B])]) == [A, B]
