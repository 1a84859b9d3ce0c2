"""Archon's own config JSON (github.com/ScalingIntelligence/Archon), loaded unchanged.

Archon writes ``{"name", "layers": [[{"type", "model", "model_type", ...}, ...], ...]}``;
older files give a layer as ``{"models": [...], "branches": n}``. ``from_archon`` turns
either into an itas spec mapping that ``itas.spec`` then validates like any other, so the
flow rules hold for both forms and errors point at the same layer and component numbers.

Mapping:
- ``type`` -> technique (Archon's seven; custom components have no itas counterpart).
- ``model_type`` -> provider and endpoint (``MODEL_TYPES``): OpenAI_API, Anthropic_API,
  Together_API and Groq_API (OpenAI-compatible, with their base URL and key variable),
  vLLM (OpenAI-compatible at the component's ``base_url`` or ``VLLM_BASE_URL``), plus the
  itas extensions ``sim`` and ``local``.
- Renamed per technique (``RENAMED``): fuser ``samples`` -> ``n_outputs`` and
  ``length_control: true`` -> ``length: longest``; verifier ``first_k`` -> ``top_k``;
  unit_test_generator ``unit_test_cap`` -> ``num_tests``.
- Dropped (``IGNORED``): knobs Archon reads that itas does not have, and keys Archon's own
  code never reads for that technique (e.g. ``top_k`` on a generator). The evaluator's
  ``first_k``/``first_pass`` early stop is dropped: itas evaluates every candidate and keeps
  ``top_k``.
- ``final: first``: Archon answers with a random pick of the last layer's candidates; itas
  takes the first, which is the same answer whenever the flow ends with one candidate.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from itas.errors import ConfigError

ARCHON_TYPES = (
    "generator", "critic", "ranker", "fuser", "verifier",
    "unit_test_generator", "unit_test_evaluator",
)  # fmt: skip
TOGETHER_BASE_URL = "https://api.together.xyz/v1"
GROQ_BASE_URL = "https://api.groq.com/openai/v1"
VLLM_BASE_URL = "http://localhost:8000/v1"
MODEL_TYPES: dict[str, dict[str, str]] = {
    "OpenAI_API": {"provider": "openai"},
    "Anthropic_API": {"provider": "anthropic"},
    "Together_API": {
        "provider": "openai", "base_url": TOGETHER_BASE_URL, "api_key_env": "TOGETHER_API_KEY",
    },
    "Groq_API": {"provider": "openai", "base_url": GROQ_BASE_URL, "api_key_env": "GROQ_API_KEY"},
    "vLLM": {"provider": "openai", "base_url": VLLM_BASE_URL},
    "sim": {"provider": "sim"},
    "local": {"provider": "local"},
}  # fmt: skip
# Copied as they are for every technique (base_url is an itas extension, e.g. for vLLM).
SHARED = ("model", "temperature", "max_tokens", "base_url")
RENAMED: dict[str, dict[str, str]] = {
    "generator": {"samples": "samples"},
    "critic": {},
    "ranker": {"top_k": "top_k"},
    "fuser": {"samples": "n_outputs", "length_control": "length"},
    "verifier": {"first_k": "top_k"},
    "unit_test_generator": {"unit_test_cap": "num_tests"},
    "unit_test_evaluator": {"top_k": "top_k"},
}
IGNORED = frozenset({
    "samples", "top_k", "first_k", "first_pass", "unit_test_cap", "length_control",
    "use_critiques", "ranker_batch_size", "remove_unit_tests_from_prompt", "no_system",
})  # fmt: skip
TOP_KEYS = ("name", "layers", "custom")
OLD_LAYER_KEYS = ("models", "branches")
ARCHON_FINAL = "first"


def is_archon_config(data: Mapping[str, Any]) -> bool:
    """True when a spec mapping is in Archon's form: components typed by ``type``, or a layer
    given as ``{"models": [...]}``; itas components name a ``technique`` instead."""
    layers = data.get("layers")
    if not isinstance(layers, list):
        return False
    for layer in layers:
        if isinstance(layer, Mapping) and "models" in layer:
            return True
        if isinstance(layer, list) and any(isinstance(c, Mapping) and "type" in c for c in layer):
            return True
    return False


def from_archon(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The itas spec mapping for an Archon config; ConfigError names file, layer, component."""
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(
                f"{source}: unknown Archon field {key!r}{_suggest(key, TOP_KEYS)}; "
                f"known fields: {', '.join(TOP_KEYS)}"
            )
    if data.get("custom"):
        raise ConfigError(
            f"{source}: Archon custom components ('custom': true) have no itas counterpart"
        )
    layers = data["layers"]
    converted = [_layer(raw, source, i) for i, raw in enumerate(layers, 1)]
    spec: dict[str, Any] = {"layers": converted, "final": ARCHON_FINAL}
    if "name" in data:
        spec["name"] = data["name"]
    return spec


def _layer(raw: Any, source: str, index: int) -> list[dict[str, Any]]:
    where = f"{source}: layer {index}"
    if isinstance(raw, Mapping):
        for key in raw:
            if key not in OLD_LAYER_KEYS:
                raise ConfigError(
                    f"{where}: unknown Archon layer field {key!r}"
                    f"{_suggest(key, OLD_LAYER_KEYS)}; known fields: "
                    f"{', '.join(OLD_LAYER_KEYS)}"
                )
        raw = raw.get("models")
    if not isinstance(raw, list):
        raise ConfigError(f'{where}: must be a list of components or {{"models": [...]}}')
    return [_component(c, f"{where}, component {j}") for j, c in enumerate(raw, 1)]


def _component(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be an object with 'type', 'model' and 'model_type'")
    kind = raw.get("type")
    if kind is None:
        hint = (
            " (do not mix itas 'technique' and Archon 'type' components)"
            if ("technique" in raw)
            else ""
        )
        raise ConfigError(f"{where}: missing 'type'{hint}; Archon types: {', '.join(ARCHON_TYPES)}")
    if kind not in ARCHON_TYPES:
        raise ConfigError(
            f"{where}: unknown Archon type {kind!r}{_suggest(kind, ARCHON_TYPES)}; "
            f"Archon types: {', '.join(ARCHON_TYPES)}"
        )
    where = f"{where} ({kind})"
    if "provider" in raw and "model_type" not in raw:
        raise ConfigError(
            f"{where}: looks like an itas component; itas names the technique in "
            "'technique', Archon in 'type' together with 'model_type'"
        )
    known = ("type", "model_type", *SHARED, *sorted(IGNORED))
    for key in raw:
        if key not in known:
            raise ConfigError(f"{where}: unknown Archon field {key!r}{_suggest(key, known)}")
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        got = "missing 'model_type'" if model_type is None else f"unknown model_type {model_type!r}"
        raise ConfigError(
            f"{where}: {got}{_suggest(model_type, MODEL_TYPES)}; known "
            f"model types: {', '.join(MODEL_TYPES)}"
        )
    spec: dict[str, Any] = {"technique": kind, **MODEL_TYPES[model_type]}
    renamed = RENAMED[kind]
    for key, value in raw.items():
        target = key if key in SHARED else renamed.get(key)
        if target is not None and value is not None:
            spec[target] = value
    if "length" in spec:  # Archon's length_control: as long as the longest candidate
        if not isinstance(spec["length"], bool):
            raise ConfigError(f"{where}: 'length_control' must be true or false")
        if spec.pop("length"):
            spec["length"] = "longest"
    return spec


def _suggest(word: object, choices: Any) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
