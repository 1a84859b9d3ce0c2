"""Architecture specs: which techniques run on which models, layer by layer.

An architecture file (YAML or JSON; Archon's own JSON is accepted too, see
``itas.archon``) looks like::

    name: sim_gcrf
    description: three generators, critique, rank, fuse
    final: single            # default; or "first", see "Final answer" below
    tests: benchmark         # optional: the benchmark ships unit tests with each query
    layers:
      - - {technique: generator, provider: sim, model: strong, samples: 3}
      - - {technique: critic, provider: sim, model: medium}
      - - {technique: ranker, provider: sim, model: medium, top_k: 2}
      - - {technique: fuser, provider: sim, model: strong}

Flow (Archon's semantics, made explicit so they can be checked before anything runs):

- A layer receives the candidate set the layer before left (none before layer 1).
- Producers (generator, ranker, fuser, verifier, unit_test_evaluator, majority_vote,
  code_tester) each write a candidate list; the layer's output is their concatenation in
  component order. A layer without producers (critics, unit_test_generators only) passes its
  candidates on, with critiques or tests attached. A critic therefore cannot share a layer with
  a producer: the candidates it critiques would be replaced.
- Generators see the conversation only; the techniques after them read the candidates.
- A verifier keeps the candidates that pass (at most ``top_k``) and, like Archon, keeps the
  incoming set when none passes, so no layer can empty a non-empty flow.
- Unit tests come from a unit_test_generator in an earlier layer, or from the benchmark
  (``tests: benchmark``); unit_test_evaluator and code_tester need one of the two.

Final answer: with ``final: single`` (the default) the last layer must leave exactly one
candidate, which is checked statically. ``final: first`` allows several and answers with the
first (ranked techniques put their best first). Archon configs load with ``final: first``,
the deterministic form of Archon's random pick.

Validation runs when a spec is built; every error is a ``ConfigError`` naming the file, the
1-based layer and component, the technique and the field. Call plans and cost bounds are in
``itas.plan``; Archon's JSON form is translated by ``itas.archon``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from itas.agents.kinds import service_name
from itas.errors import ConfigError
from itas.plan import Material, layer_flows

TECHNIQUES = (
    "generator", "critic", "ranker", "fuser", "verifier",
    "unit_test_generator", "unit_test_evaluator", "majority_vote", "code_tester",
)  # fmt: skip
DEFAULT_TEMPERATURE = 0.7
MAX_TEMPERATURE = 2.0
DEFAULT_MAX_TOKENS = 512
DEFAULT_NUM_TESTS = 5
DEFAULT_CODE_TIMEOUT_S = 10.0
DICT_SOURCE = "<dict>"
YAML_SUFFIXES = (".yaml", ".yml")
JSON_SUFFIX = ".json"

ProviderName = Literal["openai", "anthropic", "local", "sim"]
PROVIDERS: tuple[str, ...] = get_args(ProviderName)
Count = Annotated[int, Field(ge=1, strict=True)]
Tokens = Annotated[int, Field(ge=1, strict=True)]
# An env var *name*: a pasted key ("sk-...") fails the pattern and is never echoed back.
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Url = Annotated[str, Field(pattern=r"^https?://\S+$")]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Component(_Spec):
    """Flow roles and the call plan of one component; subclasses override what differs."""

    needs_candidates: ClassVar[bool] = True
    produces: ClassVar[bool] = True  # writes the layer's candidate list
    keeps_candidates: ClassVar[bool] = True  # output is a subset of the input (critiques ride on)
    needs_tests: ClassVar[bool] = False
    makes_tests: ClassVar[bool] = False

    technique: str
    provider: ProviderName | None = None
    model: str | None = None

    @property
    def service_name(self) -> str:
        """The broker service that serves this component: ``technique@provider:model``."""
        return service_name(self.technique, self.provider, self.model)

    def calls(self, n: int) -> int:
        """LLM calls made for ``n`` incoming candidates."""
        return 0

    def executions(self, n: int) -> int:
        """Code executions (sandboxed runs) for ``n`` incoming candidates."""
        return 0

    def out_range(self, n: int) -> tuple[int, int]:
        """Least and most candidates written for ``n`` incoming (producers only)."""
        return (n, n)

    def prompt_tokens(self, n: int, m: Material) -> int:
        """Upper bound on the prompt tokens of all calls for ``n`` incoming candidates."""
        return 0

    def completion_tokens(self, n: int) -> int:
        return 0

    def written_tokens(self, incoming: int) -> int:
        """Token bound of the candidates it writes, given the bound of those it reads."""
        return incoming

    def critique_tokens(self) -> int:
        """Token bound of the critique it attaches to each candidate."""
        return 0

    def test_tokens(self) -> int:
        """Token bound of the unit tests it writes."""
        return 0


class _LLMComponent(_Component):
    provider: ProviderName
    model: str = Field(min_length=1)
    base_url: Url | None = None
    api_key_env: EnvName | None = None
    temperature: float = Field(DEFAULT_TEMPERATURE, ge=0.0, le=MAX_TEMPERATURE, strict=True)
    max_tokens: Tokens = DEFAULT_MAX_TOKENS

    def completion_tokens(self, n: int) -> int:
        return self.calls(n) * self.max_tokens


class _ToolComponent(_Component):
    """Techniques without an LLM; provider and model only name the agent serving them."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> _ToolComponent:
        if (self.provider is None) != (self.model is None):
            raise ValueError("give both 'provider' and 'model', or neither")
        return self


