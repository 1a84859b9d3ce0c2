"""Human-readable rendering of the broker's status reply."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def render_status(info: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    services = Table(title=f"services (broker epoch {info.get('epoch', '?')})")
    for column in ("service", "workers", "credit", "in flight", "waiting"):
        services.add_column(column, justify="left" if column == "service" else "right")
    for name, s in info.get("services", {}).items():
        services.add_row(name, str(s["workers"]), str(s["credit"]), str(s["inflight"]),
                         str(s["waiting"]))
    console.print(services)
    workers = Table(title="workers")
    for column in ("name", "service", "credit", "in flight"):
        workers.add_column(column)
    for w in info.get("workers", []):
        workers.add_row(w["name"], w["service"], str(w["credit"]), str(w["inflight"]))
    console.print(workers)
    counters = info.get("counters", {})
    console.print("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(counters.items())))
