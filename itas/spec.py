"""Architecture specs: which techniques run on which models, layer by layer.

An architecture file (YAML or JSON; Archon's own JSON is accepted too, see ``itas.archon``)
looks like::

    name: sim_gcrf
    description: three generators, critique, rank, fuse
    final: single            # default; or "first", see "Final answer" below
    tests: benchmark         # optional: the benchmark ships unit tests with each query
    layers:
      - - {technique: generator, provider: sim, model: strong, samples: 3}
      - - {technique: critic, provider: sim, model: medium}
      - - {technique: ranker, provider: sim, model: medium, top_k: 2}
      - - {technique: fuser, provider: sim, model: strong}

A component's fields are its technique's parameter model (``itas.techniques.<name>``): the
same schema the agent validates requests with and the search builds points from.

Flow (Archon's semantics, made explicit so they can be checked before anything runs):

- A layer receives the candidate set the layer before left (none before layer 1).
- Components that write candidates (generator, ranker, fuser, verifier, unit_test_evaluator,
  majority_vote, code_tester) each leave a candidate list; the layer's output is their
  concatenation in component order. A layer with none of them (critics, unit_test_generators
  only) passes its candidates on, with critiques or tests attached. A critic therefore cannot
  share a layer with a writer: the candidates it critiques would be replaced.
- Unit tests come from a unit_test_generator in an earlier layer, or from the benchmark
  (``tests: benchmark``); unit_test_evaluator and code_tester need one of the two. Generated
  tests are shown inside the query to every later LLM component with ``tests_in_prompt``
  (Archon does the same); a unit_test_generator whose tests nothing later uses is a warning.
- How many candidates each technique leaves, and how many calls it makes, is its module's
  ``out_range`` and ``shards``; ``itas.plan`` composes them.

Final answer: with ``final: single`` (the default) the last layer must leave exactly one
candidate, which is checked statically. ``final: first`` allows several and answers with the
first (ranked techniques put their best first). Archon configs load with ``final: first``,
the deterministic form of Archon's random pick.

Limits: at most ``MAX_LAYERS`` layers of ``MAX_COMPONENTS`` components, and a call bound
(every re-ask included) of at most ``MAX_CALLS_PER_QUERY``, so no spec, from a file or a
stranger's request, can make an orchestrator plan or hold more than that.

Validation runs when a spec is built; every error is a ``ConfigError`` naming the file, the
1-based layer and component, the technique and the field; all errors are reported at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from itas.errors import ConfigError
from itas.plan import layer_flows
from itas.techniques import SPEC_TECHNIQUES
from itas.techniques.base import ComponentParams, LLMParams, ProviderName, suggest

__all__ = ["MAX_CALLS_PER_QUERY", "Architecture", "ComponentSpec", "ProviderName",
           "load_architecture", "parse_architecture"]

TECHNIQUE_NAMES = tuple(SPEC_TECHNIQUES)
DICT_SOURCE = "<dict>"
YAML_SUFFIXES = (".yaml", ".yml")
JSON_SUFFIX = ".json"
MAX_LAYERS = 64
MAX_COMPONENTS = 64
MAX_CALLS_PER_QUERY = 20_000

if TYPE_CHECKING:
    ComponentSpec = ComponentParams
else:  # the union of every technique's parameter model, told apart by 'technique'
    ComponentSpec = Annotated[
        Union[tuple(t.params_model for t in SPEC_TECHNIQUES.values())],  # noqa: UP007
        Field(discriminator="technique"),
    ]
SPEC_CLASSES: dict[str, type[ComponentParams]] = {
    name: t.params_model for name, t in SPEC_TECHNIQUES.items()}


def place(source: str, layer: int, component: int | None = None, technique: str = "") -> str:
    """The location prefix of an error: ``file: layer 2, component 1 (ranker)``."""
    where = f"{source}: layer {layer}"
    if component is not None:
        where += f", component {component}"
    return f"{where} ({technique})" if technique else where


class Architecture(BaseModel):
    """A validated architecture; frozen, so plans and caches can key on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    final: Literal["single", "first"] = "single"
    tests: Literal["benchmark"] | None = None
    layers: tuple[tuple[ComponentSpec, ...], ...] = Field(max_length=MAX_LAYERS)
    _warnings: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _validate_flow(self, info: ValidationInfo) -> Architecture:
        context = info.context or {}
        source = context.get("source", DICT_SOURCE)
        problems, warnings = check_flow(self, source)
        if problems:
            raise ConfigError("\n".join(problems))
        self._warnings = (*context.get("warnings", ()), *warnings)
        return self

    def __eq__(self, other: object) -> bool:
        """Specs are equal when their fields are; warnings describe where one came from."""
        return isinstance(other, Architecture) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(self.__dict__.values()))

    @property
    def warnings(self) -> tuple[str, ...]:
        """What loads but is probably not what the author meant (unused unit tests, Archon keys
        that Archon ignores too); ``itas check`` shows them."""
        return self._warnings

    def components(self) -> Iterator[tuple[int, int, ComponentParams]]:
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


