"""Techniques: one module per inference-time technique, each the one home of everything about it.

``TECHNIQUES`` maps a technique's name to its ``Technique`` (see ``itas.techniques.base`` for
what one defines); ``SPEC_TECHNIQUES`` are the ones an architecture can place in a layer.
Adding a technique means adding one module with a ``TECHNIQUE`` and listing it in ``MODULES``.
"""

from __future__ import annotations

import importlib
from typing import Any

from itas.errors import ConfigError
from itas.techniques.base import ComponentParams, Technique

#: In the order the README and error messages list them.
MODULES = ("generator", "critic", "ranker", "fuser", "verifier", "unit_test_generator",
           "unit_test_evaluator", "majority_vote", "code_tester", "judge")

TECHNIQUES: dict[str, Technique[Any]] = {}
for _module in MODULES:
    _technique: Technique[Any] = importlib.import_module(f"itas.techniques.{_module}").TECHNIQUE
    TECHNIQUES[_technique.name] = _technique
SPEC_TECHNIQUES: dict[str, Technique[Any]] = {n: t for n, t in TECHNIQUES.items() if t.in_specs}


def technique(name: str) -> Technique[Any]:
    """The technique called ``name``; ConfigError lists the known ones."""
    found = TECHNIQUES.get(name)
    if found is None:
        raise ConfigError(f"unknown technique {name!r}; known: {', '.join(TECHNIQUES)}")
    return found


def technique_of(component: ComponentParams) -> Technique[Any]:
    """The technique a component's parameters belong to."""
    return TECHNIQUES[component.technique]
