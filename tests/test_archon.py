"""Archon's own config JSON: detection, mapping to itas specs, and errors that name the place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from itas.archon import (
    GROQ_BASE_URL,
    MODEL_TYPES,
    TOGETHER_BASE_URL,
    VLLM_BASE_URL,
    is_archon_config,
)
from itas.errors import ConfigError
from itas.plan import estimate_cost
from itas.spec import load_architecture, parse_architecture

ARCHON = Path(__file__).parents[1] / "configs" / "archon"
SRC = "archon.json"


def acomp(kind: str, model_type: str = "OpenAI_API", **extra: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "model": "gpt-4o-mini",
        "model_type": model_type,
        "temperature": 0.7,
        "max_tokens": 2048,
        **extra,
    }


def aconfig(*layers: Any, **top: Any) -> dict[str, Any]:
    return {"name": "archon-test", "layers": list(layers), **top}


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_architecture(data, SRC)
    return str(info.value)


@pytest.mark.parametrize("path", sorted(ARCHON.glob("*.json")), ids=lambda p: p.name)
def test_every_archon_example_loads(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert is_archon_config(raw)
    arch = load_architecture(path)
    assert arch.name == raw["name"]
    assert arch.final == "first"
    assert estimate_cost(arch).calls_per_query >= 1


def test_sim_examples_use_sim_models() -> None:
    sims = sorted(ARCHON.glob("*_sim.json"))
    assert len(sims) >= 2
    for path in sims:
        providers = {c.provider for _, _, c in load_architecture(path).components()}
        assert providers == {"sim"}


def test_together_example_maps_to_openai_compatible_endpoint() -> None:
    arch = load_architecture(ARCHON / "gcrf_together.json")
    techniques = [[c.technique for c in layer] for layer in arch.layers]
    assert techniques == [["generator"] * 3, ["critic"], ["ranker"], ["fuser"]]
    for _, _, c in arch.components():
        assert (c.provider, c.base_url, c.api_key_env) == (
            "openai",
            TOGETHER_BASE_URL,
            "TOGETHER_API_KEY",
        )
    assert arch.layers[0][0].service_name == "generator@openai:Qwen/Qwen2-72B-Instruct"
    assert arch.layers[2][0].top_k == 2


def test_gcrf_mapping_keeps_parameters_and_drops_archon_only_knobs() -> None:
    arch = parse_architecture(
        aconfig(
            [acomp("generator", top_k=1, samples=3, no_system=True)],
            [acomp("critic", samples=1)],
            [acomp("ranker", top_k=2, use_critiques=True, ranker_batch_size=16, samples=1)],
            [acomp("fuser", samples=1, length_control=True, top_k=1)],
        ),
        SRC,
    )
    assert arch.to_dict() == {
        "name": "archon-test", "final": "first",
        "layers": [
            [{"technique": "generator", "provider": "openai", "model": "gpt-4o-mini",
              "temperature": 0.7, "max_tokens": 2048, "samples": 3}],
            [{"technique": "critic", "provider": "openai", "model": "gpt-4o-mini",
              "temperature": 0.7, "max_tokens": 2048}],
            [{"technique": "ranker", "provider": "openai", "model": "gpt-4o-mini",
              "temperature": 0.7, "max_tokens": 2048, "top_k": 2, "mode": "listwise"}],
            [{"technique": "fuser", "provider": "openai", "model": "gpt-4o-mini",
              "temperature": 0.7, "max_tokens": 2048, "n_outputs": 1, "length": "longest"}],
        ],
    }  # fmt: skip


def test_older_layer_form_and_unit_test_renames() -> None:
    arch = load_architecture(ARCHON / "unit_tests_sim.json")
    utg, generator, evaluator, verifier = (layer[0] for layer in arch.layers)
    assert utg.technique == "unit_test_generator" and utg.num_tests == 5
    assert generator.samples == 5
    assert evaluator.top_k == 1  # Archon's first_k early stop is dropped
    assert verifier.top_k == 1  # Archon's verifier first_k


def test_fuser_samples_become_outputs_and_length_control_false_is_dropped() -> None:
    arch = parse_architecture(
        aconfig([acomp("generator", samples=2)], [acomp("fuser", samples=2, length_control=False)])
    )
    fuser = arch.layers[1][0]
    assert (fuser.n_outputs, fuser.length) == (2, None)
    assert "length_control" in error_of(
        aconfig([acomp("generator")], [acomp("fuser", length_control="yes")])
    )


@pytest.mark.parametrize(("model_type", "provider", "base_url", "key_env"), [
    ("OpenAI_API", "openai", None, None),
    ("Anthropic_API", "anthropic", None, None),
    ("Together_API", "openai", TOGETHER_BASE_URL, "TOGETHER_API_KEY"),
    ("Groq_API", "openai", GROQ_BASE_URL, "GROQ_API_KEY"),
    ("vLLM", "openai", VLLM_BASE_URL, None),
    ("sim", "sim", None, None),
    ("local", "local", None, None),
])  # fmt: skip
def test_model_type_mapping(
    model_type: str, provider: str, base_url: str | None, key_env: str | None
) -> None:
    c = parse_architecture(aconfig([acomp("generator", model_type)])).layers[0][0]
    assert (c.provider, c.base_url, c.api_key_env) == (provider, base_url, key_env)
    assert set(MODEL_TYPES) == {
        "OpenAI_API",
        "Anthropic_API",
        "Together_API",
        "Groq_API",
        "vLLM",
        "sim",
        "local",
    }


def test_vllm_base_url_comes_from_the_component() -> None:
    url = "http://127.0.0.1:9001/v1"
    c = parse_architecture(aconfig([acomp("generator", "vLLM", base_url=url)])).layers[0][0]
    assert c.base_url == url


def test_unknown_model_type_names_file_layer_and_component() -> None:
    msg = error_of(aconfig([acomp("generator")], [acomp("ranker", "Groq", top_k=1)]))
    assert msg == (
        "archon.json: layer 2, component 1 (ranker): unknown model_type 'Groq' "
        "(did you mean 'Groq_API'?); known model types: OpenAI_API, Anthropic_API, "
        "Together_API, Groq_API, vLLM, sim, local"
    )
    # Archon's PairRM ranker is not an LLM behind an API; itas has no counterpart for it.
    pairrm = acomp("ranker", "", model="llm-blender/PairRM", top_k=1, ranker_batch_size=16)
    assert "layer 2, component 1 (ranker): unknown model_type ''" in error_of(
        aconfig([acomp("generator")], [pairrm])
    )


def test_model_type_of_the_wrong_kind() -> None:
    msg = error_of(aconfig([acomp("generator", ["OpenAI_API"])]))  # type: ignore[arg-type]
    assert msg.startswith("archon.json: layer 1, component 1 (generator): unknown model_type")


def test_missing_model_type_and_missing_type() -> None:
    no_model_type = acomp("generator")
    del no_model_type["model_type"]
    assert error_of(aconfig([no_model_type])).startswith(
        "archon.json: layer 1, component 1 (generator): missing 'model_type'"
    )
    no_type = acomp("generator")
    del no_type["type"]
    assert error_of(aconfig([acomp("generator")], [no_type])).startswith(
        "archon.json: layer 2, component 1: missing 'type'"
    )


def test_unknown_type_and_unknown_field_suggest() -> None:
    msg = error_of(aconfig([acomp("generator")], [acomp("rankr", top_k=1)]))
    assert msg.startswith(
        "archon.json: layer 2, component 1: unknown Archon type 'rankr' (did you mean 'ranker'?)"
    )
    msg = error_of(aconfig([acomp("generator", sampels=2)]))
    assert msg == (
        "archon.json: layer 1, component 1 (generator): unknown Archon field "
        "'sampels' (did you mean 'samples'?)"
    )


def test_malformed_layers_and_top_level() -> None:
    assert error_of(aconfig([acomp("generator")], {"models": "x"})).startswith(
        "archon.json: layer 2: must be a list of components"
    )
    assert error_of(aconfig({"models": [acomp("generator")], "branchs": 1})).startswith(
        "archon.json: layer 1: unknown Archon layer field 'branchs' (did you mean 'branches'?)"
    )
    assert error_of(aconfig([acomp("generator")], ["fuser"])) == (
        "archon.json: layer 2, component 1: must be an object with 'type', 'model' and 'model_type'"
    )
    assert error_of(aconfig([acomp("generator")], custom=True)).startswith(
        "archon.json: Archon custom components"
    )
    assert "unknown Archon field 'layer'" in error_of(
        {"name": "x", "layers": [[acomp("generator")]], "layer": []}
    )


def test_archon_files_pass_the_same_flow_rules() -> None:
    msg = error_of(aconfig([acomp("critic")], [acomp("generator")]))
    assert msg.startswith("archon.json: layer 1, component 1 (critic): needs candidates")
    msg = error_of(aconfig([acomp("generator", samples=2)], [acomp("ranker", top_k=5)]))
    assert "layer 2, component 1 (ranker): 'top_k' is 5 but at most 2" in msg
    no_model = acomp("generator")
    del no_model["model"]
    assert error_of(aconfig([no_model])) == (
        "archon.json: layer 1, component 1 (generator): missing required field 'model'"
    )


def test_mixing_itas_and_archon_components_is_an_error() -> None:
    itas_component = {"technique": "fuser", "provider": "sim", "model": "strong"}
    msg = error_of(aconfig([acomp("generator")], [itas_component]))
    assert "layer 2, component 1: missing 'type' (do not mix itas 'technique'" in msg
    typo = {"type": "generator", "provider": "sim", "model": "strong"}
    assert "looks like an itas component" in error_of({"name": "x", "layers": [[typo]]})


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
