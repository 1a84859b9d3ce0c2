"""Archon's own config JSON: detection, mapping to itas specs, warnings, errors that name the
place, and call plans that match the calls Archon's own code makes.

``archon_calls`` below restates, from Archon's source (ScalingIntelligence/Archon,
``src/archon/completions/components/*.py``), how many LLM calls each component makes for n
incoming candidates; the itas plan of the same config must agree layer by layer. When the
Archon repository snapshot is on this machine (``ARCHON_CONFIGS``, or the fetched mirror), every
config in it is loaded too.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from itas.archon import (
    GROQ_BASE_URL,
    MODEL_TYPES,
    TOGETHER_BASE_URL,
    VLLM_DEFAULT_URL,
    is_archon_config,
)
from itas.errors import ConfigError
from itas.plan import estimate_cost, plan_layer
from itas.spec import load_architecture, parse_architecture

ARCHON = Path(__file__).parents[1] / "configs" / "archon"
ARCHON_MIRROR = Path("/work/.mirror/ScalingIntelligence+Archon/repo")
SRC = "archon.json"


def acomp(kind: str, model_type: str = "sim", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "model": "strong", "model_type": model_type, "temperature": 0.7,
            "max_tokens": 512, **extra}


def aconfig(*layers: Any, **top: Any) -> dict[str, Any]:
    return {"name": "archon-test", "layers": list(layers), **top}


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_architecture(data, SRC)
    return str(info.value)


# -- Archon's call counts, restated from its source ------------------------------------------

def archon_calls(component: dict[str, Any], n: int) -> tuple[int, int]:
    """(fewest, most) LLM calls Archon makes for one component given n candidates.

    Generator.generate_from_messages loops ``samples`` times; Critic makes one call for all
    candidates; an LLM Ranker one call; Fuser ``samples`` calls; Verifier two per candidate
    (generate_reasoning, then verify_query_reasoning_pairs), in order, returning once
    ``first_k`` passed; Unit_Test_Generator one; Unit_Test_Evaluator one per candidate, in
    order, returning once ``first_k`` (``first_pass``: 1) passed every test.
    """
    kind = component["type"]
    samples = component.get("samples") or 1
    first_k = component.get("first_k") or (1 if component.get("first_pass") else None)
    if kind in ("generator", "fuser"):
        return samples, samples
    if kind in ("critic", "ranker", "unit_test_generator"):
        return 1, 1
    per = 2 if kind == "verifier" else 1
    least = per * min(first_k, n) if first_k else per * n
    return least, per * n


def components_of(layer: Any) -> list[dict[str, Any]]:
    return layer["models"] if isinstance(layer, dict) else layer


def assert_plans_match_archon(raw: dict[str, Any], arch: Any) -> None:
    """Layer by layer, for the candidate counts the itas plan says arrive."""
    n_lo = n_hi = 0
    for raw_layer, layer in zip(raw["layers"], arch.layers, strict=True):
        for n in sorted({n_lo, n_hi}):
            if n == 1 and any(c["type"] == "ranker" for c in components_of(raw_layer)):
                continue  # itas keeps a single candidate without asking a ranker (documented)
            plan = plan_layer(layer, n)
            expected = [archon_calls(c, n) for c in components_of(raw_layer)]
            got = [(c.min_calls, c.calls) for c in plan.components]
            assert got == expected, (raw["name"], n, components_of(raw_layer))
        least, most = plan_layer(layer, n_lo), plan_layer(layer, n_hi)
        n_lo, n_hi = least.candidates_out[0], most.candidates_out[1]


# -- the configs shipped in this repository ---------------------------------------------------

@pytest.mark.parametrize("path", sorted(ARCHON.glob("*.json")), ids=lambda p: p.name)
def test_every_archon_example_loads_and_plans_as_archon_runs(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert is_archon_config(raw)
    arch = load_architecture(path)
    assert arch.name == raw["name"]
    assert arch.final == "first"
    assert estimate_cost(arch).calls_per_query >= 1
    assert_plans_match_archon(raw, arch)


def test_gcrf_costs_what_archon_costs() -> None:
    """5 generators -> critic -> ranker -> fuser: Archon makes 8 calls (one critic call for
    all candidates), not 12."""
    raw = aconfig([acomp("generator", samples=1) for _ in range(5)], [acomp("critic")],
                  [acomp("ranker", top_k=3)], [acomp("fuser")])
    cost = estimate_cost(parse_architecture(raw, SRC))
    assert (cost.min_calls_per_query, cost.base_calls_per_query) == (8, 8)


def test_a_thousand_samples_then_early_stopping_evaluator_costs_what_archon_costs() -> None:
    raw = aconfig([acomp("unit_test_generator", unit_test_cap=5)],
                  [acomp("generator", samples=1000)],
                  [acomp("unit_test_evaluator", remove_unit_tests_from_prompt=True, top_k=1,
                         first_pass=True)])
    cost = estimate_cost(parse_architecture(raw, SRC))
    assert cost.min_calls_per_query == 1 + 1000 + 1  # stops at the first full pass
    assert cost.base_calls_per_query == 1 + 1000 + 1000


# -- every model_type, every key, both layer forms -------------------------------------------

#: Keys Archon's components read, per type (from their __init__/initialize_* methods).
READ = {
    "generator": {"samples": 2, "no_system": False},
    "critic": {"samples": 1},
    "ranker": {"top_k": 2, "use_critiques": True, "samples": 1, "ranker_batch_size": 8},
    "fuser": {"samples": 1, "length_control": True},
    "verifier": {"samples": 1, "first_k": 1},
    "unit_test_generator": {"samples": 1, "unit_test_cap": 3},
    "unit_test_evaluator": {"samples": 1, "unit_test_cap": 3, "top_k": 1, "first_k": 1,
                            "first_pass": True, "remove_unit_tests_from_prompt": True},
}
#: Keys found in Archon's shipped configs that its code never reads for that type.
NEVER_READ = {"generator": ["top_k", "checkpoint"], "critic": ["top_k", "ranker_batch_size"],
              "fuser": ["top_k", "checkpoint", "top_k_generations", "fuse_generations_count",
                        "ranker_config", "length_contorl", "remove_unit_tests_from_prompt"],
              "verifier": ["batch_num", "checkpoint"]}


def covering_config(model_type: str, *, old_form: bool) -> dict[str, Any]:
    def comp(kind: str) -> dict[str, Any]:
        extra = {**READ[kind], **{k: 1 for k in NEVER_READ.get(kind, [])}}
        if kind == "fuser":
            extra["ranker_config"] = {"type": "ranker"}
        return acomp(kind, model_type, **extra)

    layers: list[Any] = [
        [comp("unit_test_generator"), comp("generator"), comp("generator")],
        [comp("critic")],
        [comp("ranker")],
        [comp("unit_test_evaluator")],
        [comp("verifier")],
        [comp("fuser")],
    ]
    if old_form:
        layers = [{"models": layer, "branches": 1} for layer in layers]
    return aconfig(*layers)


@pytest.mark.parametrize("old_form", [False, True], ids=["list_layers", "models_layers"])
@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES))
def test_every_model_type_and_every_key_loads(model_type: str, old_form: bool) -> None:
    raw = covering_config(model_type, old_form=old_form)
    try:
        arch = parse_architecture(raw, SRC)
    except ConfigError as exc:  # gemini/bedrock until their providers are installed
        if "unknown provider" not in str(exc):
            raise
        pytest.skip(f"{model_type}: its provider is not in this build ({exc})")
    [warning] = arch.warnings
    for kind, keys in NEVER_READ.items():
        for key in keys:
            assert f"'{key}'" in warning and kind in warning
    assert "'no_system'" in warning and "keeps the system message" in warning
    for read in ("'samples'", "'first_pass'", "'unit_test_cap'"):
        assert f"{read} (layer 1, component 1, unit_test_generator)" not in warning
    assert_plans_match_archon(raw, arch)
    provider = MODEL_TYPES[model_type]["provider"]
    assert {c.provider for _, _, c in arch.components()} == {provider}


def test_archon_call_patterns_are_the_default_for_archon_configs() -> None:
    arch = parse_architecture(covering_config("sim", old_form=False), SRC)
    by_kind = {c.technique: c for _, _, c in arch.components()}
    assert by_kind["critic"].batched is True
    assert by_kind["verifier"].two_step is True and by_kind["verifier"].first_k == 1
    assert by_kind["unit_test_evaluator"].first_k == 1
    assert by_kind["unit_test_evaluator"].tests_in_prompt is False  # remove_unit_tests...
    assert by_kind["ranker"].use_critiques is True
    assert by_kind["fuser"].length == "longest"
    plain = parse_architecture(aconfig([acomp("generator", samples=3)],
                                       [acomp("ranker", top_k=1)]), SRC)
    assert plain.layers[1][0].use_critiques is False  # Archon's ranker default


def test_itas_options_in_archon_form_are_ignored_like_any_key_archon_does_not_read() -> None:
    """An Archon file runs as Archon runs it; itas options belong in itas form (``itas check``
    shows the converted spec, which takes them)."""
    arch = parse_architecture(aconfig([acomp("generator", samples=3)],
                                      [acomp("critic", batched=False)],
                                      [acomp("fuser")]), SRC)
    assert arch.layers[1][0].batched is True
    assert "'batched' (layer 2, component 1, critic)" in arch.warnings[0]


def test_together_example_maps_to_openai_compatible_endpoint() -> None:
    arch = load_architecture(ARCHON / "gcrf_together.json")
    techniques = [[c.technique for c in layer] for layer in arch.layers]
    assert techniques == [["generator"] * 3, ["critic"], ["ranker"], ["fuser"]]
    for _, _, c in arch.components():
        assert (c.provider, c.base_url, c.api_key_env) == (
            "openai", TOGETHER_BASE_URL, "TOGETHER_API_KEY")
    assert arch.layers[0][0].service_name.startswith(
        "generator@openai:Qwen/Qwen2-72B-Instruct#api.together.xyz-")
    assert arch.layers[2][0].top_k == 2


@pytest.mark.parametrize(("model_type", "provider", "base_url", "key_env"), [
    ("OpenAI_API", "openai", None, None),
    ("Anthropic_API", "anthropic", None, None),
    ("Together_API", "openai", TOGETHER_BASE_URL, "TOGETHER_API_KEY"),
    ("Groq_API", "openai", GROQ_BASE_URL, "GROQ_API_KEY"),
    ("vLLM", "openai", VLLM_DEFAULT_URL, None),
    ("sim", "sim", None, None),
    ("local", "local", None, None),
])  # fmt: skip
def test_model_type_mapping(model_type: str, provider: str, base_url: str | None,
                            key_env: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_BASE_URL", raising=False)
    c = parse_architecture(aconfig([acomp("generator", model_type)])).layers[0][0]
    assert (c.provider, c.base_url, c.api_key_env) == (provider, base_url, key_env)


def test_vllm_base_url_from_the_component_or_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:9001/v1"
    c = parse_architecture(aconfig([acomp("generator", "vLLM", base_url=url)])).layers[0][0]
    assert c.base_url == url
    monkeypatch.setenv("VLLM_BASE_URL", "http://10.0.0.5:8000/v1")
    c = parse_architecture(aconfig([acomp("generator", "vLLM")])).layers[0][0]
    assert c.base_url == "http://10.0.0.5:8000/v1"


def test_older_layer_form_and_unit_test_renames() -> None:
    arch = load_architecture(ARCHON / "unit_tests_sim.json")
    utg, generator, evaluator, verifier = (layer[0] for layer in arch.layers)
    assert utg.technique == "unit_test_generator" and utg.num_tests == 5
    assert generator.samples == 5
    assert (evaluator.top_k, evaluator.first_k) == (1, 3)
    assert verifier.first_k == 1 and verifier.two_step


def test_fuser_samples_become_outputs_and_length_control_false_is_dropped() -> None:
    arch = parse_architecture(
        aconfig([acomp("generator", samples=2)], [acomp("fuser", samples=2, length_control=False)])
    )
    fuser = arch.layers[1][0]
    assert (fuser.n_outputs, fuser.length) == (2, None)
    assert "'length_control' must be true or false" in error_of(
        aconfig([acomp("generator")], [acomp("fuser", length_control="yes")]))


# -- errors: all at once, each naming the place -------------------------------------------------

def test_all_errors_are_reported_at_once() -> None:
    msg = error_of(aconfig([acomp("generator", "Groq"), acomp("generatr")],
                           [acomp("ranker", model="llm-blender/PairRM", top_k=1)]))
    lines = msg.splitlines()
    assert lines == [
        ("archon.json: layer 1, component 1 (generator): unknown model_type 'Groq' (did you "
        f"mean 'Groq_API'?); known model types: {', '.join(MODEL_TYPES)}"),
        ("archon.json: layer 1, component 2: unknown Archon type 'generatr' (did you mean "
        "'generator'?); Archon types: generator, critic, ranker, fuser, verifier, "
        "unit_test_generator, unit_test_evaluator"),
        ("archon.json: layer 2, component 1 (ranker): the reward-model ranker "
        "'llm-blender/PairRM' is not supported: use an LLM ranker (any chat model as 'model')"),
    ]


def test_value_errors_after_mapping_are_all_reported_with_their_place() -> None:
    msg = error_of(aconfig([acomp("generator", temperature=9, max_tokens=0)],
                           [acomp("ranker", top_k=0)]))
    assert "layer 1, component 1 (generator): 'temperature' must be <= 2.0" in msg
    assert "layer 1, component 1 (generator): 'max_tokens' must be >= 1" in msg
    assert "layer 2, component 1 (ranker): 'top_k' must be >= 1" in msg


def test_missing_model_type_and_missing_type() -> None:
    no_model_type = acomp("generator")
    del no_model_type["model_type"]
    assert error_of(aconfig([no_model_type])).startswith(
        "archon.json: layer 1, component 1 (generator): missing 'model_type'")
    no_type = acomp("generator")
    del no_type["type"]
    assert error_of(aconfig([acomp("generator")], [no_type])).startswith(
        "archon.json: layer 2, component 1: missing 'type'")


def test_malformed_layers_and_top_level() -> None:
    assert error_of(aconfig([acomp("generator")], {"models": "x"})).startswith(
        "archon.json: layer 2: must be a list of components")
    assert error_of(aconfig([acomp("generator")], ["fuser"])) == (
        "archon.json: layer 2, component 1: must be an object with 'type', 'model' and "
        "'model_type'")
    assert error_of(aconfig([acomp("generator")], custom=True)).startswith(
        "archon.json: Archon custom components")
    arch = parse_architecture({"name": "x", "layers": [[acomp("generator")]], "layer": []}, SRC)
    assert "'layer'" in arch.warnings[0]


def test_archon_files_pass_the_same_flow_rules() -> None:
    msg = error_of(aconfig([acomp("critic")], [acomp("generator")]))
    assert msg.startswith("archon.json: layer 1, component 1 (critic): needs candidates")
    msg = error_of(aconfig([acomp("generator", samples=2)], [acomp("ranker", top_k=5)]))
    assert "layer 2, component 1 (ranker): 'top_k' is 5 but at most 2" in msg
    no_model = acomp("generator")
    del no_model["model"]
    assert error_of(aconfig([no_model])) == (
        "archon.json: layer 1, component 1 (generator): missing required field 'model'")


def test_mixing_itas_and_archon_components_is_an_error() -> None:
    itas_component = {"technique": "fuser", "provider": "sim", "model": "strong"}
    msg = error_of(aconfig([acomp("generator")], [itas_component]))
    assert "layer 2, component 1: missing 'type' (do not mix itas 'technique'" in msg


def test_detection() -> None:
    assert is_archon_config(aconfig([acomp("generator")]))
    assert is_archon_config(aconfig({"models": [acomp("generator")]}))
    assert not is_archon_config({"name": "x", "layers": [[{"technique": "generator"}]]})
    assert not is_archon_config({"name": "x", "layers": "nope"})


def test_converted_archon_spec_round_trips_as_itas(tmp_path: Path) -> None:
    arch = load_architecture(ARCHON / "gcrf_together.json")
    path = tmp_path / "converted.yaml"
    arch.dump(path)
    again = load_architecture(path)
    assert again == arch
    assert not is_archon_config(again.to_dict())


# -- Archon's own repository, when it is on this machine --------------------------------------

def archon_repo_configs() -> list[tuple[str, str]]:
    """(path, text) of every config in Archon's repository snapshot, if one is here."""
    where = os.environ.get("ARCHON_CONFIGS")
    if where:
        return [(str(p), p.read_text()) for p in sorted(Path(where).rglob("*.json"))]
    if not ARCHON_MIRROR.is_dir():
        return []
    listing = subprocess.run(
        ["git", "--git-dir", str(ARCHON_MIRROR), "ls-tree", "-r", "--name-only", "HEAD",
         "src/archon/configs"], capture_output=True, text=True, check=False).stdout.split()
    out = []
    for name in listing:
        if name.endswith(".json"):
            shown = subprocess.run(["git", "--git-dir", str(ARCHON_MIRROR), "show",
                                    f"HEAD:{name}"], capture_output=True, text=True, check=False)
            if shown.returncode == 0:
                out.append((name, shown.stdout))
    return out


