"""Where trials run: on the deployed agent mesh, or in this process.

``MeshRunner`` is the production path: it deploys the services a trial needs
(``Deployment.ensure``) and sends whole queries to the ``orchestrator`` service
(``ViaBroker``), evaluated with the eval API. ``InProcessRunner`` runs the same
orchestrator over agents built in this process (``InProcessCaller``): no broker, no
processes; for studies (``perf/search_efficiency.py``) that need many evaluations fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from itas.benchmarks import Question
from itas.client import AsyncClient
from itas.orchestrator.runner import Caller, Orchestrator, QueryRunner, ViaBroker
from itas.search.deploy import Deployment
from itas.search.evaluation import measure
from itas.search.store import Measurement
from itas.spec import Architecture


class MeshRunner:
    """``results_dir``: one JSONL of answered questions per architecture, so an evaluation
    cut off by a kill resumes with the questions it had not answered."""

    def __init__(self, deployment: Deployment, client: AsyncClient, *, concurrency: int,
                 timeout_s: float, results_dir: Path | None = None,
                 oracle_tests: bool = False) -> None:
        self.deployment = deployment
        self.runner: QueryRunner = ViaBroker(client, timeout=timeout_s)
        self.concurrency = concurrency
        self.results_dir = results_dir
        self.oracle_tests = oracle_tests
        if results_dir is not None:
            results_dir.mkdir(parents=True, exist_ok=True)

    async def prepare(self, archs: Sequence[Architecture]) -> None:
        await self.deployment.ensure(s for arch in archs for s in arch.services)

    async def measure(self, arch: Architecture, questions: Sequence[Question]) -> Measurement:
        path = None if self.results_dir is None else self.results_dir / f"{arch.name}.jsonl"
        return await measure(arch, questions, self.runner, concurrency=self.concurrency,
                             results_path=path, oracle_tests=self.oracle_tests)


class InProcessRunner:
    """Over an open ``InProcessCaller`` (or any caller) that serves every service needed."""

    def __init__(self, caller: Caller, *, concurrency: int, oracle_tests: bool = False) -> None:
        self.runner: QueryRunner = Orchestrator(caller)
        self.concurrency = concurrency
        self.oracle_tests = oracle_tests

    async def prepare(self, archs: Sequence[Architecture]) -> None:
        """Nothing to start: the caller built its agents when it opened."""

    async def measure(self, arch: Architecture, questions: Sequence[Question]) -> Measurement:
        return await measure(arch, questions, self.runner, concurrency=self.concurrency,
                             oracle_tests=self.oracle_tests)
