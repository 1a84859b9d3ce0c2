"""Authorization on top of CURVE: a roles file says which services each key may serve and call.

Through real processes and real keys: a key may register only the services its role lists
(so no allowed key can pose as the orchestrator and read other users' prompts), call only
those it lists, and a key the broker does not admit at all fails at once with
``AuthenticationError`` instead of waiting out its timeout; the broker logs each refusal by
roles-file name or key fingerprint, never a secret.
"""

from __future__ import annotations

import contextlib
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import zmq.auth
import zmq.utils.z85
from hypothesis import given, settings
from hypothesis import strategies as st

from itas import AuthenticationError, Client
from itas import protocol as P
from itas.errors import ConfigError, ProtocolError
from itas.security import (
    UNAUTHORIZED,
    CurveKeys,
    Role,
    Roles,
    generate_keys,
    key_fingerprint,
    refusal,
)
from tests.helpers import FAST_HEARTBEAT, Processes, wait_for_workers

# Far above any honest refusal (milliseconds): a refusal that waits out its timeout fails.
PATIENT_S = 30.0

ROLES = """
agent:
  serve: ["echo-*"]
orchestrators:
  serve: [orchestrator]
  call: ["*@*", "echo-*"]
alice:
  call: [orchestrator, echo-public]
mallory:
  call: [echo-public]
"""


@pytest.fixture
def keys(tmp_path: Path) -> tuple[dict[str, tuple[Path, Path]], Path, Path]:
    made = {name: generate_keys(tmp_path / "keys", name) for name in
            ("broker", "agent", "orchestrators", "alice", "mallory", "intruder")}
    allow = tmp_path / "allow"
    allow.mkdir()
    for name in ("agent", "orchestrators", "alice", "mallory"):
        shutil.copy(made[name][0], allow)
    roles = tmp_path / "roles.yaml"
    roles.write_text(ROLES)
    return made, allow, roles


def _client_keys(made: dict[str, tuple[Path, Path]], name: str) -> CurveKeys:
    return CurveKeys.load(made[name][1], made["broker"][0])


def _curve_args(made: dict[str, tuple[Path, Path]], name: str) -> list[str]:
    return ["--curve-secret", str(made[name][1]), "--curve-server", str(made["broker"][0])]


