"""Terminal views of answers and traces (rich), kept apart from the data they show."""

from __future__ import annotations

from rich.console import Console
from rich.tree import Tree

from itas.query import Answer

SNIPPET_CHARS = 160


def _snippet(text: str | None) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"


def trace_tree(answer: Answer) -> Tree:
    """The flow of one query: layers, the calls each component made, the candidates left."""
    usage = answer.usage
    root = Tree(f"[bold]{answer.architecture}[/] — {usage.get('calls', 0)} calls, "
                f"{usage.get('tokens', 0)} tokens, ${usage.get('cost_usd', 0):.4f}, "
                f"{answer.latency_s:.2f} s")
    for layer in (answer.trace or {}).get("layers", []):
        node = root.add(f"[bold]layer {layer['layer']}[/] ({layer['latency_s']:.2f} s) → "
                        f"{len(layer['candidates'])} candidate(s)")
        for component in layer["components"]:
            u = component["usage"]
            line = (f"{component['service']}: {component['requests']} request(s), "
                    f"{u['calls']} call(s), {u['tokens']} tokens, "
                    f"{component['latency_s']:.2f} s")
            if component["retried"]:
                line += f", [yellow]{component['retried']} retried on another replica[/]"
            if component["failed"]:
                line += f", [red]{len(component['failed'])} failed[/]"
            c_node = node.add(line)
            for failure in component["failed"]:
                c_node.add(f"[red]{_snippet(failure)}[/]")
            for problem in component["problems"]:
                c_node.add(f"[yellow]{_snippet(problem)}[/]")
            fallbacks = [p for p in component["parse"] if p.get("fallback")]
            if fallbacks:
                c_node.add(f"[yellow]{len(fallbacks)} unparsed output(s): "
                           f"{_snippet(fallbacks[0]['fallback'])}[/]")
        for candidate in layer["candidates"]:
            marks = []
            for key in ("score", "verdict", "tests_passed"):
                if candidate.get(key) is not None:
                    marks.append(f"{key}={candidate[key]}")
            cand = node.add(f"[cyan]{candidate['id']}[/] ({candidate.get('model', '?')}"
                            f"{', ' + ', '.join(marks) if marks else ''}): "
                            f"{_snippet(candidate.get('text'))}")
            if candidate.get("critique"):
                cand.add(f"[dim]critique: {_snippet(candidate['critique'])}[/]")
        if layer.get("tests"):
            node.add(f"{len(layer['tests'])} unit test(s) written")
    return root


def print_answer(answer: Answer, *, trace: bool = False, console: Console | None = None) -> None:
    console = console or Console()
    if trace and answer.trace:
        console.print(trace_tree(answer))
        console.print()
    console.print(answer.text, markup=False, highlight=False)