def check_flow(arch: Architecture, source: str) -> tuple[list[str], list[str]]:
    """Every flow error of a spec whose fields are valid (all of them, not the first), and its
    warnings."""
    from itas.techniques import technique_of

    problems: list[str] = []
    warnings: list[str] = []
    if not arch.layers:
        return [f"{source}: 'layers' is empty; an architecture needs at least one layer"], []
    for index, layer in enumerate(arch.layers, 1):
        if not layer:
            problems.append(f"{place(source, index)} is empty; give it at least one component")
        elif len(layer) > MAX_COMPONENTS:
            problems.append(f"{place(source, index)} has {len(layer)} components; at most "
                            f"{MAX_COMPONENTS}")
    if problems:
        return problems, []
    tests = arch.tests == "benchmark"
    flows = []
    calls = 0
    for flow in layer_flows(arch.layers):
        # Checked layer by layer: planning costs time in proportion to the calls planned,
        # so a spec far over the bound (a poison query) is refused in milliseconds.
        calls += flow.max_calls
        if calls > MAX_CALLS_PER_QUERY:
            return [(f"{place(source, flow.layer)}: the query reaches {calls} LLM calls "
                     f"(re-asks included) by this layer; at most {MAX_CALLS_PER_QUERY} per "
                     "query: use fewer samples or layers, or fewer parse_retries")], []
        flows.append(flow)
    pending_tests: list[tuple[str, bool]] = []  # (where, used) of each unit_test_generator
    for flow, layer in zip(flows, arch.layers, strict=True):
        reachable = flow.candidates_in[1]
        writers = sorted({c.technique for c in layer if technique_of(c).produces})
        for j, c in enumerate(layer, 1):
            t = technique_of(c)
            where = place(source, flow.layer, j, c.technique)
            if t.needs_candidates and reachable == 0:
                problems.append(f"{where}: needs candidates, but no earlier layer produces "
                                "any; put a generator in an earlier layer")
                continue
            if t.needs_tests and not tests:
                problems.append(f"{where}: needs unit tests; put a unit_test_generator in an "
                                "earlier layer, or set 'tests: benchmark' if the benchmark "
                                "ships tests")
            problem = t.flow_problem(c, reachable)
            if problem:
                problems.append(f"{where}: {problem}")
            if not t.produces and not t.makes_tests and writers:
                problems.append(
                    f"{where}: a {c.technique} annotates the candidates passing through its "
                    f"layer, but this layer also has {', '.join(writers)}, which replace them; "
                    f"give the {c.technique} its own layer")
            if t.needs_tests or (isinstance(c, LLMParams) and c.tests_in_prompt):
                pending_tests = [(w, True) for w, _ in pending_tests]
        tests = tests or any(technique_of(c).makes_tests for c in layer)
        pending_tests += [(place(source, flow.layer, j, c.technique), False)
                          for j, c in enumerate(layer, 1) if technique_of(c).makes_tests]
    warnings += [f"{where}: the unit tests it writes are never used (no later "
                 "unit_test_evaluator or code_tester, and no later component shows them)"
                 for where, used in pending_tests if not used]
    last = flows[-1]
    most = last.candidates_out[1]
    if most == 0:
        problems.append(f"{place(source, last.layer)}: the final layer leaves no candidates, "
                        "so there is no answer; end with a layer that produces candidates")
    elif arch.final == "single" and most > 1:
        problems.append(
            f"{place(source, last.layer)}: the final layer can leave {most} candidates but "
            "'final: single' needs exactly one; reduce to one (ranker or unit_test_evaluator "
            "top_k: 1, fuser n_outputs: 1, majority_vote) or set 'final: first' to answer "
            "with the first")
    return problems, warnings