def _exits_with_one_line(proc: subprocess.Popen[str]) -> str:
    assert proc.wait(timeout=PATIENT_S) == 2
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("itas: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_roles_through_real_processes(procs: Processes, keys) -> None:
    made, allow, roles = keys
    broker = procs.broker("tcp://127.0.0.1:0", "--curve-secret", str(made["broker"][1]),
                          "--curve-allow", str(allow), "--curve-roles", str(roles))
    procs.agent(broker.endpoint, "echo", {"service": "echo-public"}, *_curve_args(made, "agent"))
    procs.agent(broker.endpoint, "echo", {"service": "echo-private"}, *_curve_args(made, "agent"))
    # An allowed key posing as the orchestrator, and one the broker does not admit at all.
    impostor = procs.agent(broker.endpoint, "echo", {"service": "orchestrator"},
                           *_curve_args(made, "mallory"))
    intruder_agent = procs.agent(broker.endpoint, "echo", {"service": "echo-public"},
                                 *_curve_args(made, "intruder"))
    alice = _client_keys(made, "alice")
    wait_for_workers(broker.endpoint, "echo-public", 1, curve=alice)
    wait_for_workers(broker.endpoint, "echo-private", 1, curve=alice)

    line = _exits_with_one_line(impostor)
    assert "may not serve 'orchestrator'" in line and "mallory" in line
    line = _exits_with_one_line(intruder_agent)
    assert f"refused CURVE key {key_fingerprint(zmq.auth.load_certificate(made['intruder'][1])[0])}" in line

    with Client(broker.endpoint, curve=alice, heartbeat_interval=FAST_HEARTBEAT) as client:
        assert client.request("echo-public", {"x": 1}, timeout=PATIENT_S) == {"x": 1}
        with pytest.raises(AuthenticationError, match="alice may not call 'echo-private'"):
            client.request("echo-private", {"x": 2}, timeout=PATIENT_S)
        status = client.status()  # open to every admitted key
        assert status["services"].get("orchestrator", {}).get("workers", 0) == 0
        assert status["workers"] and all(w["service"].startswith("echo-")
                                         for w in status["workers"])
    with (Client(broker.endpoint, curve=_client_keys(made, "mallory"),
                 heartbeat_interval=FAST_HEARTBEAT) as client,
          pytest.raises(AuthenticationError, match="mallory may not call 'orchestrator'")):
        client.request("orchestrator", {"prompt": "x"}, timeout=PATIENT_S)
    with Client(broker.endpoint, curve=_client_keys(made, "intruder"),
                heartbeat_interval=FAST_HEARTBEAT) as client:
        with pytest.raises(AuthenticationError, match="refused CURVE key"):
            client.request("echo-public", {"x": 3}, timeout=PATIENT_S)
        with pytest.raises(AuthenticationError):  # and every later call, at once
            client.request("echo-public", {"x": 4}, timeout=PATIENT_S)

    broker.kill(15)
    assert broker.proc.stderr is not None
    log = broker.proc.stderr.read()
    intruder_public = zmq.auth.load_certificate(made["intruder"][1])[0]
    assert f"refused CURVE key {key_fingerprint(intruder_public)} from 127.0.0.1" in log
    assert "refused a worker: mallory may not serve 'orchestrator'" in log
    assert "refused a request: alice may not call 'echo-private'" in log
    for name in made:  # no secret key, in any encoding, in the broker's log
        secret = zmq.auth.load_certificate(made[name][1])[1]
        assert secret is not None and secret.decode() not in log


def test_without_roles_any_admitted_key_still_serves_anything(procs: Processes, keys) -> None:
    """No roles file: the broker behaves as before (authentication only)."""
    made, allow, _ = keys
    broker = procs.broker("tcp://127.0.0.1:0", "--curve-secret", str(made["broker"][1]),
                          "--curve-allow", str(allow))
    procs.agent(broker.endpoint, "echo", {"service": "orchestrator"}, *_curve_args(made, "mallory"))
    wait_for_workers(broker.endpoint, "orchestrator", 1, curve=_client_keys(made, "alice"))
    with (Client(broker.endpoint, curve=_client_keys(made, "intruder"),
                 heartbeat_interval=FAST_HEARTBEAT) as client,
          pytest.raises(AuthenticationError, match="refused CURVE key")):
        client.request("orchestrator", {}, timeout=PATIENT_S)


def test_keys_and_no_keys_that_disagree_fail_at_once(procs: Processes, keys) -> None:
    """A client without keys at a CURVE broker, with keys at a plain one, or with the wrong
    broker public key: one clear AuthenticationError naming what to change, for the client
    and for an agent."""
    made, allow, roles = keys
    curve_broker = procs.broker("tcp://127.0.0.1:0", "--curve-secret", str(made["broker"][1]),
                                "--curve-allow", str(allow), "--curve-roles", str(roles))
    plain_broker = procs.broker("tcp://127.0.0.1:0")
    # libzmq reports keys meeting no keys as a mismatch or as dropped connections, depending
    # on timing; either way the error names the fix
    with (Client(curve_broker.endpoint, heartbeat_interval=FAST_HEARTBEAT) as client,
          pytest.raises(AuthenticationError, match="requires CURVE|require CURVE keys")):
        client.request("echo-public", {}, timeout=PATIENT_S)
    with (Client(plain_broker.endpoint, curve=_client_keys(made, "alice"),
                 heartbeat_interval=FAST_HEARTBEAT) as client,
          pytest.raises(AuthenticationError, match="does not use CURVE|check that it uses CURVE")):
        client.request("echo-public", {}, timeout=PATIENT_S)
    agent = procs.agent(curve_broker.endpoint, "echo", {"service": "echo-public"})
    assert re.search("requires CURVE|require CURVE keys", _exits_with_one_line(agent))
    # An admitted key, but the wrong broker public key: the broker cannot read our hello.
    wrong_server = CurveKeys.load(made["alice"][1], made["mallory"][0])
    with (Client(curve_broker.endpoint, curve=wrong_server,
                 heartbeat_interval=FAST_HEARTBEAT) as client,
          pytest.raises(AuthenticationError, match="--curve-server is its public key")):
        client.request("echo-public", {}, timeout=PATIENT_S)
    agent = procs.agent(curve_broker.endpoint, "echo", {"service": "echo-public"},
                        "--curve-secret", str(made["agent"][1]),
                        "--curve-server", str(made["mallory"][0]))
    assert "--curve-server is its public key" in _exits_with_one_line(agent)


# -- the roles file and the decision, without sockets -------------------------------------------

def _z85(path: Path) -> str:
    return zmq.auth.load_certificate(path)[0].decode()


def test_roles_file_names_every_mistake(keys, tmp_path: Path) -> None:
    made, allow, _ = keys
    bad = tmp_path / "bad.yaml"
    cases = {
        "[1, 2]": "expected a mapping of key names to roles",
        "nobody: {call: [x]}": "nobody: no public key file",
        "intruder: {call: [x]}": "intruder: no public key file",
        f'"{_z85(made["intruder"][0])}": {{call: [x]}}': "is not in the allow directory",
        "alice: {calls: [x]}": "alice: expected a mapping with 'serve' and/or 'call'",
        "alice: {call: [1]}": "alice.call: expected a list of service patterns",
        "alice: {call: [x]}\n" + f'"{_z85(made["alice"][0])}": {{call: [y]}}': "the same key as",
        "alice: [": "cannot read the roles file",
    }
    for text, message in cases.items():
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            Roles.load(bad, allow)


def test_the_cli_refuses_roles_without_curve(procs: Processes, keys) -> None:
    _, _, roles = keys
    proc = procs.spawn("broker", "--bind", "tcp://127.0.0.1:0", "--curve-roles", str(roles))
    assert "--curve-roles needs CURVE" in _exits_with_one_line(proc)


def test_decisions_over_random_services() -> None:
    """Seeded: a key may do exactly what one of its patterns matches; an unknown key (or none)
    may do nothing but read the status; refusals carry the request's id and the right code."""
    rng = random.Random(12)
    alphabet = "ab@*-?."
    for _ in range(300):
        patterns = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5)))
                    for _ in range(rng.randint(0, 3))]
        key, other = (zmq.utils.z85.encode(rng.randbytes(32)).decode() for _ in range(2))
        roles = Roles({key: Role(serve=tuple(patterns))})
        service = "".join(rng.choice("ab@-.") for _ in range(rng.randint(1, 6)))
        matched = any(_glob(service, p) for p in patterns)
        assert roles.permits(key, "serve", service) is matched
        assert roles.permits(key, "call", service) is False
        assert not roles.permits(other, "serve", service) and not roles.permits(None, "call", service)
        assert roles.permits(None, "call", P.STATUS_SERVICE)
        request_id = rng.randbytes(P.KEY_BYTES)
        request = [b"peer", P.REQUEST, P.request_meta(request_id, service, 1000), b"\x80"]
        refused = refusal(roles, request, key)
        assert refused is not None and refused.reply[0] == b"peer"
        assert P.parse_reply_meta(refused.reply[2])[0] == request_id
        assert P.parse_error(refused.reply[3])[0] == UNAUTHORIZED
        ready = [b"peer", P.READY, P.ready_body(service, 1, "w", 200)]
        assert (refusal(roles, ready, key) is None) is matched