class GeneratorSpec(_LLMComponent):
    needs_candidates: ClassVar[bool] = False
    keeps_candidates: ClassVar[bool] = False
    technique: Literal["generator"] = "generator"
    samples: Count = 1

    def calls(self, n: int) -> int:
        return self.samples

    def out_range(self, n: int) -> tuple[int, int]:
        return (self.samples, self.samples)

    def prompt_tokens(self, n: int, m: Material) -> int:
        return self.samples * m.overhead

    def written_tokens(self, incoming: int) -> int:
        return self.max_tokens


class CriticSpec(_LLMComponent):
    produces: ClassVar[bool] = False
    technique: Literal["critic"] = "critic"

    def calls(self, n: int) -> int:
        return n

    def prompt_tokens(self, n: int, m: Material) -> int:
        return n * (m.overhead + m.candidate)

    def critique_tokens(self) -> int:
        return self.max_tokens


class RankerSpec(_LLMComponent):
    """Listwise: one call ranks all. Pairwise: one call per unordered pair, n*(n-1)/2."""

    technique: Literal["ranker"] = "ranker"
    top_k: Count
    mode: Literal["listwise", "pairwise"] = "listwise"

    def calls(self, n: int) -> int:
        if self.mode == "pairwise":
            return math.comb(n, 2)
        return 1 if n else 0

    def out_range(self, n: int) -> tuple[int, int]:
        kept = min(self.top_k, n)
        return (kept, kept)

    def prompt_tokens(self, n: int, m: Material) -> int:
        shown = 2 if self.mode == "pairwise" else n
        return self.calls(n) * (m.overhead + shown * m.annotated)


class FuserSpec(_LLMComponent):
    """``length`` caps the fused answer: a word count, or "longest" (Archon's length control)."""

    keeps_candidates: ClassVar[bool] = False
    technique: Literal["fuser"] = "fuser"
    n_outputs: Count = 1
    length: Count | Literal["longest"] | None = None

    def calls(self, n: int) -> int:
        return self.n_outputs

    def out_range(self, n: int) -> tuple[int, int]:
        return (self.n_outputs, self.n_outputs)

    def prompt_tokens(self, n: int, m: Material) -> int:
        return self.n_outputs * (m.overhead + n * m.annotated)

    def written_tokens(self, incoming: int) -> int:
        return self.max_tokens


