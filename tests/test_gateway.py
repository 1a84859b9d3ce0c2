"""The OpenAI-compatible gateway over a real mesh, driven by the official ``openai`` SDK.

Real processes on loopback: a broker, sim agents, an orchestrator and ``itas gateway``. What
is promised: the SDK's sync, async and streaming calls work unchanged; streamed text arrives
while the final layer's call is still running (chunk arrival times against the trace's
final-layer latency); a client that disconnects stops its query's work on the agents and
the next request is served; every bad request gets its status and OpenAI's error shape and
the gateway keeps serving; keys are enforced and never logged.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import openai
import pytest
import yaml

from itas.client import Client
from itas.errors import ConfigError
from itas.gateway import GatewayError, ModelTable, discover_models
from tests.helpers import FAST_HEARTBEAT, Processes, wait_for_workers

FUSER_LATENCY_S = 0.6
SLOW_LATENCY_S = 5.0
ARCHITECTURES = {
    # generate 2, fuse: the fuser (one writer, one call) streams
    "stream_gf": {"layers": [[{"technique": "generator", "provider": "sim", "model": "strong",
                               "samples": 2}],
                             [{"technique": "fuser", "provider": "sim", "model": "strong"}]]},
    "slow": {"layers": [[{"technique": "generator", "provider": "sim", "model": "slow"}]]},
    "missing": {"layers": [[{"technique": "generator", "provider": "sim",
                             "model": "nobody-runs-this"}]]},
    "vote": {"layers": [[{"technique": "generator", "provider": "sim", "model": "strong",
                          "samples": 3}], [{"technique": "majority_vote"}]]},
}
AGENTS = [
    ("generator", {"provider": "sim", "model": "strong", "latency": 0.01}),
    ("fuser", {"provider": "sim", "model": "strong", "latency": FUSER_LATENCY_S}),
    ("generator", {"provider": "sim", "model": "slow", "latency": SLOW_LATENCY_S}),
    ("majority_vote", {}),
    ("orchestrator", {}),
]
SERVICES = ["generator@sim:strong", "fuser@sim:strong", "generator@sim:slow", "majority_vote",
            "orchestrator"]
HELLO = [{"role": "system", "content": "Answer briefly."},
         {"role": "user", "content": "What is 6 x 7?"}]


class Lines:
    """A process's stderr, read by a thread, so a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                self.lines.append(line)
        except ValueError:  # closed at teardown
            pass

    def text(self) -> str:
        return "".join(self.lines)

    def has(self, *needles: str, timeout: float = 10.0) -> bool:
        """Whether every needle shows up within ``timeout`` (a process logs a query after
        it has answered it, so the line may trail the response)."""
        deadline = time.monotonic() + timeout
        while not all(n in self.text() for n in needles):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


@dataclass
class Mesh:
    broker: str
    url: str
    models: Path
    agent_logs: dict[str, Lines] = field(default_factory=dict)
    gateway_log: Lines | None = None


def start_gateway(procs: Processes, broker: str, *args: str, env: dict[str, str] | None = None
                  ) -> tuple[str, subprocess.Popen[str]]:
    proc = procs.spawn("gateway", "--broker", broker, "--port", "0", "-v", *args, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    assert match, f"gateway did not start: {line!r}"
    return match.group(1), proc


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    models = tmp_path_factory.mktemp("models")
    for name, spec in ARCHITECTURES.items():
        (models / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **spec}))
    procs = Processes()
    try:
        broker = procs.broker().endpoint
        logs = {}
        for kind, settings in AGENTS:
            proc = procs.agent(broker, kind, settings, "-v")
            logs[f"{kind}:{settings.get('model', '')}"] = Lines(proc)
        for service in SERVICES:
            wait_for_workers(broker, service, 1, timeout=90)
        url, gateway = start_gateway(procs, broker, "--models", str(models))
        yield Mesh(broker, url, models, logs, Lines(gateway))
    finally:
        procs.stop_all()


