"""The search config (YAML), validated with errors that name the file and the field.

A search config says which models may generate and judge, which techniques the search
may use and over which ranges, the per-query call budget, the benchmark and its splits,
and how the search runs (trials, strategy, acquisition, parallelism, seed). See
``configs/search/sim_gsm8k.yaml`` for a commented example.

The benchmark is a built-in name or one of the user's own: a benchmark file (a YAML
definition, or a JSONL/JSON data file whose fields ``benchmark.definition`` names; see
``itas.benchmarks.custom``). Relative paths (``benchmark.name`` when it is a file,
``benchmark.data_dir``) are resolved against the config file's folder, so a config means
the same thing from any working directory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from itas.benchmarks.custom import is_data_file, is_definition_file, validation_lines
from itas.errors import ConfigError
from itas.spec import ProviderName

#: Techniques the space can switch on; generators are always there.
OPTIONAL_TECHNIQUES = (
    "critic", "ranker", "fuser", "verifier", "unit_test_generator", "unit_test_evaluator",
    "majority_vote",
)  # fmt: skip
STRATEGIES = ("bo", "random", "greedy")
ACQUISITIONS = ("ucb", "ei", "poi")
DEFAULT_KAPPA = 2.576
DEFAULT_XI = 0.01
#: Fields whose change makes stored trials meaningless (a different space, objective,
#: benchmark or final choice); the questions themselves enter the fingerprint as digests.
RESULT_FIELDS = ("models", "judge", "techniques", "space", "budget", "benchmark", "objective")
#: Settings of how the search runs that decide which trials it makes and how the finalists
#: race (resume replays both); more trials, another strategy or more held-out re-scores
#: only extend a stored search, so they may change.
SCHEDULE_FIELDS = ("initial_random", "acquisition", "parallel", "seed", "finalists",
                   "confirm_rounds")

Count = Annotated[int, Field(ge=1, strict=True)]
Range = tuple[Annotated[int, Field(ge=0, strict=True)], Annotated[int, Field(ge=0, strict=True)]]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelConfig(_Section):
    """One model the search may use; ``settings`` go to every agent that serves it (for
    ``sim``: skill, latency, ...; for any provider: cache, credit)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    provider: ProviderName
    model: str = Field(min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)
    max_tokens: Count | None = None  # of every call on this model (short keeps small models quick)


#: Least value of each space range.
RANGE_FLOORS = {"models": 1, "samples": 1, "ranker_top_k": 1, "fusion_layers": 0, "fusers": 1}


class SpaceConfig(_Section):
    """Ranges [min, max] (inclusive) of the space's dimensions; see ``itas.search.space``."""

    models: Range = (1, 3)
    samples: Range = (1, 5)
    ranker_top_k: Range = (1, 4)
    fusion_layers: Range = (0, 2)
    fusers: Range = (1, 3)

    @field_validator("models", "samples", "ranker_top_k", "fusion_layers", "fusers")
    @classmethod
    def _range(cls, value: Range, info: ValidationInfo) -> Range:
        if value[0] > value[1]:
            raise ValueError(f"[{value[0]}, {value[1]}] has min > max")
        floor = RANGE_FLOORS[str(info.field_name)]
        if value[0] < floor:
            raise ValueError(f"values must be >= {floor}")
        return value


class BudgetConfig(_Section):
    calls_per_query: Count


class BenchmarkConfig(_Section):
    """name: a built-in benchmark, or a benchmark file (relative to the config's folder);
    definition: the fields of a data file (scorer, question_field, ...), or overrides of a
    YAML definition. The search split gives ``search`` questions per trial and ``confirm``
    other ones to re-score the finalists; the held-out split gives ``heldout`` to report."""

    name: str = "gsm8k"
    definition: dict[str, Any] | None = None
    data_dir: str | None = None
    seed: int = 0
    search: Count = 40  # questions of the search split used per trial
    confirm: Annotated[int, Field(ge=0, strict=True)] = 120  # fresh search-split questions
    heldout: Count = 100  # questions of the held-out split used to re-score
    oracle_tests: bool = False  # selection sees the grading tests (labelled everywhere)


class AcquisitionConfig(_Section):
    kind: Literal["ucb", "ei", "poi"] = "ucb"
    kappa: float = Field(DEFAULT_KAPPA, gt=0)  # ucb
    xi: float = Field(DEFAULT_XI, ge=0)  # ei, poi


class ObjectiveConfig(_Section):
    """objective = score - cost_weight * calls_per_query / budget: among equally accurate
    architectures the cheaper wins; keep the weight below 1/questions so it only breaks ties."""

    cost_weight: float = Field(0.001, ge=0)


class SearchSettings(_Section):
    trials: Count = 24  # per strategy, not counting the model ranking
    initial_random: Annotated[int, Field(ge=0, strict=True)] = 6
    acquisition: AcquisitionConfig = AcquisitionConfig()
    parallel: Count = 1  # trials evaluated at once
    seed: int = 0
    strategies: tuple[Literal["bo", "random", "greedy"], ...] = ("bo",)
    baseline_trials: Count | None = None  # trials of random/greedy; default: ``trials``
    finalists: Count = 4  # best trials by search score re-scored on the confirm questions
    confirm_rounds: Count = 3  # the confirm questions in rounds; clear losers drop out
    rescore_top: Count = 3  # best finalists re-scored on the held-out split

    @model_validator(mode="after")
    def _strategies(self) -> SearchSettings:
        if not self.strategies:
            raise ValueError("strategies: give at least one of " + ", ".join(STRATEGIES))
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError("strategies: each strategy at most once")
        return self

    def trials_for(self, strategy: str) -> int:
        if strategy == "bo":
            return self.trials
        return self.baseline_trials or self.trials