def _glob(text: str, pattern: str) -> bool:
    """An independent glob matcher (``*``, ``?``, literal rest) to check ``fnmatch`` use."""
    if not pattern:
        return not text
    if pattern[0] == "*":
        return any(_glob(text[i:], pattern[1:]) for i in range(len(text) + 1))
    return bool(text) and pattern[0] in ("?", text[0]) and _glob(text[1:], pattern[1:])


# -- the whole stack, as a user runs it ---------------------------------------------------------

ONE_GENERATOR = {"name": "one-generator", "layers": [[
    {"technique": "generator", "provider": "sim", "model": "strong"}]]}


def test_itas_up_with_roles_serves_alice_through_the_orchestrator_only(
        procs: Processes, keys, tmp_path: Path) -> None:
    """``itas up --curve-roles``: the stack's own orchestrator and agents may do everything;
    alice, who may call only the orchestrator, gets answers but cannot reach an agent."""
    made, allow, roles = keys
    pool = tmp_path / "pool.yaml"
    pool.write_text('{"agents": [{"kind": "generator", "settings": '
                    '{"provider": "sim", "model": "strong", "skill": 0.8}}]}')
    up = procs.spawn("up", "--pool", str(pool), "--bind", "tcp://127.0.0.1:0",
                     "--curve-secret", str(made["broker"][1]), "--curve-allow", str(allow),
                     "--curve-roles", str(roles))
    assert up.stdout is not None
    line = up.stdout.readline()
    assert line.startswith("itas up: broker"), (line, up.stderr.read() if up.stderr else "")
    broker = line.split()[3].rstrip(";")
    with Client(broker, curve=_client_keys(made, "alice"),
                heartbeat_interval=FAST_HEARTBEAT) as client:
        answer = client.ask("What is 6 x 7?", architecture=ONE_GENERATOR, timeout=PATIENT_S)
        assert answer.text
        [generator] = [s for s in client.status()["services"] if s.startswith("generator@")]
        with pytest.raises(AuthenticationError, match=f"alice may not call '{generator}'"):
            client.request(generator, {"messages": [{"role": "user", "content": "hi"}]},
                           timeout=PATIENT_S)