def sdk(mesh: Mesh) -> openai.OpenAI:
    return openai.OpenAI(base_url=mesh.url, api_key="unused", max_retries=0, timeout=60)


def check_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


# -- the SDK, unchanged -----------------------------------------------------------------------

def test_sync_sdk_gets_the_openai_shape_with_usage_summed_and_tags_in_the_trace(mesh: Mesh
                                                                                ) -> None:
    response = sdk(mesh).chat.completions.create(
        model="stream_gf", messages=HELLO, user="alice", metadata={"team": "search"},
        max_tokens=7, temperature=0.3, extra_body={"itas": {"trace": True}})
    assert response.object == "chat.completion"
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content
    ext = response.model_extra["itas"]
    assert response.id == f"chatcmpl-{ext['trace_id']}"
    assert ext["calls"] == 3 and ext["cost_usd"] == 0.0 and ext["latency_s"] > 0
    layers = ext["trace"]["layers"]
    totals = [sum(c["usage"][k] for lay in layers for c in lay["components"])
              for k in ("prompt_tokens", "completion_tokens")]
    assert [response.usage.prompt_tokens, response.usage.completion_tokens] == totals
    assert response.usage.total_tokens == sum(totals)
    # max_tokens reached the final layer only: sim answers are min(its length, max_tokens)
    assert layers[-1]["components"][0]["usage"]["completion_tokens"] == 7
    assert layers[0]["components"][0]["usage"]["completion_tokens"] > 2 * 7
    assert ext["trace"]["tags"] == {"trace_id": ext["trace_id"], "user": "alice",
                                    "metadata": {"team": "search"}}
    assert mesh.gateway_log.has(ext["trace_id"], "alice"), mesh.gateway_log.text()


def test_async_sdk_serves_concurrent_multi_turn_conversations(mesh: Mesh) -> None:
    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=mesh.url, api_key="unused", max_retries=0)
        async with client:
            results: list[str] = []

            async def one(i: int) -> None:
                conversation = [*HELLO, {"role": "assistant", "content": "42"},
                                {"role": "user", "content": f"And {i} x 7?"}]
                r = await client.chat.completions.create(model="stream_gf",
                                                         messages=conversation)
                results.append(r.choices[0].message.content or "")

            async with anyio.create_task_group() as tg:
                for i in range(6):
                    tg.start_soon(one, i)
            return results

    answers = anyio.run(main)
    assert len(answers) == 6 and all(answers)


def test_models_lists_packaged_and_configured_architectures(mesh: Mesh) -> None:
    ids = {m.id for m in sdk(mesh).models.list()}
    assert {"stream_gf", "slow", "sim_gcrf", "local_gcrf"} <= ids
    assert sdk(mesh).models.retrieve("stream_gf").id == "stream_gf"
    with pytest.raises(openai.NotFoundError):
        sdk(mesh).models.retrieve("nope")


# -- streaming --------------------------------------------------------------------------------

def test_first_streamed_token_arrives_while_the_final_layers_call_runs(mesh: Mesh) -> None:
    arrivals: list[tuple[float, str]] = []
    finish = None
    usage = None
    stream = sdk(mesh).chat.completions.create(
        model="stream_gf", messages=HELLO, stream=True, stream_options={"include_usage": True},
        extra_body={"itas": {"trace": True}})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        if chunk.choices[0].delta.content:
            arrivals.append((time.monotonic(), chunk.choices[0].delta.content))
        if chunk.choices[0].finish_reason:
            finish = chunk.model_extra["itas"]
    assert finish is not None and usage is not None and finish["streamed"] is True
    final_call_s = finish["trace"]["layers"][-1]["latency_s"]
    assert final_call_s >= FUSER_LATENCY_S * 0.9
    assert len(arrivals) >= 5
    # The reply comes after the last delta, so the final call ended after the last chunk
    # arrived; the first came at least half the call's time before that.
    first, last = arrivals[0][0], arrivals[-1][0]
    assert last - first >= 0.5 * final_call_s, (last - first, final_call_s)
    text = "".join(t for _, t in arrivals)
    assert "answer" not in finish  # the deltas were the answer's prefix, the rest followed
    assert text.startswith("Simulated")
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0


