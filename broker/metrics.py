"""Prometheus metrics for operators, read from the broker's own state.

Opt-in (``itas broker --metrics-port N``) and served by the official
``prometheus_client`` on its own HTTP thread. That thread never touches the
broker's state: a scrape asks the broker loop for a snapshot (``status()``) and
waits for it, and the loop answers at its next tick (every ``TICK_S``), so the
numbers are consistent and the routing code needs no locks. The only hook in the
hot path is the latency histogram, observed when a worker's reply is forwarded.

What is exported (``itas_broker_`` prefix):

- per service: ``waiting``, ``inflight``, ``workers``, ``credit`` (gauges) and
  ``request_seconds`` (histogram: time from the request's arrival to its reply,
  labelled ``outcome`` reply/error);
- ``events_total{event}``: requests, dispatched, replied, retried, workers joined,
  left and lost, and the rest of the broker's counters that are not drops;
- ``dropped_total{reason}``: malformed, oversize, stale, mismatch, overloaded,
  expired, undeliverable, cancelled; each a reason a request or reply ended
  without the normal path.

The endpoint binds to loopback unless the operator says otherwise: the metrics name
the services and workers of the mesh, which is no one else's business.
"""

from __future__ import annotations

import ipaddress
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from itas.errors import ConfigError

try:  # an optional extra: itas[metrics]
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError:  # pragma: no cover - exercised only without the extra
    prometheus_client = None  # type: ignore[assignment]
    Collector = object  # type: ignore[assignment,misc]

SNAPSHOT_TIMEOUT_S = 2.0
#: Buckets for request latency: LLM calls span milliseconds (cached) to minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 120.0, 300.0)
#: Broker counters that count a request or reply leaving the normal path.
DROP_REASONS = {
    "dropped_malformed": "malformed", "dropped_oversize": "oversize",
    "dropped_stale": "stale", "dropped_mismatch": "mismatch", "overloaded": "overloaded",
    "expired": "expired", "undeliverable": "undeliverable", "cancelled": "cancelled",
}
INSTALL_HINT = "broker metrics need prometheus_client: pip install 'itas[metrics]'"


def check_metrics_host(host: str, *, allow_remote: bool) -> None:
    """Refuse a non-loopback metrics address unless the operator asked for it."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError as exc:
        raise ConfigError(f"--metrics-host {host!r}: not an IP address or 'localhost'") from exc
    if not loopback and not allow_remote:
        raise ConfigError(f"--metrics-host {host}: not a loopback address; the metrics name "
                          "every service and worker, so add --metrics-allow-remote to serve "
                          "them beyond this machine")


class Snapshots:
    """Hands a scrape thread one ``status()`` taken on the broker loop's thread."""

    def __init__(self) -> None:
        self._asks: queue.SimpleQueue[queue.SimpleQueue[dict[str, Any]]] = queue.SimpleQueue()

    def take(self, timeout: float = SNAPSHOT_TIMEOUT_S) -> dict[str, Any] | None:
        """Called by the scraping thread; None if the loop did not answer in time."""
        answer: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._asks.put(answer)
        try:
            return answer.get(timeout=timeout)
        except queue.Empty:
            return None

    def serve(self, status: Callable[[], dict[str, Any]]) -> None:
        """Called by the broker loop at each tick: answer every waiting scrape."""
        while True:
            try:
                answer = self._asks.get_nowait()
            except queue.Empty:
                return
            answer.put(status())


class BrokerCollector(Collector):
    """Turns one broker status snapshot into metric families at each scrape."""

    def __init__(self, snapshots: Snapshots) -> None:
        self._snapshots = snapshots

    def collect(self) -> Iterator[Any]:
        info = self._snapshots.take()
        if info is None:  # the loop is stuck: say so rather than serve stale numbers
            yield GaugeMetricFamily("itas_broker_up", "1 if the broker loop answered", 0)
            return
        yield GaugeMetricFamily("itas_broker_up", "1 if the broker loop answered", 1)
        gauges = {
            "waiting": "Requests waiting for a worker",
            "inflight": "Requests being served by a worker",
            "workers": "Workers connected",
            "credit": "Requests the service's workers accept at once",
        }
        for field, doc in gauges.items():
            family = GaugeMetricFamily(f"itas_broker_{field}", doc, labels=["service"])
            for name, service in info["services"].items():
                family.add_metric([name], service[field])
            yield family
        events = CounterMetricFamily("itas_broker_events", "Broker events by kind",
                                     labels=["event"])
        drops = CounterMetricFamily("itas_broker_dropped",
                                    "Requests and replies that left the normal path, by reason",
                                    labels=["reason"])
        counters = info["counters"]
        for counter, reason in DROP_REASONS.items():
            drops.add_metric([reason], counters.get(counter, 0))
        for counter, value in sorted(counters.items()):
            if counter not in DROP_REASONS:
                events.add_metric([counter], value)
        yield events
        yield drops


class BrokerMetrics:
    """The registry, the latency histogram and the HTTP endpoint of one broker."""

    def __init__(self) -> None:
        if prometheus_client is None:
            raise ConfigError(INSTALL_HINT)
        self.registry = prometheus_client.CollectorRegistry()
        self.snapshots = Snapshots()
        self.registry.register(BrokerCollector(self.snapshots))
        self._latency = prometheus_client.Histogram(
            "itas_broker_request_seconds", "Time from a request's arrival to its reply",
            ["service", "outcome"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self._children: dict[tuple[str, bool], Any] = {}
        self._http: Any = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def observe(self, service: str, ok: bool, seconds: float) -> None:
        """Called by the broker loop for each forwarded reply (cheap: a cached child)."""
        child = self._children.get((service, ok))
        if child is None:
            child = self._children[(service, ok)] = self._latency.labels(
                service, "reply" if ok else "error")
        child.observe(seconds)

    def serve(self, host: str, port: int) -> str:
        """Start the HTTP endpoint; returns its URL (port 0 picks a free one)."""
        try:
            self._http, self._thread = prometheus_client.start_http_server(
                port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"--metrics-port {port}: cannot listen on {host} "
                              f"({exc.strerror})") from exc
        bound = self._http.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound}/metrics"
        return self.url

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