def test_every_config_of_archons_repository_that_archon_runs_loads() -> None:
    configs = archon_repo_configs()
    if not configs:
        pytest.skip("no Archon repository snapshot here (set ARCHON_CONFIGS to its "
                    "src/archon/configs folder)")
    loaded = provider_pending = 0
    refused: dict[str, int] = {}
    # What Archon cannot run either: invalid JSON; a fuser in the first layer (Fuser.fuse
    # asserts it has candidates); a layer given as a bare component (Layer reads
    # config["models"]). What itas refuses on purpose: the PairRM reward-model ranker.
    expected = {"reward-model ranker": "pairrm", "needs candidates": "fuser_first",
                "a single component, not a layer": "bare_component"}
    for name, text in configs:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            refused["json"] = refused.get("json", 0) + 1
            continue
        try:
            arch = parse_architecture(raw, name)
        except ConfigError as exc:
            message = str(exc)
            if "unknown provider" in message and ("gemini" in message or "bedrock" in message):
                provider_pending += 1  # their providers are not in this build
                continue
            kind = next((v for k, v in expected.items() if k in message), None)
            if kind is None:
                raise
            refused[kind] = refused.get(kind, 0) + 1
            continue
        assert_plans_match_archon(raw, arch)
        loaded += 1
    assert loaded + provider_pending >= 280, (loaded, provider_pending, refused)
    assert sum(refused.values()) <= 12, refused
