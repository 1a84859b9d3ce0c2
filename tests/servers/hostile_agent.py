"""Technique agents that break the contract on purpose, as a real process behind the broker.

``python -m tests.servers.hostile_agent --broker ENDPOINT --technique generator MODE...`` serves
``<technique>@sim:hostile-<mode>`` for every MODE (or, with ``--service NAME`` and one MODE,
``NAME``: a bad replica beside good ones), each answering every request the way its
mode says (see ``MODES``). The orchestrator must turn each into one failed call with a trace
entry saying what was wrong, and go on with the layer.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import anyio

from itas.agents.base import Agent
from itas.agents.runtime import Worker
from itas.errors import AgentError


def _usage(**extra: Any) -> dict[str, Any]:
    return {"calls": 1, "prompt_tokens": 1, "completion_tokens": 1, **extra}


def _candidates(body: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    given = body.get("candidates") or [{"id": "new", "text": "fresh"}]
    return [{**c, **extra} for c in given]


MODES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "not_a_map": lambda body: ["candidates"],
    "missing_text": lambda body: {"candidates": [{"id": "x"}], "usage": _usage()},
    "missing_usage": lambda body: {"candidates": _candidates(body)},
    "text_not_a_string": lambda body: {"candidates": _candidates(body, text=42),
                                       "usage": _usage()},
    "huge_text": lambda body: {"candidates": _candidates(body, text="x" * 1_100_000),
                               "usage": _usage()},
    "extra_field": lambda body: {"candidates": _candidates(body, sneaky=True),
                                 "usage": _usage()},
    "usage_not_a_number": lambda body: {"candidates": _candidates(body),
                                        "usage": _usage(calls="many")},
    "negative_usage": lambda body: {"candidates": _candidates(body),
                                    "usage": _usage(prompt_tokens=-5)},
    "more_calls_than_allowed": lambda body: {"candidates": _candidates(body),
                                             "usage": _usage(calls=10_000)},
    "two_candidates": lambda body: {"candidates": [{"id": "a", "text": "one"},
                                                   {"id": "b", "text": "two"}],
                                    "usage": _usage()},
    "unknown_candidate": lambda body: {"candidates": [{"id": "not-sent", "text": "?"}],
                                       "usage": _usage()},
    "score_out_of_range": lambda body: {"candidates": _candidates(body, score=7.5),
                                        "usage": _usage()},
    "error_reply": lambda body: (_ for _ in ()).throw(AgentError("provider_error", "nope")),
}


class HostileAgent(Agent):
    def __init__(self, technique: str, mode: str, service: str | None = None) -> None:
        self.service = service or f"{technique}@sim:hostile-{mode}"
        self.credit = 16
        self.answer = MODES[mode]

    async def handle(self, body: Any) -> Any:
        return self.answer(body)


async def main(broker: str, technique: str, modes: list[str], service: str | None) -> None:
    async with anyio.create_task_group() as tg:
        for mode in modes:
            worker = Worker(HostileAgent(technique, mode, service), broker,
                            heartbeat_interval=0.2)
            tg.start_soon(lambda w=worker: w.run(handle_signals=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--technique", required=True)
    parser.add_argument("--service", help="serve this name instead (one MODE only)")
    parser.add_argument("modes", nargs="+", choices=sorted(MODES))
    args = parser.parse_args()
    if args.service and len(args.modes) != 1:
        parser.error("--service takes exactly one MODE")
    try:
        anyio.run(main, args.broker, args.technique, args.modes, args.service)
    except KeyboardInterrupt:
        pass
