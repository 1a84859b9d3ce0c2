"""A small search with the embedded model: ranking, BO trials and held-out re-scoring on SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from itas.agents.providers.local import llama_cpp_available
from itas.search.config import parse_search_config
from itas.search.run import run_search
from itas.spec import load_architecture
from tests.helpers import DATA_DIR, REPO

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.anyio,
    pytest.mark.skipif(not llama_cpp_available(),
                       reason="llama-cpp-python is not installed: pip install 'itas[local]'"),
]
CONFIG = REPO / "configs" / "search" / "local_gsm8k.yaml"


async def test_search_on_the_embedded_model_completes(tmp_path: Path) -> None:
    data = yaml.safe_load(CONFIG.read_text())
    data["benchmark"]["data_dir"] = str(DATA_DIR)
    config = parse_search_config(data, str(CONFIG))
    summary = await run_search(config, tmp_path, resume=False, show_progress=False)
    best = load_architecture(tmp_path / "best.yaml")
    assert {c.service_name for _, _, c in best.components()} <= {
        "generator@local:smollm2", "ranker@local:smollm2", "fuser@local:smollm2"}
    assert all(c.max_tokens == 48 for _, _, c in best.components())
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["ranking"][0]["model"] == "smollm2"
    assert written["calls"]["made"] > 0
    assert written["heldout"] and 0.0 <= written["heldout"][0]["heldout_score"] <= 1.0
    assert summary["best"]["key"] == best.name
    records = [json.loads(line) for line in (tmp_path / "trials.jsonl").read_text()
               .splitlines()[1:]]
    trials = [r for r in records if r["kind"] == "trial"]
    assert trials and all(r["result"]["errors"] == 0 and r["result"]["n"] == 3 for r in records)
