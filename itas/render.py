"""Terminal views of answers and traces (rich), kept apart from the data they show.

Everything a model or an agent wrote (candidate texts, critiques, errors, parse details)
reaches the terminal as plain ``Text``, never as rich markup, so brackets, markup-like tags
and escape sequences render as written: ``a[i]`` stays ``a[i]``, ``[/bold]`` cannot crash the
renderer, and an ANSI escape shows as ``\\x1b[...`` instead of recolouring the terminal.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from itas.query import Answer

SNIPPET_CHARS = 160
# C0 and C1 control characters but newline and tab, and DEL.
CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def literal(text: str | None) -> str:
    """``text`` with control characters written as escapes (``\\x1b``), so it cannot drive
    the terminal."""
    return CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text or "")


def snippet(text: str | None) -> str:
    flat = " ".join(literal(text).split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"


def _line(*parts: str | tuple[str, str]) -> Text:
    """A label from plain pieces and (piece, style) pairs; pieces are never parsed as markup."""
    return Text.assemble(*parts)


def _marks(candidate: dict[str, Any]) -> str:
    """A candidate's annotations; a fallback (an order nobody judged) is named as one, with
    no rank or score beside it that would read as a measurement."""
    marks = []
    if candidate.get("fallback"):
        marks.append(f"fallback: {literal(str(candidate['fallback']))}")
    elif candidate.get("rank") is not None:
        marks.append(f"rank {candidate['rank']}")
    if candidate.get("score") is not None and not candidate.get("fallback"):
        marks.append(f"score {candidate['score']:.2f}")
    if candidate.get("verdict") is not None:
        marks.append("passed" if candidate["verdict"] else "failed")
    if candidate.get("tests_total") is not None:
        marks.append(f"tests {candidate.get('tests_passed', 0)}/{candidate['tests_total']}")
    if candidate.get("answer") is not None:
        marks.append(f"answer {snippet(candidate['answer'])}")
    if candidate.get("truncated"):
        marks.append("cut at the token limit")
    return ", ".join(marks)


def trace_tree(answer: Answer) -> Tree:
    """The flow of one query: layers, the calls each component made, the candidates left."""
    usage = answer.usage
    cost = (f"${usage.get('cost_usd', 0):.4f}" if usage.get("cost_known", True)
            else f"cost unknown (${usage.get('cost_usd', 0):.4f} for priced models)")
    cached = (f" ({usage['cached_calls']} replayed from the response cache)"
              if usage.get("cached_calls") else "")
    root = Tree(_line((literal(answer.architecture), "bold"),
                      f" — {usage.get('calls', 0)} calls{cached}, {usage.get('tokens', 0)} "
                      f"tokens, {cost}, {answer.latency_s:.2f} s"))
    for layer in (answer.trace or {}).get("layers", []):
        node = root.add(_line((f"layer {layer['layer']}", "bold"),
                              f" ({layer['latency_s']:.2f} s) → "
                              f"{len(layer['candidates'])} candidate(s)"))
        for component in layer["components"]:
            _component(node, component)
        for candidate in layer["candidates"]:
            marks = _marks(candidate)
            cand = node.add(_line((literal(candidate["id"]), "cyan"),
                                  f" ({literal(candidate.get('model', '?'))}"
                                  f"{', ' + marks if marks else ''}): ",
                                  snippet(candidate.get("text"))))
            if candidate.get("critique"):
                cand.add(_line(("critique: " + snippet(candidate["critique"]), "dim")))
        if layer.get("tests"):
            tests = node.add(f"{len(layer['tests'])} unit test(s) written, shown to later "
                             "components")
            for test in layer["tests"]:
                tests.add(_line((snippet(test), "dim")))
    if answer.stopped:
        reason = literal(str(answer.stopped.get("reason")))
        root.add(_line((f"stopped before layer {answer.stopped.get('layer')}: {reason}",
                        "yellow")))
    return root


def _component(node: Tree, component: dict[str, Any]) -> None:
    u = component["usage"]
    counts = (f": {component['requests']} request(s), {u['calls']} call(s) "
              f"(at most {component.get('calls_allowed', '?')}), {u['tokens']} tokens, "
              f"{component['latency_s']:.2f} s")
    parts: list[str | tuple[str, str]] = [literal(component["service"]), counts]
    if u.get("cached_calls"):
        parts.append(f", {u['cached_calls']} from the response cache")
    if component["retried"]:
        parts.append((f", {component['retried']} retried on another replica", "yellow"))
    if component["failed"]:
        parts.append((f", {len(component['failed'])} failed", "red"))
    c_node = node.add(_line(*parts))
    for failure in component["failed"]:
        c_node.add(_line((snippet(failure), "red")))
    for problem in component["problems"]:
        c_node.add(_line((snippet(problem), "yellow")))
    for note in component.get("notes", []):
        c_node.add(_line((snippet(f"{note.get('code')}: {note.get('detail')}"), "yellow")))
    for record in component["parse"]:
        if record.get("fallback"):
            c_node.add(_line((snippet(f"fallback: {record['fallback'].replace('_', ' ')} ({record['detail']})"),
                              "yellow")))


def print_answer(answer: Answer, *, trace: bool = False, console: Console | None = None) -> None:
    console = console or Console()
    if trace and answer.trace:
        console.print(trace_tree(answer))
        console.print()
    if answer.stopped and not trace:
        console.print(Text(f"(stopped early: {literal(str(answer.stopped.get('reason')))})",
                           style="yellow"))
    console.print(Text(literal(answer.text)), highlight=False)
