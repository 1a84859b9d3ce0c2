"""Prices and unknown costs: the shipped price map is well-formed, dated and sourced, matches
its source file when that file is at hand, picks the vendor by host (never by a look-alike
host), and a model without a price shows as "unknown" in the eval table, never $0.0000."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from itas.agents.pool import PoolEntry
from itas.agents.providers.prices import PRICES, mapped_price, price_for, price_map, vendor_of
from itas.benchmarks import load_benchmark
from itas.evaluation.evaluate import EvalSummary, evaluate
from itas.evaluation.report import cost_text, print_report
from itas.orchestrator.inprocess import InProcessCaller
from itas.orchestrator.runner import Orchestrator
from itas.search.report import cost_text as search_cost_text
from itas.spec import parse_architecture
from tests.helpers import DATA_DIR
from tests.servers.fake_llm import FakeLLMServer

#: The source snapshot the map names, where a session fetched it (``fetch`` tool).
SOURCE_MIRROR = Path("/work/.mirror/RoCry+llm-api-price/repo")
HOSTS = {"together": "https://api.together.xyz/v1", "groq": "https://api.groq.com/openai/v1",
         "gemini": "https://generativelanguage.googleapis.com/v1beta/openai/",
         "bedrock": "https://bedrock-runtime.us-east-1.amazonaws.com/openai/v1"}


def test_the_map_is_dated_sourced_and_sane() -> None:
    data = price_map()
    assert data["as_of"] == "2026-07-24" and "LiteLLM" in data["source"]
    assert set(data["vendors"]) == set(HOSTS)
    for vendor in data["vendors"].values():
        assert vendor["models"]
        for model, (cost_in, cost_out) in vendor["models"].items():
            assert model and not model.startswith(("together_ai/", "groq/", "gemini/"))
            assert 0 < cost_in <= 100 and 0 < cost_out <= 200, model


def test_every_entry_is_found_at_its_vendor_and_only_there() -> None:
    data = price_map()["vendors"]
    for vendor, url in HOSTS.items():
        for model, (cost_in, cost_out) in data[vendor]["models"].items():
            if model in PRICES:
                continue  # the vendor table wins (Anthropic ids on Bedrock are not)
            price = price_for(model, url)
            assert price is not None and (price.input_per_mtok, price.output_per_mtok) == (
                cost_in, cost_out), (vendor, model)
            assert price_for(model, "http://127.0.0.1:8000/v1") is None  # someone else's
    shared = set(data["groq"]["models"]) & set(data["together"]["models"])
    assert "openai/gpt-oss-20b" in shared
    assert mapped_price("openai/gpt-oss-20b") is None  # they disagree: unknown, not a guess
    assert price_for("llama-3.3-70b-versatile") is not None  # only Groq lists it


@pytest.mark.parametrize("url, vendor", [
    ("https://api.groq.com/openai/v1", "groq"), ("https://API.GROQ.COM/v1", "groq"),
    ("https://api.groq.com.evil.example/v1", None), ("https://evilapi.groq.com/v1", None),
    ("https://bedrock-runtime.eu-west-1.amazonaws.com", "bedrock"),
    ("https://s3.amazonaws.com/x", None), ("http://localhost:8080/v1", None),
    ("https://generativelanguage.googleapis.com/v1beta", "gemini"), ("", None), (None, None),
    ("not a url", None)])
def test_vendor_is_chosen_by_host_only(url: str | None, vendor: str | None) -> None:
    assert vendor_of(url) == vendor


@pytest.mark.skipif(not SOURCE_MIRROR.exists(), reason="the map's source snapshot is not here")
def test_the_map_matches_its_source_file() -> None:
    commit = price_map()["source"].split("commit ")[1].split()[0]
    raw = subprocess.run(["git", "-C", str(SOURCE_MIRROR), "show",
                          f"{commit}:model_prices_and_context_window.json"],
                         capture_output=True, check=True).stdout
    source = json.loads(raw)
    prefixes = {"together": "together_ai/", "groq": "groq/", "gemini": "gemini/",
                "bedrock": ""}
    for vendor, data in price_map()["vendors"].items():
        for model, (cost_in, cost_out) in data["models"].items():
            entries = [source[k] for k in (prefixes[vendor] + model, model) if k in source]
            assert any(round(e.get("input_cost_per_token", 0) * 1e6, 6) == cost_in
                       and round(e.get("output_cost_per_token", 0) * 1e6, 6) == cost_out
                       for e in entries), (vendor, model)


def test_cost_text_never_shows_an_unknown_cost_as_free() -> None:
    for show in (cost_text, search_cost_text):
        assert show(0.0, True) == "$0.0000"
        assert show(0.0, False) == "unknown"
        assert show(0.25, False) == ">= $0.2500"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLMServer]:
    monkeypatch.setenv("ITAS_TEST_KEY", "sk-test")
    monkeypatch.setenv("ITAS_CACHE", "off")
    with FakeLLMServer(reply_text="The answer is 3.") as fake:
        yield fake


@pytest.mark.anyio
async def test_an_unpriced_model_is_unknown_in_records_summary_and_table(
        server: FakeLLMServer) -> None:
    settings = {"provider": "openai", "model": "house-model", "base_url": server.url + "/v1",
                "api_key_env": "ITAS_TEST_KEY"}
    arch = parse_architecture({"name": "house", "layers": [[{
        "technique": "generator", "provider": "openai", "model": "house-model",
        "base_url": settings["base_url"], "api_key_env": "ITAS_TEST_KEY"}]]}, "test")
    questions = load_benchmark("gsm8k", limit=3, data_dir=DATA_DIR)
    async with InProcessCaller([PoolEntry("generator", 1, settings)]) as caller:
        summary = await evaluate(arch, questions, Orchestrator(caller))
    assert summary.errors == 0 and summary.cost_usd == 0.0 and summary.cost_known is False
    assert all(r["usage"]["cost_known"] is False for r in summary.results)
    out = io.StringIO()
    print_report([summary], "house", Console(file=out, width=200))
    table = out.getvalue()
    assert "unknown" in table and "$0.0000" not in table
    assert "no known price" in table
    priced = EvalSummary.from_results(arch, "gsm8k", [
        {**r, "cost_usd": 0.01, "usage": {**r["usage"], "cost_known": True}}
        for r in summary.results])
    assert priced.cost_known and cost_text(priced.cost_usd, priced.cost_known) == "$0.0300"
