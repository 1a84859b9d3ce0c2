"""What the sandbox's isolation costs per run: each tier against ``unconfined`` in the same run.

Every round runs the same small HumanEval-like candidate (a function and three asserts)
once in each tier that works here, in a shuffled order, so load on the machine hits all
tiers alike. ``per_run_s`` is the median wall time of one ``run_tests`` call (interpreter
start, isolation, tests, teardown); ``ratio`` divides it by the unconfined tier's median
(rlimits and seccomp only, no namespaces). The first run of each tier (its probe) is not
counted.

    python perf/sandbox.py --json [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

import anyio

from itas.errors import ConfigError
from itas.execution.sandbox import SANDBOX_ENV, Tier, run_tests

CODE = "def add(a, b):\n    return a + b\n"
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(0, 0) == 0"]


async def one(tier: Tier) -> float:
    os.environ[SANDBOX_ENV] = str(tier)
    started = time.perf_counter()
    result = await run_tests(CODE, TESTS, timeout_s=30)
    elapsed = time.perf_counter() - started
    if not result.all_passed:
        raise RuntimeError(f"{tier}: {result}")
    return elapsed


async def measure(rounds: int) -> dict[str, object]:
    tiers = []
    for tier in Tier:
        try:
            await one(tier)  # the probe, and a warm page cache
        except ConfigError as exc:
            print(f"skipping {tier}: {exc}")
            continue
        tiers.append(tier)
    times: dict[Tier, list[float]] = {tier: [] for tier in tiers}
    rng = random.Random(0)
    for _ in range(rounds):
        order = list(tiers)
        rng.shuffle(order)
        for tier in order:
            times[tier].append(await one(tier))
    base = statistics.median(times[Tier.UNCONFINED])
    return {
        "rounds": rounds,
        "as_root": os.geteuid() == 0,
        "load_1min": os.getloadavg()[0],
        "tiers": {str(tier): {"per_run_s": round(statistics.median(samples), 4),
                              "ratio": round(statistics.median(samples) / base, 2)}
                  for tier, samples in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print only the JSON figures")
    args = parser.parse_args()
    figures = anyio.run(measure, args.rounds)
    print(json.dumps(figures, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