class EvaluationConfig(_Section):
    concurrency: Count = 8  # questions of one trial in flight at once
    timeout_s: float = Field(300.0, gt=0)  # per query


class DeployConfig(_Section):
    """broker: an endpoint to use (agents already registered there are reused), or None to
    start a private broker on a free loopback port for the search."""

    broker: str | None = None
    replicas: Count = 1  # per technique service the search starts
    orchestrators: Count = 1


class SearchConfig(_Section):
    name: str = Field(min_length=1)
    description: str | None = None
    models: tuple[ModelConfig, ...] = Field(min_length=1)
    judge: str = "best"  # model of critic/ranker/fuser/verifier/unit tests: "best" or a name
    techniques: tuple[str, ...] = ("critic", "ranker", "fuser")
    space: SpaceConfig = SpaceConfig()
    budget: BudgetConfig
    benchmark: BenchmarkConfig = BenchmarkConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    search: SearchSettings = SearchSettings()
    evaluation: EvaluationConfig = EvaluationConfig()
    deploy: DeployConfig = DeployConfig()

    @model_validator(mode="after")
    def _consistent(self) -> SearchConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("models: names must be unique")
        served = [(m.provider, m.model) for m in self.models]
        if len(set(served)) != len(served):
            raise ValueError("models: each provider/model pair at most once (it names the "
                             "agent service)")
        if self.judge != "best" and self.judge not in names:
            raise ValueError(f"judge: {self.judge!r} is not a model name; use 'best' or one "
                             f"of {', '.join(names)}")
        unknown = [t for t in self.techniques if t not in OPTIONAL_TECHNIQUES]
        if unknown:
            raise ValueError(f"techniques: unknown {unknown}; known: generator (always), "
                             + ", ".join(OPTIONAL_TECHNIQUES))
        unit = {"unit_test_generator", "unit_test_evaluator"} & set(self.techniques)
        if len(unit) == 1:
            raise ValueError("techniques: unit_test_generator and unit_test_evaluator go "
                             "together; list both or neither")
        if self.space.models[1] > len(self.models):
            raise ValueError(f"space.models: at most {len(self.models)} (the models listed)")
        return self

    def fingerprint(self, questions: Mapping[str, str] | None = None,
                    benchmark: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What the stored trials depend on, field by field (resuming compares it; see
        ``itas.evaluation.manifest``): the config's result and schedule fields, the
        benchmark's identity and the digests of the questions of each split. Where the
        files are is left out: their content is in the digests."""
        data = self.result_fields()
        bench = data.pop("benchmark")
        for key in ("data_dir", "name", "definition"):
            bench.pop(key, None)
        data.update({f"benchmark.{k}": v for k, v in bench.items()})
        data["benchmark"] = (dict(benchmark) if benchmark is not None
                             else {"name": self.benchmark.name})
        schedule = self.search.model_dump(mode="json", include=set(SCHEDULE_FIELDS))
        data.update({f"search.{k}": v for k, v in schedule.items()})
        data.update({f"questions.{k}": v for k, v in (questions or {}).items()})
        return data

    def result_fields(self) -> dict[str, Any]:
        return self.model_dump(mode="json", include=set(RESULT_FIELDS))

    def digest(self) -> str:
        """A short hash of the whole config (cache keys of studies)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def parse_search_config(data: Any, source: str = "<dict>",
                        base_dir: Path | None = None) -> SearchConfig:
    """Validate a config mapping; ConfigError lines read ``source: field.path: problem``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a search config must be a mapping")
    try:
        config = SearchConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_lines(e, source)) from e
    if base_dir is not None:
        bench = config.benchmark
        update: dict[str, Any] = {}
        if bench.data_dir is not None:
            update["data_dir"] = str(_under(base_dir, bench.data_dir))
        if is_definition_file(bench.name) or is_data_file(bench.name):
            update["name"] = str(_under(base_dir, bench.name))
        if update:
            config = config.model_copy(update={"benchmark": bench.model_copy(update=update)})
    return config


def _under(base_dir: Path, path: str) -> Path:
    found = Path(path).expanduser()
    return found if found.is_absolute() else (base_dir / found).resolve()


def simulated_config(config: SearchConfig) -> SearchConfig:
    """``itas search --sim``: the same search with every model on a simulated one of the same
    name (skill from the name, as ``itas.deploy.simulated`` does for a spec; endpoints and
    key names dropped), named ``<name>-simulated`` so its outputs never pass for the real
    search's. Free and quick: a dry run of the search's whole pipeline."""
    from itas.deploy import sim_settings

    taken = [m.model for m in config.models]
    models = []
    for m in config.models:
        if m.provider == "sim":
            models.append(m)
            continue
        name = m.model if taken.count(m.model) == 1 else f"{m.provider}.{m.model}"
        models.append(m.model_copy(update={
            "provider": "sim", "model": name,
            "settings": sim_settings(name, m.settings, keep=("cache", "credit"))}))
    return config.model_copy(update={"name": f"{config.name}-simulated",
                                     "models": tuple(models)})


def load_search_config(path: str | Path) -> SearchConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read search config ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    return parse_search_config(data, str(path), path.parent)

