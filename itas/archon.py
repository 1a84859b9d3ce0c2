"""Archon's own config JSON (github.com/ScalingIntelligence/Archon), loaded unchanged.

Archon writes ``{"name", "layers": [[{"type", "model", "model_type", ...}, ...], ...]}``;
older files give a layer as ``{"models": [...], "branches": n}``. ``from_archon`` turns either
into an itas spec mapping that ``itas.spec`` then validates like any other, so the flow rules
hold for both forms and errors point at the same layer and component numbers.

How each technique's fields are named in Archon, which keys Archon reads without effect, and
which itas options make a component run as Archon runs it (its calls per layer: one batched
critic call, a two-step verifier, early-stopping evaluators) are the technique modules'
(``Technique.archon``); this module only applies them:

- ``type`` -> technique; ``model_type`` -> provider and endpoint (``MODEL_TYPES``): OpenAI_API,
  Anthropic_API, Google_API (gemini), Bedrock_API (bedrock), Together_API and Groq_API
  (OpenAI-compatible, with their base URL and key variable), vLLM (OpenAI-compatible at the
  component's ``base_url`` or ``VLLM_BASE_URL``), plus the itas extensions ``sim`` and
  ``local``;
- keys Archon's code never reads for a component (``checkpoint``, ``top_k`` on a generator,
  the typo ``length_contorl``...) load with one warning per file listing all of them, since
  Archon runs such files too;
- real errors (an unknown type or model_type, a wrong value) are all reported at once, each
  naming file, layer, component and field;
- ``final: first``: Archon answers with a random pick of the last layer's candidates; itas
  takes the first, which is the same answer whenever the flow ends with one candidate.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from itas.errors import ConfigError
from itas.techniques import SPEC_TECHNIQUES
from itas.techniques.base import ArchonForm, suggest

ARCHON_TYPES = ("generator", "critic", "ranker", "fuser", "verifier", "unit_test_generator",
                "unit_test_evaluator")
TOGETHER_BASE_URL = "https://api.together.xyz/v1"
GROQ_BASE_URL = "https://api.groq.com/openai/v1"
VLLM_BASE_URL_ENV = "VLLM_BASE_URL"
VLLM_DEFAULT_URL = "http://localhost:8000/v1"
MODEL_TYPES: dict[str, dict[str, str]] = {
    "OpenAI_API": {"provider": "openai"},
    "Anthropic_API": {"provider": "anthropic"},
    "Google_API": {"provider": "gemini"},
    "Bedrock_API": {"provider": "bedrock"},
    "Together_API": {
        "provider": "openai", "base_url": TOGETHER_BASE_URL, "api_key_env": "TOGETHER_API_KEY",
    },
    "Groq_API": {"provider": "openai", "base_url": GROQ_BASE_URL, "api_key_env": "GROQ_API_KEY"},
    "vLLM": {"provider": "openai"},
    "sim": {"provider": "sim"},
    "local": {"provider": "local"},
}  # fmt: skip
#: Read for every component (Archon builds each on its Generator).
SHARED = ("model", "temperature", "max_tokens")
#: itas extensions accepted in Archon form.
EXTENSIONS = ("base_url", "api_key_env")
#: Read by Archon but with no itas counterpart: load with a warning naming the effect.
UNSUPPORTED = {"no_system": "itas keeps the system message"}
TOP_KEYS = ("name", "layers", "custom")
OLD_LAYER_KEYS = ("models", "branches")
ARCHON_FINAL = "first"
REWARD_MODEL_RANKERS = ("llm-blender/PairRM",)


def is_archon_config(data: Mapping[str, Any]) -> bool:
    """True when a spec mapping is in Archon's form: components typed by ``type``, or a layer
    given as ``{"models": [...]}``; itas components name a ``technique`` instead."""
    layers = data.get("layers")
    if not isinstance(layers, list):
        return False
    for layer in layers:
        if isinstance(layer, Mapping) and ("models" in layer or "type" in layer):
            return True
        if isinstance(layer, list) and any(isinstance(c, Mapping) and "type" in c for c in layer):
            return True
    return False


class _Collector:
    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[str] = []
        self.ignored: list[str] = []


def from_archon(data: Mapping[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    """The itas spec mapping for an Archon config and its warnings; ConfigError lists every
    problem, each naming file, layer and component."""
    found = _Collector(source)
    ignored_top = [k for k in data if k not in TOP_KEYS]
    found.ignored += [f"'{k}'" for k in ignored_top]
    if data.get("custom"):
        found.errors.append(f"{source}: Archon custom components ('custom': true) have no "
                            "itas counterpart")
    layers = data.get("layers")
    converted = [_layer(raw, found, i) for i, raw in enumerate(layers or [], 1)]
    if found.errors:
        raise ConfigError("\n".join(found.errors))
    spec: dict[str, Any] = {"layers": converted, "final": ARCHON_FINAL,
                            "name": data.get("name") or "archon"}
    warnings = []
    if found.ignored:
        warnings.append(f"{source}: keys Archon's code does not read either, ignored: "
                        + ", ".join(found.ignored))
    return spec, warnings


def _layer(raw: Any, found: _Collector, index: int) -> list[dict[str, Any]]:
    where = f"{found.source}: layer {index}"
    if isinstance(raw, Mapping) and "models" not in raw and "type" in raw:
        found.errors.append(f'{where}: a single component, not a layer; write the layer as a '
                            f'list of components or {{"models": [...]}} (Archon\'s code '
                            "cannot run this form either)")
        return []
    if isinstance(raw, Mapping):
        found.ignored += [f"{k!r} (layer {index})" for k in raw if k not in OLD_LAYER_KEYS]
        raw = raw.get("models")
    if not isinstance(raw, list):
        found.errors.append(f'{where}: must be a list of components or {{"models": [...]}}')
        return []
    return [c for j, item in enumerate(raw, 1)
            if (c := _component(item, found, f"{where}, component {j}", index, j)) is not None]


def _component(raw: Any, found: _Collector, where: str, layer: int, index: int
               ) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        found.errors.append(f"{where}: must be an object with 'type', 'model' and 'model_type'")
        return None
    kind = raw.get("type")
    if kind is None:
        hint = " (do not mix itas 'technique' and Archon 'type' components)" \
            if "technique" in raw else ""
        found.errors.append(f"{where}: missing 'type'{hint}; Archon types: "
                            f"{', '.join(ARCHON_TYPES)}")
        return None
    if kind not in ARCHON_TYPES:
        found.errors.append(f"{where}: unknown Archon type {kind!r}{suggest(kind, ARCHON_TYPES)};"
                            f" Archon types: {', '.join(ARCHON_TYPES)}")
        return None
    where = f"{where} ({kind})"
    form = SPEC_TECHNIQUES[kind].archon or ArchonForm()
    if kind == "ranker" and raw.get("model") in REWARD_MODEL_RANKERS:
        found.errors.append(f"{where}: the reward-model ranker {raw['model']!r} is not "
                            "supported: use an LLM ranker (any chat model as 'model')")
        return None
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        got = "missing 'model_type'" if model_type is None else f"unknown model_type " \
                                                                 f"{model_type!r}"
        found.errors.append(f"{where}: {got}{suggest(model_type, MODEL_TYPES)}; known model "
                            f"types: {', '.join(MODEL_TYPES)}")
        return None
    spec: dict[str, Any] = {"technique": kind, **MODEL_TYPES[model_type], **form.pattern}
    if model_type == "vLLM" and "base_url" not in raw:
        spec["base_url"] = os.environ.get(VLLM_BASE_URL_ENV, VLLM_DEFAULT_URL)
    for key, value in raw.items():
        if key in ("type", "model_type") or value is None:
            continue
        if key in SHARED or key in EXTENSIONS:
            spec[key] = value
        elif key in form.renamed:
            spec[form.renamed[key] or key] = value
        elif key in UNSUPPORTED:
            found.ignored.append(f"'{key}' (layer {layer}, component {index}: "
                                 f"{UNSUPPORTED[key]})")
        elif key not in form.ignored:
            found.ignored.append(f"'{key}' (layer {layer}, component {index}, {kind})")
    if form.convert is not None:
        try:
            spec = form.convert(spec)
        except ValueError as exc:
            found.errors.append(f"{where}: {exc}")
            return None
    return spec
