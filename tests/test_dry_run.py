"""Deploy from a spec and dry-run it: ``itas up --arch FILE --sim`` starts exactly the agents an
Archon config needs, on simulated models, with no pool file; ``itas ask --sim`` answers with it,
labelled simulated; ``itas ask --messages FILE`` sends a conversation. Through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from itas.deploy import simulated
from itas.spec import load_architecture
from tests.helpers import REPO

ITAS = str(Path(sys.executable).with_name("itas"))
TOGETHER = REPO / "configs" / "archon" / "gcrf_together.json"
LIMIT_S = 120


@pytest.fixture(scope="module")
def dry_stack() -> Iterator[str]:
    up = subprocess.Popen([ITAS, "up", "--arch", str(TOGETHER), "--sim", "--bind",
                           "tcp://127.0.0.1:0"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True,
                          env={k: v for k, v in os.environ.items() if "API_KEY" not in k})
    try:
        assert up.stdout is not None
        line = up.stdout.readline()
        assert line.startswith("itas up: broker"), (line, up.stderr.read() if up.stderr else "")
        assert "(simulated models)" in line
        yield line.split()[3].rstrip(";")
    finally:
        os.killpg(up.pid, signal.SIGINT)
        out, err = up.communicate(timeout=LIMIT_S)
        assert "itas up: stopped" in out and "Traceback" not in err, err


def ask(broker: str, *args: str) -> dict:
    done = subprocess.run([ITAS, "ask", *args, "--arch", str(TOGETHER), "--sim", "--broker",
                           broker, "--json", "--trace"], capture_output=True, text=True,
                          timeout=LIMIT_S, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_archon_config_runs_end_to_end_as_a_dry_run_with_no_pool_file(dry_stack: str
                                                                         ) -> None:
    answer = ask(dry_stack, "What is 6 x 7?")
    assert answer["architecture"].endswith("[simulated]")
    assert answer["text"].startswith("Simulated answer")
    services = [c["service"] for layer in answer["trace"]["layers"]
                for c in layer["components"]]
    assert services == list(simulated(load_architecture(TOGETHER)).services)
    assert all("@sim:" in s for s in services)
    # Archon's call pattern: 3 generators, one batched critic call, a ranker, a fuser
    assert answer["usage"]["calls"] == 6


def test_a_conversation_from_a_file(dry_stack: str, tmp_path: Path) -> None:
    conversation = tmp_path / "chat.json"
    conversation.write_text(json.dumps({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another one?"}]}))
    answer = ask(dry_stack, "--messages", str(conversation))
    first = answer["trace"]["layers"][0]["components"][0]["prompts"][0]
    assert [m["role"] for m in first] == ["system", "user", "assistant", "user"]
    assert first[-1]["content"] == "Another one?"


@pytest.mark.parametrize(("content", "problem"), [
    ("[]", "expected a non-empty list"),
    ('[{"role": "user", "content": 3}]', "message 1: expected"),
    ('[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]',
     "the last message must be the user's"),
    ("{not json", "not valid JSON"),
])
def test_a_bad_conversation_file_is_one_line(tmp_path: Path, content: str,
                                             problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    done = subprocess.run([ITAS, "ask", "--messages", str(path), "--broker",
                           "tcp://127.0.0.1:9"], capture_output=True, text=True,
                          timeout=LIMIT_S, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert problem in done.stderr and str(path) in done.stderr


def test_an_archon_config_is_evaluated_as_a_dry_run(dry_stack: str, tmp_path: Path) -> None:
    """``itas eval --sim`` scores the simulated architecture the dry-run stack serves, and
    every output names it as simulated."""
    from tests.helpers import DATA_DIR

    out = tmp_path / "eval"
    done = subprocess.run([ITAS, "eval", "--arch", str(TOGETHER), "--sim", "--benchmark",
                           "gsm8k", "--limit", "3", "--data-dir", str(DATA_DIR), "--broker",
                           dry_stack, "--out", str(out)], capture_output=True, text=True,
                          timeout=LIMIT_S, check=False)
    assert done.returncode == 0, done.stderr
    assert "[simulated]" in done.stdout, done.stdout
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(results) == 3
    assert all(r["architecture"].endswith("[simulated]") for r in results)


def test_eval_without_sim_names_the_real_services_it_misses(dry_stack: str,
                                                            tmp_path: Path) -> None:
    from tests.helpers import DATA_DIR

    done = subprocess.run([ITAS, "eval", "--arch", str(TOGETHER), "--benchmark", "gsm8k",
                           "--limit", "1", "--data-dir", str(DATA_DIR), "--broker", dry_stack,
                           "--out", str(tmp_path / "eval")], capture_output=True, text=True,
                          timeout=LIMIT_S, check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "no worker serves generator@openai:Qwen/Qwen2-72B-Instruct#api.together.xyz" in \
        done.stderr  # Together through its OpenAI-compatible endpoint, as Archon calls it
    assert "itas agents --arch FILE" in done.stderr and "--sim" in done.stderr


def real_search_config() -> dict:
    from tests.test_search_run import search_config

    data = search_config(search={"trials": 2, "initial_random": 2, "parallel": 2,
                                 "strategies": ["bo"], "baseline_trials": 1,
                                 "rescore_top": 1, "seed": 3})
    data["models"] = [
        {"name": "strong", "provider": "openai", "model": "gpt-4o",
         "settings": {"base_url": "https://example.invalid/v1", "api_key_env": "MY_KEY"}},
        {"name": "weak", "provider": "anthropic", "model": "gpt-4o"}]  # same model name
    return data


def test_a_simulated_search_config_keeps_no_endpoint_and_names_itself() -> None:
    from itas.search.config import parse_search_config, simulated_config

    sim = simulated_config(parse_search_config(real_search_config(), "real.yaml"))
    assert sim.name == "tiny-simulated"
    assert [(m.provider, m.model) for m in sim.models] == [
        ("sim", "openai.gpt-4o"), ("sim", "anthropic.gpt-4o")]
    assert all("base_url" not in m.settings and "api_key_env" not in m.settings
               for m in sim.models)


def test_a_search_over_real_providers_runs_as_a_dry_run(tmp_path: Path) -> None:
    import yaml

    config = tmp_path / "real.yaml"
    config.write_text(yaml.safe_dump(real_search_config()))
    out = tmp_path / "out"
    done = subprocess.run([ITAS, "search", str(config), "--sim", "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=300,
                          check=False, env={k: v for k, v in os.environ.items()
                                            if "API_KEY" not in k and k != "MY_KEY"})
    assert done.returncode == 0, done.stderr
    best = yaml.safe_load((out / "best.yaml").read_text())
    providers = {c["provider"] for layer in best["layers"] for c in layer if "provider" in c}
    assert providers == {"sim"}


def test_a_named_service_maps_to_the_sim_service_its_dry_run_serves() -> None:
    """``simulated_service`` (``itas eval --judge ... --sim``) must name exactly the service
    a sim agent of that model registers, whatever the technique, provider, model or
    endpoint (a sim judge or generator of the same name)."""
    import random

    from itas.agents.kinds import build_agent
    from itas.deploy import simulated_service
    from itas.techniques.base import service_name

    rng = random.Random(7)
    for _ in range(50):
        kind = rng.choice(["judge", "generator", "critic"])
        provider = rng.choice(["openai", "anthropic", "gemini", "bedrock"])
        model = rng.choice(["gpt-4o", "Qwen/Qwen2-72B-Instruct", "claude-3-5-sonnet", "a.b-c"])
        endpoint = ({"base_url": f"http://h{rng.randint(1, 9)}.example/v1"}
                    if provider == "openai" and rng.random() < 0.5 else {})
        real = service_name(kind, provider, model, **endpoint)
        sim = build_agent(kind, {"provider": "sim", "model": model})
        assert simulated_service(real) == sim.service, real