class VerifierSpec(_LLMComponent):
    technique: Literal["verifier"] = "verifier"
    top_k: Count | None = None

    def calls(self, n: int) -> int:
        return n

    def out_range(self, n: int) -> tuple[int, int]:
        return (min(1, n), min(self.top_k or n, n))

    def prompt_tokens(self, n: int, m: Material) -> int:
        return n * (m.overhead + m.annotated)


class UnitTestGeneratorSpec(_LLMComponent):
    needs_candidates: ClassVar[bool] = False
    produces: ClassVar[bool] = False
    makes_tests: ClassVar[bool] = True
    technique: Literal["unit_test_generator"] = "unit_test_generator"
    num_tests: Count = DEFAULT_NUM_TESTS

    def calls(self, n: int) -> int:
        return 1

    def prompt_tokens(self, n: int, m: Material) -> int:
        return m.overhead

    def test_tokens(self) -> int:
        return self.max_tokens


class UnitTestEvaluatorSpec(_LLMComponent):
    """Scores each candidate by tests passed; keeps the best ``top_k`` (all when unset)."""

    needs_tests: ClassVar[bool] = True
    technique: Literal["unit_test_evaluator"] = "unit_test_evaluator"
    top_k: Count | None = None

    def calls(self, n: int) -> int:
        return n

    def out_range(self, n: int) -> tuple[int, int]:
        kept = min(self.top_k or n, n)
        return (kept, kept)

    def prompt_tokens(self, n: int, m: Material) -> int:
        return n * (m.overhead + m.candidate + m.tests)


class MajorityVoteSpec(_ToolComponent):
    technique: Literal["majority_vote"] = "majority_vote"

    def out_range(self, n: int) -> tuple[int, int]:
        return (min(1, n), min(1, n))


class CodeTesterSpec(_ToolComponent):
    """Runs each candidate once against the test set; keeps the best ``top_k`` (all when unset)."""

    needs_tests: ClassVar[bool] = True
    technique: Literal["code_tester"] = "code_tester"
    timeout_s: float = Field(DEFAULT_CODE_TIMEOUT_S, gt=0.0, strict=True)
    top_k: Count | None = None

    def executions(self, n: int) -> int:
        return n

    def out_range(self, n: int) -> tuple[int, int]:
        kept = min(self.top_k or n, n)
        return (kept, kept)


ComponentSpec = Annotated[
    GeneratorSpec | CriticSpec | RankerSpec | FuserSpec | VerifierSpec | UnitTestGeneratorSpec
    | UnitTestEvaluatorSpec | MajorityVoteSpec | CodeTesterSpec,
    Field(discriminator="technique"),
]  # fmt: skip
SPEC_CLASSES: dict[str, type[_Component]] = {
    cls.model_fields["technique"].default: cls
    for cls in (GeneratorSpec, CriticSpec, RankerSpec, FuserSpec, VerifierSpec,
                UnitTestGeneratorSpec, UnitTestEvaluatorSpec, MajorityVoteSpec, CodeTesterSpec)
}  # fmt: skip


def place(source: str, layer: int, component: int | None = None, technique: str = "") -> str:
    """The location prefix of an error: ``file: layer 2, component 1 (ranker)``."""
    where = f"{source}: layer {layer}"
    if component is not None:
        where += f", component {component}"
    return f"{where} ({technique})" if technique else where