def parse_architecture(data: Mapping[str, Any], source: str = DICT_SOURCE) -> Architecture:
    """Validate a spec mapping (itas or Archon form); errors name ``source``, all at once."""
    from itas import archon  # imported here: archon builds on this module's names

    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: an architecture must be a mapping, not "
                          f"{type(data).__name__}")
    warnings: list[str] = []
    if archon.is_archon_config(data):
        data, warnings = archon.from_archon(data, source)
    try:
        return Architecture.model_validate(data, context={"source": source,
                                                          "warnings": warnings})
    except ValidationError as e:
        raise ConfigError("\n".join(describe_errors(e, source))) from e


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


_PATTERN_HINTS = {
    "api_key_env": "must name an environment variable (letters, digits, _), not hold the key",
    "base_url": "must be an http:// or https:// URL",
}


def describe_errors(error: ValidationError, source: str) -> list[str]:
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
        text = _message(e, field, technique)
        if field and not text.startswith(("unknown", "missing")):
            text = f"{field!r} {text}"
        lines[f"{where}: {text}"] = None
    return list(lines)


def _message(e: Any, field: str | None, technique: str | None) -> str:
    kind, ctx = e["type"], e.get("ctx", {})
    if kind == "union_tag_invalid":
        tag = ctx.get("tag")
        return (f"unknown technique {tag!r}{suggest(tag, TECHNIQUE_NAMES)}; "
                f"known techniques: {', '.join(TECHNIQUE_NAMES)}")
    if kind == "union_tag_not_found":
        return f"missing 'technique'; known techniques: {', '.join(TECHNIQUE_NAMES)}"
    if kind == "extra_forbidden":
        fields = sorted(SPEC_CLASSES[technique].model_fields if technique in SPEC_CLASSES
                        else Architecture.model_fields)
        return f"unknown field {field!r}{suggest(field, fields)}; known fields: {', '.join(fields)}"
    if kind == "missing":
        return f"missing required field {field!r}"
    simple = {
        "literal_error": f"must be one of {ctx.get('expected')}",
        "greater_than_equal": f"must be >= {ctx.get('ge')}",
        "greater_than": f"must be > {ctx.get('gt')}",
        "less_than_equal": f"must be <= {ctx.get('le')}",
        "int_type": "must be an integer",
        "float_type": "must be a number",
        "bool_type": "must be true or false",
        "string_type": "must be a string",
        "string_too_short": "must not be empty",
        "too_long": f"has too many items (at most {ctx.get('max_length')})",
        "string_pattern_mismatch": _PATTERN_HINTS.get(str(field), "has an invalid format"),
        "tuple_type": "must be a list of layers" if field == "layers" else
                      "must be a list of components",
        "model_attributes_type": "must be a mapping of fields",
        "model_type": "must be a mapping of fields",
        "value_error": str(e["msg"]).removeprefix("Value error, "),
    }  # fmt: skip
    return simple.get(kind, str(e["msg"]))

