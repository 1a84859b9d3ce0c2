"""How one component of a layer becomes broker requests, and how the replies come back together.

Pure functions, no I/O: the runner sends what ``requests_for`` returns, all at
once, and hands the replies to ``combine``. Calls that can run independently are
separate requests (one per generator sample, per fuser output, per candidate for
critics, verifiers, unit-test evaluators and code testers), so replicas share
them. Candidates keep the ids the orchestrator gave them: a reply's annotations
are merged onto the orchestrator's own copy of the candidate with that id, so a
critique or a score can never land on another candidate, and an agent cannot
rewrite a candidate it was only asked to judge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Candidate = dict[str, Any]

#: Fields a judging technique may set on a candidate it was given.
ANNOTATIONS = ("critique", "score", "verdict", "tests_passed", "tests_total", "answer", "meta")
#: Spec fields that say where a component runs, not how: not sent as parameters.
_PLACEMENT = {"technique", "provider", "model", "base_url", "api_key_env"}
#: Techniques that judge candidates one at a time.
PER_CANDIDATE = {"critic", "verifier", "unit_test_evaluator", "code_tester"}
#: Techniques whose every call writes new candidates.
WRITERS = {"generator", "fuser"}


@dataclass(frozen=True, slots=True)
class Context:
    """What every request of one query carries."""

    messages: list[dict[str, str]]
    sim: Mapping[str, Any] | None
    tests: list[str] | None


def params_of(component: Any) -> dict[str, Any]:
    return {k: v for k, v in component.model_dump(mode="json", exclude_none=True).items()
            if k not in _PLACEMENT}


def requests_for(component: Any, candidates: Sequence[Candidate], ctx: Context
                 ) -> list[dict[str, Any]]:
    """One request body per independent call of ``component``."""
    technique = component.technique
    params = params_of(component)
    base: dict[str, Any] = {"messages": ctx.messages, "params": params, "sim": ctx.sim,
                            "tests": ctx.tests}
    if technique == "generator":
        return [{**base, "params": {**params, "n": 1}, "sample_index": i}
                for i in range(component.samples)]
    if technique == "unit_test_generator":
        return [{**base, "sample_index": 0}]
    if technique == "fuser":
        return [{**base, "params": {**params, "n_outputs": 1}, "candidates": list(candidates),
                 "sample_index": i} for i in range(component.n_outputs)]
    if technique in PER_CANDIDATE:
        return [{**base, "candidates": [c], "sample_index": 0} for c in candidates]
    return [{**base, "candidates": list(candidates), "sample_index": 0}]


def combine(component: Any, incoming: Sequence[Candidate], replies: Sequence[Any | None],
            id_prefix: str) -> tuple[list[Candidate], list[str] | None, list[str]]:
    """Merge one component's replies (None for a failed call).

    Returns the candidates it leaves, the unit tests it wrote (or None) and
    problems worth recording in the trace.
    """
    technique = component.technique
    problems: list[str] = []
    if technique in WRITERS:
        written = [c for r in replies if r for c in r.get("candidates", [])]
        return [{**c, "id": f"{id_prefix}.{i}"} for i, c in enumerate(written)], None, problems
    if technique == "unit_test_generator":
        tests = [t for r in replies if r for t in (r.get("tests") or [])]
        return list(incoming), tests, problems
    by_id = {c["id"]: c for c in incoming}
    judged: list[Candidate] = []
    for reply in replies:
        for c in (reply or {}).get("candidates", []):
            original = by_id.get(c.get("id"))
            if original is None:
                problems.append(f"{component.service_name} returned unknown candidate "
                                f"{c.get('id')!r}; ignored")
                continue
            judged.append({**original, **{k: c[k] for k in ANNOTATIONS if c.get(k) is not None}})
    if technique == "critic":
        critiqued = {c["id"]: c for c in judged}
        return [critiqued.get(c["id"], c) for c in incoming], None, problems
    if technique == "verifier":
        passed = [c for c in judged if c.get("verdict")]
        if not passed and incoming:
            problems.append("no candidate passed verification; the incoming set goes on")
            return list(incoming), None, problems
        return passed[: component.top_k or len(passed)], None, problems
    if technique in ("unit_test_evaluator", "code_tester"):
        ranked = sorted(judged, key=_tests_key, reverse=True)
        return ranked[: component.top_k or len(ranked)], None, problems
    return judged, None, problems  # ranker, majority_vote: the agent chose and ordered


def _tests_key(candidate: Candidate) -> float:
    total = candidate.get("tests_total") or 0
    if total:
        return (candidate.get("tests_passed") or 0) / total
    return float(candidate.get("score") or 0.0)


def merge_layer(incoming: Sequence[Candidate], outputs: Sequence[tuple[Any, list[Candidate]]]
                ) -> list[Candidate]:
    """A layer's result: producers' outputs in component order; without producers, the
    incoming candidates with every critic's critique attached."""
    produced = [c for component, cands in outputs if component.produces for c in cands]
    if any(component.produces for component, _ in outputs):
        return produced
    merged = {c["id"]: dict(c) for c in incoming}
    for _, cands in outputs:
        for c in cands:
            target = merged.get(c["id"])
            if target is None or not c.get("critique") or c["critique"] == target.get("critique"):
                continue
            previous = target.get("critique")
            target["critique"] = f"{previous}\n\n{c['critique']}" if previous else c["critique"]
    return list(merged.values())