def test_progress_is_opt_in_and_a_non_streamable_final_layer_sends_one_chunk(mesh: Mesh
                                                                              ) -> None:
    plain = [c for c in sdk(mesh).chat.completions.create(model="stream_gf", messages=HELLO,
                                                          stream=True)]
    assert not any((c.model_extra or {}).get("itas", {}).get("progress") for c in plain)
    chunks = list(sdk(mesh).chat.completions.create(
        model="vote", messages=HELLO, stream=True, extra_body={"itas": {"progress": True}}))
    progress = [c.model_extra["itas"]["progress"] for c in chunks
                if "progress" in (c.model_extra or {}).get("itas", {})]
    assert [p["layer"] for p in progress] == [1, 2] and progress[0]["layers"] == 2
    contents = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(contents) == 1  # majority vote writes no text as it goes: one chunk
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["itas"]["streamed"] is False


def test_a_client_leaving_mid_stream_stops_the_agents_work_and_the_next_is_served(mesh: Mesh
                                                                                  ) -> None:
    log = mesh.agent_logs["generator:slow"]
    stopped_before = log.text().count("stopped a request")
    with Client(mesh.broker, heartbeat_interval=FAST_HEARTBEAT) as broker:
        cancelled_before = broker.status()["counters"].get("cancelled", 0)
        with httpx.stream("POST", f"{mesh.url}/chat/completions", timeout=30, json={
                "model": "slow", "messages": HELLO, "stream": True}) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")  # the role chunk: the query is running
            deadline = time.monotonic() + 10
            while broker.status()["services"]["generator@sim:slow"]["inflight"] == 0:
                assert time.monotonic() < deadline, "the slow generator never got the call"
                time.sleep(0.05)
        left = time.monotonic()  # the connection is closed here
        while broker.status()["services"]["generator@sim:slow"]["inflight"] != 0:
            assert time.monotonic() - left < SLOW_LATENCY_S / 2, "the call kept running"
            time.sleep(0.05)
        counters = broker.status()["counters"]
    # gateway -> orchestrator and orchestrator -> generator, both cancelled
    assert counters.get("cancelled", 0) - cancelled_before >= 2
    while log.text().count("stopped a request") == stopped_before:
        assert time.monotonic() - left < SLOW_LATENCY_S / 2, "the agent never stopped it"
        time.sleep(0.05)
    again = sdk(mesh).chat.completions.create(model="stream_gf", messages=HELLO)
    assert again.choices[0].message.content


def test_a_client_giving_up_on_a_plain_request_stops_the_agents_work_too(mesh: Mesh) -> None:
    log = mesh.agent_logs["generator:slow"]
    stopped_before = log.text().count("stopped a request")
    with pytest.raises(httpx.ReadTimeout):  # the client closes the connection after 1 s
        httpx.post(f"{mesh.url}/chat/completions", timeout=1.0,
                   json={"model": "slow", "messages": HELLO})
    left = time.monotonic()
    while log.text().count("stopped a request") == stopped_before:
        assert time.monotonic() - left < SLOW_LATENCY_S / 2, "the agent never stopped it"
        time.sleep(0.05)
    assert sdk(mesh).chat.completions.create(model="stream_gf", messages=HELLO).choices


# -- errors -----------------------------------------------------------------------------------

