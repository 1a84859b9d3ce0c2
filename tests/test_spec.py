"""Architecture specs: validation rules and their messages, flow analysis, call plans, cost
estimates and the YAML/JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from itas.agents.providers import PROVIDERS
from itas.errors import ConfigError
from itas.plan import REASK_TOKENS, describe, estimate_cost, layer_flows, plan_layer
from itas.spec import (
    SPEC_CLASSES,
    TECHNIQUE_NAMES,
    Architecture,
    load_architecture,
    parse_architecture,
)
from itas.techniques.base import INSTRUCTION_TOKENS
from itas.techniques.code_tester import CodeTesterParams as CodeTesterSpec
from itas.techniques.generator import GeneratorParams as GeneratorSpec
from itas.techniques.majority_vote import MajorityVoteParams as MajorityVoteSpec
from itas.techniques.ranker import RankerParams as RankerSpec

TECHNIQUES = TECHNIQUE_NAMES

CONFIGS = Path(__file__).parents[1] / "configs" / "architectures"
SRC = "arch.yaml"


def gen(model: str = "strong", samples: int = 3, **extra: Any) -> dict[str, Any]:
    return {
        "technique": "generator",
        "provider": "sim",
        "model": model,
        "samples": samples,
        **extra,
    }


def comp(technique: str, **extra: Any) -> dict[str, Any]:
    return {"technique": technique, "provider": "sim", "model": "judge", **extra}


def spec(*layers: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    return {"name": "t", "layers": list(layers), **top}


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_architecture(data, SRC)
    return str(info.value)


# --- examples ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_architecture_loads(path: Path) -> None:
    arch = load_architecture(path)
    assert arch.name == path.stem
    assert arch.services
    assert estimate_cost(arch).calls_per_query >= 1


def test_every_technique_has_a_spec_class() -> None:
    assert tuple(SPEC_CLASSES) == TECHNIQUES
    assert all(cls.model_fields["technique"].default == t for t, cls in SPEC_CLASSES.items())


def test_examples_cover_every_provider_and_technique() -> None:
    archs = [load_architecture(p) for p in CONFIGS.glob("*.yaml")]
    used = {c for a in archs for _, _, c in a.components()}
    assert {c.technique for c in used} == set(TECHNIQUES)
    assert {c.provider for c in used if c.provider} == set(PROVIDERS)


def test_local_example_keeps_replies_short_for_the_embedded_model() -> None:
    arch = load_architecture(CONFIGS / "local_gcrf.yaml")
    assert [c.technique for _, _, c in arch.components()] == [
        "generator",
        "critic",
        "ranker",
        "fuser",
    ]
    assert all(c.provider == "local" and c.max_tokens <= 64 for _, _, c in arch.components())


# --- service names ----------------------------------------------------------------------


def test_service_names() -> None:
    arch = parse_architecture(
        spec(
            [gen("strong"), gen("weak"), gen("strong")],
            [{"technique": "majority_vote"}],
        )
    )
    assert arch.services == ("generator@sim:strong", "generator@sim:weak", "majority_vote")
    assert RankerSpec(provider="openai", model="gpt-4o", top_k=1).service_name == (
        "ranker@openai:gpt-4o"
    )
    assert CodeTesterSpec().service_name == "code_tester"
    assert MajorityVoteSpec(provider="local", model="py").service_name == ("majority_vote@local:py")


def test_duplicate_components_are_allowed() -> None:
    arch = parse_architecture(spec([gen(), gen()], [comp("fuser")]))
    assert arch.layers[0][0] == arch.layers[0][1]
    assert len(arch.services) == 2


# --- field rules ------------------------------------------------------------------------


def test_bad_top_k_names_file_layer_component_and_field() -> None:
    msg = error_of(spec([gen()], [comp("ranker", top_k=0)], [comp("fuser")]))
    assert msg == "arch.yaml: layer 2, component 1 (ranker): 'top_k' must be >= 1"


def test_unknown_technique_lists_known_ones_and_suggests() -> None:
    msg = error_of(spec([gen()], [comp("rankr", top_k=1)]))
    assert msg.startswith("arch.yaml: layer 2, component 1: unknown technique 'rankr'")
    assert "did you mean 'ranker'?" in msg
    assert all(t in msg for t in TECHNIQUES)


def test_missing_technique() -> None:
    msg = error_of(spec([{"provider": "sim", "model": "m"}]))
    assert msg.startswith("arch.yaml: layer 1, component 1: missing 'technique'")


def test_unknown_provider_lists_known_ones() -> None:
    msg = error_of(spec([gen(provider="opnai")]))
    assert msg.startswith("arch.yaml: layer 1, component 1 (generator): unknown provider")
    assert "did you mean 'openai'?" in msg and all(p in msg for p in PROVIDERS)


def test_unknown_field_suggests_the_right_one() -> None:
    msg = error_of(spec([gen()], [comp("ranker", topk=1)]))
    assert msg.startswith("arch.yaml: layer 2, component 1 (ranker): unknown field 'topk'")
    assert "did you mean 'top_k'?" in msg
    assert msg.endswith("layer 2, component 1 (ranker): missing required field 'top_k'")


def test_field_that_belongs_to_another_technique_is_unknown() -> None:
    msg = error_of(spec([gen(top_k=1)]))
    assert "layer 1, component 1 (generator): unknown field 'top_k'" in msg


def test_unknown_top_level_field() -> None:
    msg = error_of({"name": "t", "layers": [[gen(samples=1)]], "fnal": "first"})
    assert "arch.yaml: unknown field 'fnal' (did you mean 'final'?)" in msg


@pytest.mark.parametrize(("component", "expected"), [
    ({"technique": "generator", "provider": "sim"},
     "layer 1, component 1 (generator): missing required field 'model'"),
    (gen(samples=0), "layer 1, component 1 (generator): 'samples' must be >= 1"),
    (gen(samples=True), "layer 1, component 1 (generator): 'samples' must be an integer"),
    (gen(temperature=2.5), "layer 1, component 1 (generator): 'temperature' must be <= 2.0"),
    (gen(temperature=-0.1), "layer 1, component 1 (generator): 'temperature' must be >= 0.0"),
    (gen(max_tokens=0), "layer 1, component 1 (generator): 'max_tokens' must be >= 1"),
    (gen(model=""), "layer 1, component 1 (generator): 'model' must not be empty"),
    (gen(base_url="localhost:8000"), "(generator): 'base_url' must be an http:// or https://"),
])  # fmt: skip
def test_field_constraints(component: dict[str, Any], expected: str) -> None:
    assert expected in error_of(spec([component]))


def test_field_constraints_in_later_layers() -> None:
    assert "layer 2, component 1 (fuser): 'n_outputs' must be >= 1" in error_of(
        spec([gen()], [comp("fuser", n_outputs=0)])
    )
    assert "layer 2, component 1 (fuser): 'length' must be a word count >= 1 or 'longest'" in (
        error_of(spec([gen()], [comp("fuser", length="short")]))
    )
    assert "layer 2, component 1 (ranker): 'mode' must be one of 'listwise' or 'pairwise'" in (
        error_of(spec([gen()], [comp("ranker", top_k=1, mode="pairs")]))
    )
    assert "layer 1, component 2 (unit_test_generator): 'num_tests' must be >= 1" in error_of(
        spec([gen(), comp("unit_test_generator", num_tests=0)])
    )
    assert "layer 2, component 1 (code_tester): 'timeout_s' must be > 0.0" in error_of(
        spec([gen()], [{"technique": "code_tester", "timeout_s": 0, "top_k": 1}], tests="benchmark")
    )


def test_api_key_env_must_be_a_name_and_the_value_is_never_echoed() -> None:
    secret = "sk-live-0123456789abcdef"
    msg = error_of(spec([gen(samples=1, api_key_env=secret)]))
    assert "'api_key_env' must name an environment variable" in msg
    assert secret not in msg
    ok = parse_architecture(spec([gen(samples=1, api_key_env="TOGETHER_API_KEY")]))
    assert ok.layers[0][0].api_key_env == "TOGETHER_API_KEY"


def test_tool_needs_both_provider_and_model_or_neither() -> None:
    msg = error_of(spec([gen()], [{"technique": "majority_vote", "provider": "sim"}]))
    assert msg == (
        "arch.yaml: layer 2, component 1 (majority_vote): give both 'provider' "
        "and 'model', or neither"
    )


def test_several_field_errors_are_all_reported() -> None:
    msg = error_of(spec([gen(samples=0)], [comp("fuser", n_outputs=0)]))
    assert "layer 1, component 1 (generator): 'samples'" in msg
    assert "layer 2, component 1 (fuser): 'n_outputs'" in msg


# --- structure and flow rules -----------------------------------------------------------


def test_missing_name_and_layers() -> None:
    msg = error_of({})
    assert "arch.yaml: missing required field 'name'" in msg
    assert "arch.yaml: missing required field 'layers'" in msg


def test_empty_layers() -> None:
    assert error_of(spec()) == (
        "arch.yaml: 'layers' is empty; an architecture needs at least one layer"
    )
    assert error_of(spec([gen()], [])) == (
        "arch.yaml: layer 2 is empty; give it at least one component"
    )


def test_layer_and_component_shapes() -> None:
    assert error_of(spec([gen()], "fuser")) == "arch.yaml: layer 2: must be a list of components"
    assert error_of(spec([gen()], ["fuser"])) == (
        "arch.yaml: layer 2, component 1: must be a mapping of fields"
    )
    assert error_of({"name": "t", "layers": 3}) == "arch.yaml: 'layers' must be a list of layers"


@pytest.mark.parametrize("technique", [
    "critic", "ranker", "fuser", "verifier", "unit_test_evaluator", "majority_vote",
    "code_tester"])  # fmt: skip
def test_first_layer_must_not_need_candidates(technique: str) -> None:
    component: dict[str, Any] = {"technique": technique}
    if technique not in ("majority_vote", "code_tester"):
        component.update(provider="sim", model="m")
    if technique == "ranker":
        component["top_k"] = 1
    msg = error_of(spec([component], [gen(samples=1)], tests="benchmark"))
    assert msg.startswith(f"arch.yaml: layer 1, component 1 ({technique}): needs candidates")


def test_unit_tests_first_then_generator_is_valid() -> None:
    arch = parse_architecture(
        spec(
            [comp("unit_test_generator")], [gen(samples=4)], [comp("unit_test_evaluator", top_k=1)]
        )
    )
    assert [f.candidates_out for f in layer_flows(arch.layers)] == [(0, 0), (4, 4), (1, 1)]


def test_layer_of_only_tests_cannot_end_the_architecture() -> None:
    msg = error_of(spec([comp("unit_test_generator")]))
    assert msg.startswith("arch.yaml: layer 1: the final layer leaves no candidates")


def test_unit_test_evaluator_needs_tests_from_an_earlier_layer() -> None:
    msg = error_of(spec([gen()], [comp("unit_test_evaluator", top_k=1)]))
    assert msg.startswith("arch.yaml: layer 2, component 1 (unit_test_evaluator): needs unit tests")
    same_layer = error_of(
        spec([gen()], [comp("unit_test_generator"), comp("unit_test_evaluator", top_k=1)])
    )
    assert "layer 2, component 2 (unit_test_evaluator): needs unit tests" in same_layer
    earlier = parse_architecture(
        spec([gen(), comp("unit_test_generator")], [comp("unit_test_evaluator", top_k=1)])
    )
    assert earlier.layers[1][0].technique == "unit_test_evaluator"


def test_code_tester_needs_tests_unless_the_benchmark_ships_them() -> None:
    layers = ([gen()], [{"technique": "code_tester", "top_k": 1}])
    assert "layer 2, component 1 (code_tester): needs unit tests" in error_of(spec(*layers))
    assert parse_architecture(spec(*layers, tests="benchmark")).tests == "benchmark"


def test_top_k_larger_than_reachable_candidates() -> None:
    msg = error_of(spec([gen(samples=2), gen("weak", samples=1)], [comp("ranker", top_k=4)]))
    assert msg.splitlines()[0] == (
        "arch.yaml: layer 2, component 1 (ranker): 'top_k' is 4 but at most 3 "
        "candidate(s) can reach it"
    )
    assert "(unit_test_evaluator): 'top_k' is 9" in error_of(
        spec([gen(), comp("unit_test_generator")], [comp("unit_test_evaluator", top_k=9)])
    )


def test_final_layer_must_reduce_to_one_unless_final_first() -> None:
    msg = error_of(spec([gen(samples=3)]))
    assert msg.startswith(
        "arch.yaml: layer 1: the final layer can leave 3 candidates but "
        "'final: single' needs exactly one"
    )
    assert "'final: first'" in msg
    assert parse_architecture(spec([gen(samples=3)], final="first")).final == "first"
    assert "can leave 2 candidates" in error_of(spec([gen()], [comp("fuser", n_outputs=2)]))
    for reducer in (comp("ranker", top_k=1), comp("fuser"), {"technique": "majority_vote"}):
        assert parse_architecture(spec([gen()], [reducer])).final == "single"


def test_verifier_can_leave_several_so_final_single_rejects_it() -> None:
    msg = error_of(spec([gen(samples=4)], [comp("verifier", top_k=2)]))
    assert "layer 2: the final layer can leave 2 candidates" in msg
    assert parse_architecture(spec([gen(samples=4)], [comp("verifier", top_k=1)]))


def test_critic_cannot_share_a_layer_with_a_producer() -> None:
    msg = error_of(spec([gen()], [comp("critic"), comp("fuser")]))
    assert msg.startswith("arch.yaml: layer 2, component 1 (critic): a critic annotates")
    assert "fuser" in msg
    assert parse_architecture(spec([gen()], [comp("critic"), comp("critic")], [comp("fuser")]))


def test_flow_rules_apply_to_directly_built_specs_too() -> None:
    with pytest.raises(ConfigError, match="<dict>: layer 1, component 1 \\(critic\\)"):
        Architecture(name="t", layers=((comp("critic"),),))  # type: ignore[arg-type]


# --- flow analysis and call plan --------------------------------------------------------


def test_candidate_ranges_through_a_verifier() -> None:
    arch = parse_architecture(
        spec(
            [gen(samples=4)],
            [comp("verifier", top_k=3)],
            [comp("critic")],
            [comp("ranker", top_k=2)],
            [comp("fuser")],
        )
    )
    flows = list(layer_flows(arch.layers))
    assert [f.candidates_in for f in flows] == [(0, 0), (4, 4), (1, 3), (1, 3), (1, 2)]
    assert [f.candidates_out for f in flows] == [(4, 4), (1, 3), (1, 3), (1, 2), (1, 1)]
    # a ranker given a single candidate keeps it without a call
    assert [f.calls for f in flows] == [(4, 4), (4, 4), (1, 3), (0, 1), (1, 1)]


def test_plan_layer_counts_calls_per_technique() -> None:
    layer = parse_architecture(
        spec(
            [gen(samples=5)],
            [
                comp("ranker", top_k=1, mode="pairwise"),
                comp("ranker", top_k=2),
                comp("fuser", n_outputs=3),
                comp("verifier"),
                comp("unit_test_evaluator", top_k=1),
                {"technique": "majority_vote"},
                {"technique": "code_tester"},
            ],
            final="first",
            tests="benchmark",
        )
    ).layers[1]
    plan = plan_layer(layer, 5)
    # pairwise 5*4/2, listwise 1, fuser n_outputs, verifier 5, evaluator 5, tools 0
    assert [c.calls for c in plan.components] == [10, 1, 3, 5, 5, 0, 0]
    assert [c.executions for c in plan.components] == [0, 0, 0, 0, 0, 0, 5]
    assert (plan.calls, plan.executions) == (24, 5)
    # ranker 1 + ranker 2 + fuser 3 + verifier 1..5 + evaluator 1 + vote 1 + tester 5
    assert plan.candidates_out == (14, 18)
    assert plan.components[0].service == "ranker@sim:judge"


def test_plan_layer_without_producers_passes_candidates_on() -> None:
    layer = parse_architecture(
        spec([gen()], [comp("critic"), comp("unit_test_generator")], [comp("fuser")])
    ).layers[1]
    plan = plan_layer(layer, 7)
    assert plan.candidates_out == (7, 7)
    assert [c.calls for c in plan.components] == [7, 1]


# --- cost estimate ----------------------------------------------------------------------
# The hand computations use parse_retries: 0 (re-asks are checked on their own below) and a
# conversation of 10 tokens: a prompt is INSTRUCTION_TOKENS + 10 before what it shows.

OVERHEAD = INSTRUCTION_TOKENS + 10


def exact(*layers: list[dict[str, Any]], **top: Any) -> Architecture:
    return parse_architecture(spec(*[[{**c, "parse_retries": 0} if "provider" in c else c
                                      for c in layer] for layer in layers], **top))


def test_cost_estimate_matches_hand_computation() -> None:
    arch = exact(
        [gen(samples=2, max_tokens=100), gen("weak", samples=1, max_tokens=50)],
        [comp("critic", max_tokens=80)],
        [comp("ranker", top_k=2, max_tokens=20)],
        [comp("fuser", max_tokens=200)],
    )
    cost = estimate_cost(arch, conversation_tokens=10)
    # layer 1: 3 calls, prompts 3*10 (the conversation alone), completions 2*100 + 50
    # layer 2: 3 critic calls, prompts 3*(overhead+100), completions 3*80 -> critiques <= 80
    # layer 3: 1 listwise call, prompt overhead + 3*(100+80), completion 20
    # layer 4: 1 fuser call, prompt overhead + 2*(100+80), completion 200
    assert [(c.calls, c.prompt_tokens, c.completion_tokens) for c in cost.per_layer] == [
        (3, 30, 250),
        (3, 3 * (OVERHEAD + 100), 240),
        (1, OVERHEAD + 540, 20),
        (1, OVERHEAD + 360, 200),
    ]
    assert cost.calls_per_query == cost.base_calls_per_query == cost.min_calls_per_query == 8
    assert cost.max_tokens_per_query == sum(c.prompt_tokens + c.completion_tokens
                                            for c in cost.per_layer)
    assert cost.executions_per_query == 0
    assert [c.candidates for c in cost.per_layer] == [(3, 3), (3, 3), (2, 2), (1, 1)]


def test_re_asks_multiply_calls_and_add_their_prompts() -> None:
    layers = ([gen(samples=2, max_tokens=100)], [comp("fuser", max_tokens=200)])
    plain = estimate_cost(exact(*layers), conversation_tokens=10)
    retried = estimate_cost(parse_architecture(spec(
        [gen(samples=2, max_tokens=100, parse_retries=2)],
        [comp("fuser", max_tokens=200, parse_retries=1)])), conversation_tokens=10)
    assert (retried.base_calls_per_query, retried.calls_per_query) == (3, 2 * 3 + 1 * 2)
    # a re-ask's prompt: the prompt, the output it complains about, the re-ask message
    generator_reask = 10 + 100 + REASK_TOKENS + 100
    fuser_reask = (OVERHEAD + 200) + 200 + REASK_TOKENS + 200
    assert retried.max_tokens_per_query == plain.max_tokens_per_query + 4 * generator_reask \
        + fuser_reask


def test_cost_estimate_pairwise_tests_and_fresh_candidates() -> None:
    arch = exact(
        [gen(samples=4, max_tokens=100), comp("unit_test_generator", max_tokens=60)],
        [comp("critic", max_tokens=30)],
        [comp("fuser", n_outputs=2, max_tokens=300)],
        [comp("ranker", top_k=1, mode="pairwise", max_tokens=5)],
    )
    cost = estimate_cost(arch, conversation_tokens=10)
    # layer 1: 4 + 1 calls, prompts 4*10 + overhead, completions 400 + 60
    # layer 2: 4 critic calls; the critic sees the 60 tokens of tests in the query
    # layer 3: 2 fuser calls over 4 candidates with critiques (and the tests)
    # layer 4: fused candidates are fresh (300 tokens, no critiques); 2 candidates -> 1 pair
    assert [(c.calls, c.prompt_tokens, c.completion_tokens) for c in cost.per_layer] == [
        (5, 40 + OVERHEAD, 460),
        (4, 4 * (OVERHEAD + 60 + 100), 120),
        (2, 2 * (OVERHEAD + 60 + 4 * 130), 600),
        (1, OVERHEAD + 60 + 2 * 300, 5),
    ]
    assert cost.calls_per_query == 12


def test_cost_estimate_with_benchmark_tests_and_code_execution() -> None:
    arch = exact(
        [gen(samples=3, max_tokens=100)],
        [comp("unit_test_evaluator", max_tokens=40)],
        [{"technique": "code_tester", "top_k": 1}],
        tests="benchmark",
    )
    cost = estimate_cost(arch, conversation_tokens=10, benchmark_test_tokens=70)
    # the generators see the benchmark's tests in no prompt of theirs (they are not generated),
    # but the bound counts them for every component that shows tests; evaluator: 3 calls,
    # each overhead + 100 + the tests listed and in the query
    assert [(c.calls, c.executions) for c in cost.per_layer] == [(3, 0), (3, 0), (0, 3)]
    assert cost.per_layer[1].prompt_tokens == 3 * (OVERHEAD + 100 + 2 * 70)
    assert cost.executions_per_query == 3


def test_cost_estimate_min_and_max_calls_differ_after_a_verifier() -> None:
    arch = exact([gen(samples=4)], [comp("verifier", top_k=3)], [comp("critic")],
                 [comp("fuser")])
    cost = estimate_cost(arch)
    assert (cost.min_calls_per_query, cost.calls_per_query) == (4 + 4 + 1 + 1, 4 + 4 + 3 + 1)


def test_early_stops_lower_the_least_calls_not_the_bound() -> None:
    arch = exact([gen(samples=5)], [comp("verifier", first_k=1)],
                 [comp("ranker", top_k=1)])
    cost = estimate_cost(arch)
    # the verifier may stop after the first candidate passes: 1 call; at most 5
    # and it leaves one candidate, which the ranker keeps without a call
    assert (cost.min_calls_per_query, cost.calls_per_query) == (5 + 1, 5 + 5)


# --- loading, round trip, immutability --------------------------------------------------


def test_round_trip_through_dict_yaml_and_json(tmp_path: Path) -> None:
    arch = load_architecture(CONFIGS / "sim_gcrf.yaml")
    assert parse_architecture(arch.to_dict()) == arch
    for suffix in (".yaml", ".json"):
        path = tmp_path / f"copy{suffix}"
        arch.dump(path)
        assert load_architecture(path) == arch
    assert json.loads((tmp_path / "copy.json").read_text())["layers"][3][0]["technique"] == (
        "fuser"
    )
    with pytest.raises(ConfigError, match=r"copy\.txt: write architectures as"):
        arch.dump(tmp_path / "copy.txt")


def test_to_dict_keeps_explicit_values_and_drops_unset_options() -> None:
    data = parse_architecture(spec([gen(samples=2)], [comp("fuser")])).to_dict()
    assert data["layers"][0][0] == {
        "technique": "generator",
        "provider": "sim",
        "model": "strong",
        "temperature": 0.7,
        "max_tokens": 512,
        "parse_retries": 2,
        "tests_in_prompt": True,
        "samples": 2,
    }
    assert "length" not in data["layers"][1][0] and "description" not in data


def test_specs_are_frozen_and_hashable() -> None:
    arch = load_architecture(CONFIGS / "sim_single.yaml")
    with pytest.raises(pydantic.ValidationError):
        arch.name = "other"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        arch.layers[0][0].samples = 9  # type: ignore[union-attr,misc]
    assert len({arch, load_architecture(CONFIGS / "sim_single.yaml")}) == 1
    assert isinstance(arch.layers[0][0], GeneratorSpec)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml: cannot read architecture file"):
        load_architecture(missing)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_architecture(bad_yaml)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{name: 1}")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        load_architecture(bad_json)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: an architecture must be a mapping, not list"):
        load_architecture(listed)
    with pytest.raises(ConfigError, match="arch.txt: architecture files end in"):
        load_architecture(tmp_path / "arch.txt")


def test_validation_errors_in_files_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "arch.yaml"
    path.write_text(
        "name: t\nlayers:\n  - - {technique: generator, provider: sim, model: s}\n"
        "  - - {technique: ranker, provider: sim, model: s, top_k: 0}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_architecture(path)
    assert str(info.value) == f"{path}: layer 2, component 1 (ranker): 'top_k' must be >= 1"


def test_describe_summarizes_layers_and_totals() -> None:
    arch = load_architecture(CONFIGS / "sim_gvf.yaml")
    text = describe(arch, estimate_cost(arch, conversation_tokens=10))
    lines = text.splitlines()
    assert lines[0] == "sim_gvf: 3 layer(s), final answer: single"
    # 4 samples of up to 512 tokens from a 10-token conversation, 2 re-asks each allowed:
    # 4 * (10 + 512) + 8 * (10 + 512 + REASK_TOKENS + 512)
    assert lines[1] == (
        "  layer 1: generator@sim:medium, generator@sim:weak; candidates after 4..4; "
        f"calls 4..12 (4 if every output parses); tokens <= {4 * 522 + 8 * (1034 + REASK_TOKENS)}"
    )
    verify = OVERHEAD + 512  # one candidate shown
    assert lines[2].endswith(
        "candidates after 1..4; calls 4..12 (4 if every output parses); tokens <= "
        f"{4 * (verify + 512) + 8 * (verify + 1024 + REASK_TOKENS)}")
    fuse = OVERHEAD + 4 * 512
    assert lines[3].endswith(
        "candidates after 1..1; calls 1..3 (1 if every output parses); tokens <= "
        f"{fuse + 512 + 2 * (fuse + 1024 + REASK_TOKENS)}")
    assert lines[4].startswith("  per query: calls 9..27 (9 if every output parses")
    assert lines[4].endswith("(for a conversation of up to 10 tokens)")


def test_describe_shows_warnings() -> None:
    arch = parse_architecture(spec([gen(samples=2), comp("unit_test_generator")],
                                   [{"technique": "majority_vote"}]))
    assert "tests it writes are never used" in arch.warnings[0]
    assert describe(arch).splitlines()[-1].startswith("  warning: <dict>: layer 1, component 2")
