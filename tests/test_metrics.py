"""The broker's Prometheus endpoint, scraped over HTTP while real traffic flows.

Each check compares two scrapes around traffic the test itself sent, so a counter that
does not move (or moves by the wrong amount) fails.
"""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from itas import protocol as P
from itas.client import Client
from itas.errors import RemoteError
from tests.helpers import FAST_HEARTBEAT, REPO, Processes, wait_for_workers

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=5.0)
    response.raise_for_status()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def metrics_broker(procs: Processes) -> tuple[str, str]:
    broker = procs.broker("tcp://127.0.0.1:0", "--metrics-port", "0")
    assert broker.proc.stdout is not None
    line = broker.proc.stdout.readline()
    match = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", line)
    assert match, line
    return broker.endpoint, match.group(1)


def test_counters_and_gauges_move_with_the_traffic_sent(procs: Processes) -> None:
    endpoint, url = metrics_broker(procs)
    procs.agent(endpoint, "echo", {"credit": 7})
    wait_for_workers(endpoint, "echo", 1)
    before = scrape(url)
    assert value(before, "itas_broker_up") == 1
    assert value(before, "itas_broker_workers", service="echo") == 1
    assert value(before, "itas_broker_credit", service="echo") == 7
    with Client(endpoint, heartbeat_interval=FAST_HEARTBEAT) as client:
        for i in range(5):
            assert client.request("echo", {"n": i}) == {"n": i}
        for _ in range(2):
            with pytest.raises(RemoteError):
                client.request("echo", {"fail": "on purpose"})
    # A hostile peer: a frame that is no itas message, dropped as malformed.
    context = zmq.Context()
    try:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.connect(endpoint)
        sock.send_multipart([b"not itas", b"x"])
        sock.close()
        with Client(endpoint) as client:  # the status round trip orders it after the junk
            client.status()
    finally:
        context.term()
    after = scrape(url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("itas_broker_events_total", event="dispatched") == 7
    assert moved("itas_broker_events_total", event="replied") == 7
    assert moved("itas_broker_request_seconds_count", service="echo", outcome="reply") == 5
    assert moved("itas_broker_request_seconds_count", service="echo", outcome="error") == 2
    assert moved("itas_broker_dropped_total", reason="malformed") == 1
    assert moved("itas_broker_dropped_total", reason="overloaded") == 0
    seconds = moved("itas_broker_request_seconds_sum", service="echo", outcome="reply")
    assert 0 < seconds < 5
    assert value(after, "itas_broker_inflight", service="echo") == 0
    assert value(after, "itas_broker_waiting", service="echo") == 0


def test_in_flight_and_waiting_show_while_requests_run(procs: Processes) -> None:
    """One slow worker of credit 1 and three requests: one in flight, two waiting."""
    endpoint, url = metrics_broker(procs)
    procs.agent(endpoint, "sleep", {"seconds": 3.0, "credit": 1})
    wait_for_workers(endpoint, "sleep", 1)
    context = zmq.Context()
    try:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        for i in range(3):
            sock.send_multipart([P.REQUEST, P.request_meta(b"k" * 15 + bytes([i]), "sleep",
                                                           20_000), P.pack({})])
        for _ in range(50):  # the three reach the broker within a few scrapes
            samples = scrape(url)
            if value(samples, "itas_broker_waiting", service="sleep") == 2:
                break
        assert value(samples, "itas_broker_inflight", service="sleep") == 1
        assert value(samples, "itas_broker_waiting", service="sleep") == 2
    finally:
        context.destroy(linger=0)  # closes the socket too, even after a failed assertion


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7"])
def test_a_public_metrics_address_needs_the_explicit_flag(host: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "itas", "broker", "--bind", "tcp://127.0.0.1:0",
         "--metrics-port", "0", "--metrics-host", host],
        check=False, capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode != 0
    assert "--metrics-host" in result.stderr and "--metrics-allow-remote" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