def test_bad_requests_get_their_status_and_openai_error_shape(mesh: Mesh) -> None:
    url = f"{mesh.url}/chat/completions"
    with httpx.Client(timeout=30) as http:
        cases = [
            ({"model": "stream_gf"}, 400, "messages"),
            ({"model": "stream_gf", "messages": "hi"}, 400, "messages"),
            ({"model": "stream_gf", "messages": [{"role": "user", "content": 5}]}, 400,
             "messages.0.content"),
            ({"model": "stream_gf", "messages": [{"role": "robot", "content": "x"}]}, 400,
             "messages.0.role"),
            ({"model": "stream_gf", "messages": HELLO, "temperature": "hot"}, 400,
             "temperature"),
            ({"model": "stream_gf", "messages": HELLO, "max_tokens": -1}, 400, "max_tokens"),
            ({"model": "stream_gf", "messages": HELLO, "n": 2}, 400, "n"),
            ({"model": "stream_gf", "messages": HELLO, "top_p": 0.5}, 400, "top_p"),
            ({"model": "stream_gf", "messages": HELLO, "stream": "yes"}, 400, "stream"),
            ({"model": 7, "messages": HELLO}, 400, "model"),
            ({"model": "vote", "messages": HELLO, "temperature": 0.5}, 400, "temperature"),
            ({"model": "stream_gf", "messages": [{"role": "assistant", "content": "x"}]}, 400,
             "messages"),
        ]
        for body, status, param in cases:
            error = check_error(http.post(url, json=body), status)
            assert error["param"] == param, (body, error)
            assert error["type"] == "invalid_request_error"
        check_error(http.post(url, content=b"{not json", headers={
            "content-type": "application/json"}), 400)
        check_error(http.post(url, content=b"[1, 2]"), 400)
        check_error(http.post(url, json={"model": "nope", "messages": HELLO}), 404,
                    "model_not_found")
        big = json.dumps({"model": "stream_gf", "messages": [
            {"role": "user", "content": "x" * (10 * 1024 * 1024)}]}).encode()
        check_error(http.post(url, content=big), 413, "request_too_large")

        def chunked() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
            for _ in range(10):
                yield b" " * (1024 * 1024)

        check_error(http.post(url, content=chunked()), 413, "request_too_large")
        check_error(http.post(url, json={"model": "stream_gf", "messages": HELLO,
                                         "extra_body": 1}), 400)
    # and the gateway keeps serving
    assert sdk(mesh).chat.completions.create(model="stream_gf", messages=HELLO).choices


def test_mesh_failures_map_to_503_504_and_budget_400(mesh: Mesh) -> None:
    client = sdk(mesh)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as unavailable:
        client.chat.completions.create(model="missing", messages=HELLO)
    assert unavailable.value.status_code == 503 and time.monotonic() - started < 5
    assert "generator@sim:nobody-runs-this" in unavailable.value.message
    with pytest.raises(openai.APIStatusError) as late:
        client.chat.completions.create(model="slow", messages=HELLO,
                                       extra_body={"itas": {"timeout_s": 0.5}})
    assert late.value.status_code == 504 and late.value.body["code"] == "timeout"
    with pytest.raises(openai.BadRequestError) as budget:
        client.chat.completions.create(model="stream_gf", messages=HELLO,
                                       extra_body={"itas": {"budget": {"calls": 1}}})
    assert budget.value.body["code"] == "budget_exceeded"
    assert budget.value.body["param"] == "itas.budget"
    with pytest.raises(openai.BadRequestError):  # a bad extension is a 400 too
        client.chat.completions.create(model="stream_gf", messages=HELLO,
                                       extra_body={"itas": {"budget": {"calls": "all"}}})


# -- keys -------------------------------------------------------------------------------------

def test_bearer_keys_are_enforced_and_never_logged(mesh: Mesh, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# gateway keys\nsk-file-key-123\n")
    procs = Processes()
    try:
        url, proc = start_gateway(procs, mesh.broker, "--api-keys", str(keys),
                                  "--models", str(mesh.models),
                                  env={"ITAS_GATEWAY_API_KEYS": "sk-env-key-456"})
        log = Lines(proc)
        for key in ("sk-file-key-123", "sk-env-key-456"):
            ok = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
            assert ok.chat.completions.create(model="stream_gf", messages=HELLO).choices
        for key in ("wrong", "sk-file-key-12", "sk-file-key-1234"):
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=url, api_key=key, max_retries=0).models.list()
        check_error(httpx.get(f"{url}/models"), 401, "invalid_api_key")
    finally:
        procs.stop_all()
    assert "sk-" not in log.text()