def _suggest(word: object, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Architecture(_Spec):
    """A validated architecture; frozen, so plans and caches can key on it."""

    name: str = Field(min_length=1)
    description: str | None = None
    final: Literal["single", "first"] = "single"
    tests: Literal["benchmark"] | None = None
    layers: tuple[tuple[ComponentSpec, ...], ...]

    @model_validator(mode="after")
    def _validate_flow(self, info: ValidationInfo) -> Architecture:
        _check_flow(self, (info.context or {}).get("source", DICT_SOURCE))
        return self

    def components(self) -> Iterator[tuple[int, int, ComponentSpec]]:
        """(layer, component, spec) with 1-based indices, in order."""
        for i, layer in enumerate(self.layers, 1):
            for j, component in enumerate(layer, 1):
                yield i, j, component

    @property
    def services(self) -> tuple[str, ...]:
        """The distinct services this architecture calls, in first-use order."""
        return tuple(dict.fromkeys(c.service_name for _, _, c in self.components()))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Write as YAML or JSON by the file's suffix; ``load_architecture`` reads it back."""
        target = Path(path)
        if target.suffix in YAML_SUFFIXES:
            text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        elif target.suffix == JSON_SUFFIX:
            text = json.dumps(self.to_dict(), indent=2) + "\n"
        else:
            raise ConfigError(f"{target}: write architectures as .yaml, .yml or .json")
        target.write_text(text, encoding="utf-8")


def _check_flow(arch: Architecture, source: str) -> None:
    if not arch.layers:
        raise ConfigError(f"{source}: 'layers' is empty; an architecture needs at least one layer")
    for index, layer in enumerate(arch.layers, 1):
        if not layer:
            raise ConfigError(f"{place(source, index)} is empty; give it at least one component")
    tests = arch.tests == "benchmark"
    flows = list(layer_flows(arch.layers))
    for flow, layer in zip(flows, arch.layers, strict=True):
        reachable = flow.candidates_in[1]
        producers = sorted({c.technique for c in layer if c.produces})
        for j, c in enumerate(layer, 1):
            where = place(source, flow.layer, j, c.technique)
            if c.needs_candidates and reachable == 0:
                raise ConfigError(
                    f"{where}: needs candidates, but no earlier layer produces "
                    "any; put a generator in an earlier layer"
                )
            if c.needs_tests and not tests:
                raise ConfigError(
                    f"{where}: needs unit tests; put a unit_test_generator in an "
                    "earlier layer, or set 'tests: benchmark' if the benchmark "
                    "ships tests"
                )
            top_k = getattr(c, "top_k", None)
            if top_k is not None and top_k > reachable:
                raise ConfigError(
                    f"{where}: 'top_k' is {top_k} but at most {reachable} candidate(s) can reach it"
                )
            if isinstance(c, CriticSpec) and producers:
                raise ConfigError(
                    f"{where}: a critic annotates the candidates passing through "
                    f"its layer, but this layer also has {', '.join(producers)}, "
                    "which replace them; give the critic its own layer"
                )
        tests = tests or any(c.makes_tests for c in layer)
    last = flows[-1]
    most = last.candidates_out[1]
    if most == 0:
        raise ConfigError(
            f"{place(source, last.layer)}: the final layer leaves no candidates, "
            "so there is no answer; end with a layer that produces candidates"
        )
    if arch.final == "single" and most > 1:
        raise ConfigError(
            f"{place(source, last.layer)}: the final layer can leave {most} "
            "candidates but 'final: single' needs exactly one; reduce to one "
            "(ranker or unit_test_evaluator top_k: 1, fuser n_outputs: 1, "
            "majority_vote) or set 'final: first' to answer with the first"
        )


def parse_architecture(data: Mapping[str, Any], source: str = DICT_SOURCE) -> Architecture:
    """Validate a spec mapping (itas or Archon form); errors name ``source``."""
    from itas import archon  # imported here: archon builds on this module's names

    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: an architecture must be a mapping, not {_kind(data)}")
    if archon.is_archon_config(data):
        data = archon.from_archon(data, source)
    try:
        return Architecture.model_validate(data, context={"source": source})
    except ValidationError as e:
        raise ConfigError("\n".join(_describe_errors(e, source))) from e


def load_architecture(
    spec: str | os.PathLike[str] | Mapping[str, Any], *, source: str | None = None
) -> Architecture:
    """Load an architecture from a .yaml/.yml/.json file or a mapping; itas or Archon form."""
    if isinstance(spec, Mapping):
        return parse_architecture(spec, source or DICT_SOURCE)
    path = Path(spec)
    where = source or str(path)
    if path.suffix not in (*YAML_SUFFIXES, JSON_SUFFIX):
        raise ConfigError(f"{where}: architecture files end in .yaml, .yml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: cannot read architecture file: {e}") from e
    try:
        data = json.loads(text) if path.suffix == JSON_SUFFIX else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        kind = "JSON" if path.suffix == JSON_SUFFIX else "YAML"
        raise ConfigError(f"{where}: not valid {kind}: {e}") from e
    return parse_architecture(data, where)


# Fields whose type is a union of constrained types: pydantic reports one error per branch.
_UNION_HINTS = {"length": "must be a word count >= 1 or 'longest'"}
_PATTERN_HINTS = {
    "api_key_env": "must name an environment variable (letters, digits, _), not hold the key",
    "base_url": "must be an http:// or https:// URL",
}


def _describe_errors(error: ValidationError, source: str) -> list[str]:
    """Pydantic's errors as one line each: where, which field, what is wrong.

    Values are echoed only for technique and provider names, so a key pasted into a field
    never reaches a message or a log. Unknown fields come first: a typo is usually also the
    cause of a "missing" error for the field it misspells.
    """
    lines: dict[str, None] = {}
    errors = sorted(error.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    for e in errors:
        loc = e["loc"]
        where, technique, rest = source, None, loc
        if loc[:1] == ("layers",) and len(loc) >= 2 and isinstance(loc[1], int):
            component = loc[2] if len(loc) >= 3 and isinstance(loc[2], int) else None
            technique = str(loc[3]) if len(loc) >= 4 else None
            where = place(
                source, loc[1] + 1, None if component is None else component + 1, technique or ""
            )
            rest = loc[4:] if technique else loc[2 + (component is not None) :]
        field = str(rest[0]) if rest else None
        union_branch = len(rest) > 1 and field in _UNION_HINTS
        text = _UNION_HINTS[str(field)] if union_branch else _message(e, field, technique)
        if field and not text.startswith(("unknown", "missing")):
            text = f"{field!r} {text}"
        lines[f"{where}: {text}"] = None
    return list(lines)


def _message(e: Any, field: str | None, technique: str | None) -> str:
    kind, ctx = e["type"], e.get("ctx", {})
    if kind == "union_tag_invalid":
        tag = ctx.get("tag")
        return (
            f"unknown technique {tag!r}{_suggest(tag, TECHNIQUES)}; "
            f"known techniques: {', '.join(TECHNIQUES)}"
        )
    if kind == "union_tag_not_found":
        return f"missing 'technique'; known techniques: {', '.join(TECHNIQUES)}"
    if kind == "extra_forbidden":
        fields = sorted(
            SPEC_CLASSES[technique].model_fields if technique else Architecture.model_fields
        )
        return (
            f"unknown field {field!r}{_suggest(field, fields)}; known fields: {', '.join(fields)}"
        )
    if kind == "missing":
        return f"missing required field {field!r}"
    if kind == "literal_error" and field == "provider":
        got = e["input"]
        return (
            f"unknown provider {got!r}{_suggest(got, PROVIDERS)}; "
            f"known providers: {', '.join(PROVIDERS)}"
        )
    simple = {
        "literal_error": f"must be one of {ctx.get('expected')}",
        "greater_than_equal": f"must be >= {ctx.get('ge')}",
        "greater_than": f"must be > {ctx.get('gt')}",
        "less_than_equal": f"must be <= {ctx.get('le')}",
        "int_type": "must be an integer",
        "float_type": "must be a number",
        "string_type": "must be a string",
        "string_too_short": "must not be empty",
        "string_pattern_mismatch": _PATTERN_HINTS.get(str(field), "has an invalid format"),
        "tuple_type": "must be a list of layers" if field == "layers" else
                      "must be a list of components",
        "model_attributes_type": "must be a mapping of fields",
        "model_type": "must be a mapping of fields",
        "value_error": str(e["msg"]).removeprefix("Value error, "),
    }  # fmt: skip
    return simple.get(kind, str(e["msg"]))


def _kind(value: object) -> str:
    return type(value).__name__
