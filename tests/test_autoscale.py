"""Autoscaling on queue depth: the rule alone, then a real pool under a load step.

The real test runs ``itas agents --pool FILE`` (the local process pool) against a broker,
sends a burst to a fixed-latency sleep service, and checks that it grows from its
minimum, serves every query with its own answer, and shrinks back once idle while a
trickle of queries keeps running on the replicas being drained.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import anyio
import pytest
import yaml

from itas.agents.autoscale import Autoscaler, desired_replicas
from itas.agents.pool import Autoscale, PoolEntry, parse_pool
from itas.client import AsyncClient, Client
from itas.errors import ConfigError
from tests.helpers import FAST_HEARTBEAT, Processes, wait_for_workers


class Counts:
    def __init__(self, **counts: int) -> None:
        self.counts = dict(counts)

    def replicas(self, index: int) -> int:
        return self.counts[str(index)]

    async def scale(self, index: int, replicas: int) -> None:
        self.counts[str(index)] = replicas


def test_desired_replicas_follow_load_within_bounds() -> None:
    policy = Autoscale(min=1, max=5, target_waiting=2)
    rng = random.Random(14)
    for _ in range(500):
        workers = rng.randint(0, 6)
        credit = rng.randint(1, 4)
        service = {"workers": workers, "credit": workers * credit,
                   "waiting": rng.randint(0, 40), "inflight": rng.randint(0, workers * credit)}
        wanted = desired_replicas(policy, service, credit)
        assert policy.min <= wanted <= policy.max
        demand = service["waiting"] + service["inflight"]
        # enough replicas for the load, unless capped; no more than one beyond it
        if wanted < policy.max:
            assert wanted * (credit + policy.target_waiting) >= demand
        if wanted > policy.min:
            assert (wanted - 1) * (credit + policy.target_waiting) < demand
    assert desired_replicas(policy, None, 1) == 1


def test_shrinking_waits_for_the_load_to_stay_low() -> None:
    entries = [PoolEntry("sleep", 1, {"credit": 1},
                         Autoscale(min=1, max=4, target_waiting=1, scale_down_after_s=5))]
    counts = Counts(**{"0": 1})
    scaler = Autoscaler(entries, counts, lambda: None)  # type: ignore[arg-type, return-value]
    busy = {"services": {"sleep": {"workers": 1, "credit": 1, "waiting": 9, "inflight": 1}}}
    idle = {"services": {"sleep": {"workers": 4, "credit": 4, "waiting": 0, "inflight": 0}}}
    assert scaler.decide(0.0, busy) == {0: 4}  # at once, capped at max
    counts.counts["0"] = 4
    assert scaler.decide(1.0, idle) == {}
    assert scaler.decide(3.0, busy) == {}  # load came back: the low window starts again
    assert scaler.decide(4.0, idle) == {}
    assert scaler.decide(8.9, idle) == {}
    assert scaler.decide(9.0, idle) == {0: 1}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("autoscale", {"min": 3, "max": 2}, "max (2) is below min (3)"),
    ("autoscale", {"min": 1, "max": 2, "target": 1}, "unknown field(s) ['target']"),
    ("autoscale", {"min": -1}, "autoscale.min: must be an integer >= 0"),
    ("placement", {"num_gpus": "one"}, "placement.num_gpus: must be a number"),
    ("placement", {"resources": {"zone_a": -1}}, "placement.resources.zone_a"),
    ("placement", {"max_restarts": 1.5}, "placement.max_restarts: must be an integer"),
])
def test_bad_autoscale_and_placement_fields_are_named(field: str, value: object,
                                                      message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_pool({"agents": [{"kind": "sleep", field: value}]}, "pool.yaml")
    assert message in str(caught.value) and "pool.yaml: agents[1]" in str(caught.value)


def test_an_autoscaled_entry_starts_at_its_minimum_and_replicas_must_fit() -> None:
    (entry,) = parse_pool({"agents": [{"kind": "sleep", "autoscale": {"min": 2, "max": 3}}]})
    assert entry.replicas == 2
    with pytest.raises(ConfigError, match="outside autoscale bounds 2..3"):
        parse_pool({"agents": [{"kind": "sleep", "replicas": 5,
                                "autoscale": {"min": 2, "max": 3}}]})


@pytest.mark.anyio
async def test_load_grows_the_service_and_idle_shrinks_it_losing_nothing(
        procs: Processes, tmp_path: Path) -> None:
    broker = procs.broker()
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump({"agents": [{
        "kind": "sleep", "settings": {"seconds": 0.3, "credit": 1},
        "autoscale": {"min": 1, "max": 4, "target_waiting": 1, "scale_down_after_s": 1.0},
    }]}))
    agents = procs.spawn("agents", "--pool", str(pool), "--broker", broker.endpoint,
                         "--autoscale-interval", "0.2")
    wait_for_workers(broker.endpoint, "sleep", 1)
    answers: dict[str, object] = {}
    seen_workers: list[int] = []

    async def ask(client: AsyncClient, tag: str) -> None:
        answers[tag] = (await client.request("sleep", {"tag": tag}))["tag"]

    async with AsyncClient(broker.endpoint, timeout=60,
                           heartbeat_interval=FAST_HEARTBEAT) as client:
        async def watch() -> None:
            while True:
                info = await client.status()
                seen_workers.append(info["services"].get("sleep", {}).get("workers", 0))
                await anyio.sleep(0.1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            async with anyio.create_task_group() as burst:
                for i in range(40):
                    burst.start_soon(ask, client, f"burst-{i}")
            peak = max(seen_workers)
            # A trickle, one query at a time, while the idle replicas drain away.
            deadline = time.monotonic() + 30
            i = 0
            while time.monotonic() < deadline:
                await ask(client, f"trickle-{i}")
                i += 1
                if seen_workers[-1] == 1 and i >= 5:
                    break
            tg.cancel_scope.cancel()
        status = await client.status()
    assert peak >= 3, seen_workers
    assert seen_workers[-1] == 1, seen_workers
    assert answers == {tag: tag for tag in answers}
    assert len([t for t in answers if t.startswith("burst")]) == 40
    counters = status["counters"]
    assert counters.get("workers_lost", 0) == 0, counters
    assert counters["workers_left"] >= 2, counters  # drained replicas said goodbye
    with Client(broker.endpoint) as sync:
        assert sync.status()["services"]["sleep"]["workers"] == 1
    agents.send_signal(signal.SIGTERM)  # stops the autoscaler, then its client, cleanly
    assert agents.wait(timeout=30) == 0
    assert agents.stderr is not None and "Traceback" not in agents.stderr.read()


def test_ray_without_ray_installed_says_how_to_install(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    import sys

    from itas.agents.ray_placement import RayPool

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'itas\[ray\]'"):
        RayPool([PoolEntry("echo")], "tcp://127.0.0.1:5555", "127.0.0.1:6379")


def test_placement_maps_onto_ray_actor_options() -> None:
    from itas.agents.ray_placement import actor_options

    (entry,) = parse_pool({"agents": [{"kind": "echo", "placement": {
        "num_cpus": 0.5, "num_gpus": 1, "resources": {"zone_a": 1}, "labels": {"tier": "gpu"},
        "spread": True, "max_restarts": 3}}]})
    options = actor_options(entry.placement)
    assert {k: options[k] for k in ("num_cpus", "num_gpus", "resources", "label_selector",
                                    "scheduling_strategy", "max_restarts")} == {
        "num_cpus": 0.5, "num_gpus": 1.0, "resources": {"zone_a": 1.0},
        "label_selector": {"tier": "gpu"}, "scheduling_strategy": "SPREAD", "max_restarts": 3}
    (plain,) = parse_pool({"agents": [{"kind": "echo"}]})
    assert "resources" not in actor_options(plain.placement)
    assert actor_options(plain.placement)["max_restarts"] == -1


@pytest.mark.parametrize(("address", "message"), [
    ("127.0.0.1:1", "--ray 127.0.0.1:1: no Ray cluster answers there"),
    ("nohost", "expected HOST:PORT of the Ray head"),
])
def test_a_wrong_ray_address_fails_at_once_in_one_line(address: str, message: str) -> None:
    import subprocess
    import sys

    from tests.helpers import REPO

    result = subprocess.run(
        [sys.executable, "-m", "itas", "agents", "--ray", address, "--pool",
         str(REPO / "configs" / "pools" / "echo.yaml"), "--broker", "tcp://127.0.0.1:5999"],
        check=False, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