def test_listening_beyond_loopback_needs_keys(mesh: Mesh) -> None:
    procs = Processes()
    try:
        proc = procs.spawn("gateway", "--broker", mesh.broker, "--host", "0.0.0.0",
                           "--port", "0", env={"ITAS_GATEWAY_API_KEYS": ""})
        _, err = proc.communicate(timeout=30)
    finally:
        procs.stop_all()
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "without API keys" in lines[0] and "Traceback" not in err


# -- the embedded model -----------------------------------------------------------------------

@pytest.mark.local_model
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="llama-cpp-python is not installed: pip install 'itas[local]'")
def test_a_short_answer_streams_from_the_embedded_model(tmp_path: Path) -> None:
    """``itas up`` with the local pool; a one-generator architecture on the embedded model,
    streamed token by token from llama.cpp through agent, broker, orchestrator, gateway."""
    (tmp_path / "local_one.yaml").write_text(yaml.safe_dump({"name": "local_one", "layers": [[
        {"technique": "generator", "provider": "local", "model": "smollm2"}]]}))
    procs = Processes()
    try:
        up = procs.spawn("up", "--bind", "tcp://127.0.0.1:0", "--gateway-port", "0",
                         "--models", str(tmp_path))
        assert up.stdout is not None
        line = up.stdout.readline()
        match = re.search(r"gateway (http://\S+)", line)
        assert match, line
        client = openai.OpenAI(base_url=match.group(1), api_key="unused", max_retries=0,
                               timeout=600)
        chunks = list(client.chat.completions.create(
            model="local_one", stream=True, max_tokens=24, temperature=0.0,
            messages=[{"role": "user", "content": "Name a primary colour."}]))
    finally:
        procs.stop_all()
    contents = [c.choices[0].delta.content for c in chunks
                if c.choices and c.choices[0].delta.content]
    finish = chunks[-1].model_extra["itas"]
    assert finish["streamed"] is True and "answer" not in finish  # deltas were the answer
    assert len(contents) > 3 and "".join(contents).strip()


# -- models, without a mesh -------------------------------------------------------------------

def test_models_come_from_packaged_specs_directories_and_search_outputs(tmp_path: Path) -> None:
    spec = {"name": "mine", **ARCHITECTURES["stream_gf"]}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "mine.pool.yaml").write_text("agents: []\n")  # a pool, not a model
    (tmp_path / "sim_gcrf.yaml").write_text(yaml.safe_dump({**spec, "name": "shadow"}))
    search = tmp_path / "gsm8k-search"
    search.mkdir()
    (search / "best.yaml").write_text(yaml.safe_dump({**spec, "name": "best"}))
    (search / "best.pool.yaml").write_text("agents: []\n")
    found = discover_models([tmp_path])
    assert found["mine"] == tmp_path / "mine.yaml" and "mine.pool" not in found
    assert found["gsm8k-search"] == search / "best.yaml"
    assert found["sim_gcrf"] == tmp_path / "sim_gcrf.yaml"  # one's own shadows the packaged
    assert "local_gcrf" in found
    assert discover_models([search]) == {**discover_models([]), "gsm8k-search":
                                         search / "best.yaml"}
    table = ModelTable(found, sim=True)
    assert table.get("mine").name == "mine [simulated]"  # --sim: labelled as the dry run it is
    with pytest.raises(GatewayError) as missing:
        table.get("nope")
    assert missing.value.status == 404
    with pytest.raises(ConfigError, match="no such directory"):
        discover_models([tmp_path / "absent"])