def test_itas_agents_with_a_refused_key_stops_with_one_line(procs: Processes, keys,
                                                            tmp_path: Path) -> None:
    """A pool whose key may not serve its services is a configuration error: the supervisor
    reports the replica's line once and stops, instead of restarting it forever."""
    made, allow, roles = keys
    broker = procs.broker("tcp://127.0.0.1:0", "--curve-secret", str(made["broker"][1]),
                          "--curve-allow", str(allow), "--curve-roles", str(roles))
    pool = tmp_path / "pool.yaml"
    pool.write_text('{"agents": [{"kind": "echo", "settings": {"service": "orchestrator"}}]}')
    for name, why in (("alice", "may not serve 'orchestrator'"), ("intruder", "refused CURVE key")):
        agents = procs.spawn("agents", "--pool", str(pool), "--broker", broker.endpoint,
                             *_curve_args(made, name))
        line = _exits_with_one_line(agents)
        assert why in line, line


FRAME = st.one_of(st.binary(max_size=40), st.sampled_from([P.READY, P.REQUEST, P.REPLY,
                                                           P.HEARTBEAT, b"ITAS\x09\x02"]))


@settings(max_examples=400, deadline=None, database=None)
@given(frames=st.lists(FRAME, min_size=0, max_size=5),
       service=st.text(min_size=1, max_size=12), kind=st.sampled_from(["ready", "request", "raw"]))
def test_no_frames_get_past_the_check_without_a_role(frames: list[bytes], service: str,
                                                      kind: str) -> None:
    """Hostile frames never make the check raise, and whatever names a service it may not
    serve or call is refused: an unknown key can only reach the broker's status."""
    roles = Roles({_z85_of(1): Role(serve=("ok-*",), call=("ok-*",))})
    if kind == "ready":
        frames = [b"peer", P.READY, P.ready_body(service, 1, "w", 200), *frames]
    elif kind == "request":
        frames = [b"peer", P.REQUEST, P.request_meta(b"k" * P.KEY_BYTES, service, 1000), *frames]
    for key in (_z85_of(1), _z85_of(2), None):
        refused = refusal(roles, frames, key)
        if refused is not None:
            assert refused.reply[0] == frames[0] and refused.reply[1] == P.ERROR
            continue
        if len(frames) >= 3 and frames[1] == P.READY:
            with contextlib.suppress(ProtocolError):
                assert roles.permits(key, "serve", P.parse_ready(frames[2])[0])
        if len(frames) >= 3 and frames[1] == P.REQUEST:
            with contextlib.suppress(ProtocolError):
                assert roles.permits(key, "call", P.parse_request_meta(frames[2])[1])


def _z85_of(i: int) -> str:
    return zmq.utils.z85.encode(i.to_bytes(32, "big")).decode()
