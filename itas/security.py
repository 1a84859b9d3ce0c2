"""CURVE keys and what each may do: generating and loading keys, the rule for insecure
binds, and authorization.

Secret key files are written readable by their owner only (0600): anyone who
can read one can impersonate that agent or broker.

Authentication is libzmq's CURVE with pyzmq's ZAP handler (``LoggingAuthenticator``: the
allow directory's keys are in, every other key is turned away and logged by fingerprint).
Authorization is ``Roles`` (the broker's ``--curve-roles`` file): the ZAP handler stamps each
message with its sender's public key (the ``User-Id`` property), and ``refusal`` decides,
before the broker routes a READY or a REQUEST, whether that key may serve or call the service
named; a refused peer gets an ``unauthorized`` error at once. A refused handshake reaches the
peer as a socket-monitor event (``watch_handshake``, ``refused_line``), so both the client
and the agent runtime end with ``AuthenticationError`` instead of waiting in silence.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import zmq
import zmq.auth
import zmq.auth.thread
import zmq.utils.z85

from itas import protocol as P
from itas.errors import ConfigError, ProtocolError

_S = TypeVar("_S", bound=zmq.Socket)
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass(frozen=True)
class CurveKeys:
    """One side's CURVE identity, plus the broker's public key when this side connects."""

    public: bytes
    secret: bytes
    server_public: bytes | None = None

    @classmethod
    def load(cls, secret_file: str | Path, server_public_file: str | Path | None = None
             ) -> CurveKeys:
        public, secret = _read_cert(secret_file, need_secret=True)
        server = _read_cert(server_public_file, need_secret=False)[0] if server_public_file else None
        assert secret is not None  # need_secret=True checked it
        return cls(public, secret, server)

    def apply_client(self, socket: zmq.Socket) -> None:
        if self.server_public is None:
            raise ConfigError("CURVE client keys need the broker's public key file")
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_serverkey = self.server_public

    def apply_server(self, socket: zmq.Socket) -> None:
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True


def _read_cert(path: str | Path, *, need_secret: bool) -> tuple[bytes, bytes | None]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: CURVE key file not found")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path}: not a CURVE certificate ({exc})") from exc
    if need_secret and secret is None:
        raise ConfigError(f"{path}: holds no secret key (use the .key_secret file)")
    return public, secret


def generate_keys(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key (public, share it) and NAME.key_secret (0600, keep it)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"key name {name!r}: use letters, digits, '_', '-' or '.'")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = zmq.auth.create_certificates(directory, name)
    os.chmod(secret_file, 0o600)
    return Path(public_file), Path(secret_file)


def is_loopback(endpoint: str) -> bool:
    """True for endpoints no other machine can reach (loopback TCP, ipc, inproc)."""
    transport, _, rest = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    host = rest.rsplit(":", 1)[0]
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def check_bind(endpoint: str, *, curve: bool, insecure: bool) -> None:
    """Refuse to listen beyond loopback without CURVE unless the user insists."""
    if not curve and not insecure and not is_loopback(endpoint):
        raise ConfigError(
            f"refusing to bind {endpoint} without CURVE keys: anyone on the network could use "
            "this broker. Pass --curve-secret and --curve-allow, or --insecure to accept that."
        )


# -- authorization -------------------------------------------------------------

#: The error code of a refusal: ``AuthenticationError`` on the client's side.
UNAUTHORIZED = P.ErrorCode.UNAUTHORIZED
_Z85_KEY = re.compile(r"[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")


def key_fingerprint(public: bytes | str) -> str:
    """A short, stable name for a public key (raw 32 bytes or Z85) for logs: the first 16
    hex digits of its SHA-256. Public keys are not secret, but a fingerprint keeps log
    lines short and is what ``itas keys generate`` prints."""
    raw = zmq.utils.z85.decode(public) if isinstance(public, str) or len(public) == 40 else public
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Role:
    """What one key may do: glob patterns (``fnmatch``, case-sensitive) of service names."""

    serve: tuple[str, ...] = ()
    call: tuple[str, ...] = ()


#: The broker's status service is open to every admitted key: clients check it before
#: asking (is the broker there, does the service have workers) and it holds no prompts.
_OPEN_SERVICES = frozenset({"broker.status"})


class Roles:
    """Per-key authorization on top of CURVE authentication: which services a key may serve
    (register a worker for) and which it may call. A key the file does not list may do
    nothing but read the broker's status; so may a key whose role lacks a pattern.

    The file (YAML) maps key names to roles::

        host2:                     # allowed/host2.key, the --curve-allow directory's file
          serve: ["generator@*", "critic@*"]
        orchestrators:
          serve: [orchestrator]
          call: ["*@*"]            # the orchestrator calls agent services for its clients
        alice:
          call: [orchestrator]

    A name is a public key file in the allow directory (``NAME.key``) or a Z85 public key
    itself (40 characters, in double quotes: Z85 uses YAML's special characters). Every listed key must also be admitted by the allow directory,
    so the two files never disagree about who is in.
    """

    def __init__(self, by_key: dict[str, Role], names: dict[str, str] | None = None) -> None:
        self._by_key = dict(by_key)  # Z85 public key -> role
        self._names = dict(names or {})  # Z85 public key -> the name the file gave it
        self._decisions: dict[tuple[str, str, str], bool] = {}

    @classmethod
    def load(cls, path: str | Path, allow_dir: str | Path) -> Roles:
        import yaml

        path, allow_dir = Path(path), Path(allow_dir)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the roles file ({exc})") from exc
        if not isinstance(data, dict) or not data:
            raise ConfigError(f"{path}: expected a mapping of key names to roles")
        allowed = {public.decode() for public, _ in
                   (_read_cert(p, need_secret=False) for p in sorted(allow_dir.glob("*.key")))}
        by_key: dict[str, Role] = {}
        names: dict[str, str] = {}
        for name, entry in data.items():
            where = f"{path}: {name}"
            key = cls._key_for(str(name), allow_dir, where)
            if key not in allowed:
                raise ConfigError(f"{where}: key {key_fingerprint(key)} is not in the allow "
                                  f"directory {allow_dir}")
            if key in by_key:
                raise ConfigError(f"{where}: the same key as {names[key]!r}")
            by_key[key], names[key] = cls._role(entry, where), str(name)
        return cls(by_key, names)

    @staticmethod
    def _key_for(name: str, allow_dir: Path, where: str) -> str:
        if _Z85_KEY.fullmatch(name):
            return name
        file = allow_dir / f"{name}.key"
        if not file.is_file():
            raise ConfigError(f"{where}: no public key file {file} (nor a 40-character Z85 key)")
        return _read_cert(file, need_secret=False)[0].decode()

    @staticmethod
    def _role(entry: object, where: str) -> Role:
        if not isinstance(entry, dict) or not entry or set(entry) - {"serve", "call"}:
            raise ConfigError(f"{where}: expected a mapping with 'serve' and/or 'call' lists")
        patterns: dict[str, tuple[str, ...]] = {}
        for field_name in ("serve", "call"):
            value = entry.get(field_name, [])
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
                raise ConfigError(f"{where}.{field_name}: expected a list of service patterns")
            patterns[field_name] = tuple(value)
        return Role(patterns["serve"], patterns["call"])

    def with_role(self, key: bytes | str, role: Role, name: str) -> Roles:
        """A copy that also grants ``role`` to ``key`` (``itas up`` uses it for its own key)."""
        z85 = key.decode() if isinstance(key, bytes) else key
        return Roles({**self._by_key, z85: role}, {**self._names, z85: name})

    def name_of(self, key: str) -> str:
        """The roles file's name for a key, else its fingerprint: for log lines."""
        return self._names.get(key) or f"key {key_fingerprint(key)}"

    def permits(self, key: str | None, action: str, service: str) -> bool:
        """May ``key`` (Z85, as the ZAP handler set it as User-Id) ``action`` ("serve" or
        "call") ``service``? Decisions are cached: the check sits on the request path."""
        if action == "call" and service in _OPEN_SERVICES:
            return True
        if key is None:
            return False
        decision = self._decisions.get((key, action, service))
        if decision is None:
            role = self._by_key.get(key)
            patterns = () if role is None else role.serve if action == "serve" else role.call
            decision = any(fnmatch.fnmatchcase(service, p) for p in patterns)
            if len(self._decisions) > 65_536:  # service names come from peers: stay bounded
                self._decisions.clear()
            self._decisions[(key, action, service)] = decision
        return decision


@dataclass(frozen=True)
class Refusal:
    """What the broker does with a message its sender's role does not allow: the error it
    sends back (so the peer fails at once with a clear reason, not a timeout) and the line
    it logs (names the key by roles-file name or fingerprint, never anything secret)."""

    reply: list[bytes]
    log_line: str


def sender_key(frame: zmq.Frame) -> str | None:
    """The Z85 public key the ZAP handler vouched for, from a received frame (None for a
    connection the handler gave no User-Id)."""
    try:
        key = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    return key if isinstance(key, str) and key else None


def refusal(roles: Roles, frames: list[bytes], key: str | None) -> Refusal | None:
    """None when the message may go on to the broker's routing, else how to refuse it.

    Only the two messages that choose a service are checked: a worker's READY (may this
    key serve that service?) and a client's REQUEST (may it call it?). Everything else a
    worker sends is tied to work the broker gave it after its READY was allowed. A message
    too malformed to name a service is left to the broker, which drops and counts it.
    """
    if len(frames) < 3:
        return None
    header = frames[1]
    try:
        if header == P.READY:
            service = P.parse_ready(frames[2])[0]
            if roles.permits(key, "serve", service):
                return None
            message = f"{_who(roles, key)} may not serve {service!r} (see the broker's roles file)"
            return Refusal([frames[0], P.ERROR, P.error_body(UNAUTHORIZED, message)],
                           f"refused a worker: {message}")
        if header == P.REQUEST:
            meta = P.parse_request_meta(frames[2])
            request_id, service = meta[0], meta[1]
            if roles.permits(key, "call", service):
                return None
            message = f"{_who(roles, key)} may not call {service!r} (see the broker's roles file)"
            return Refusal([frames[0], P.ERROR, P.reply_meta(request_id, 0),
                            P.error_body(UNAUTHORIZED, message)],
                           f"refused a request: {message}")
    except ProtocolError:
        return None
    return None


def _who(roles: Roles, key: str | None) -> str:
    return roles.name_of(key) if key else "a peer without a CURVE key"


class LoggingAuthenticator(zmq.auth.thread.ThreadAuthenticator):
    """pyzmq's ZAP handler for CURVE, which also logs each key it turns away (fingerprint
    and address; at most once a minute per pair, since a refused peer reconnects every
    100 ms). The refused peer itself learns it from its handshake (see ``AuthWatch``)."""

    LOG_EVERY_S = 60.0

    def __init__(self, context: zmq.Context, log: logging.Logger) -> None:
        super().__init__(context, log=log)
        self._address = "?"
        self._logged: dict[tuple[str, str], float] = {}

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # [version, request_id, domain, address, routing_id, mechanism, *credentials]
        self._address = msg[3].decode(errors="replace") if len(msg) > 3 else "?"
        await super().handle_zap_message(msg)

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        allowed, reason = await super()._authenticate_curve(domain, client_key)
        if not allowed:
            seen = (key_fingerprint(client_key), self._address)
            now = time.monotonic()
            if now - self._logged.get(seen, -self.LOG_EVERY_S) >= self.LOG_EVERY_S:
                if len(self._logged) > 10_000:
                    self._logged.clear()
                self._logged[seen] = now
                self.log.warning("refused CURVE key %s from %s: %s (not in the allow "
                                 "directory)", seen[0], seen[1], reason.decode(errors="replace"))
        return allowed, reason


#: Connections in a row the broker drops mid-handshake before a CURVE peer says its broker
#: key must be wrong (a broker that cannot decrypt our hello just closes the connection).
DROPPED_HANDSHAKES = 3


def watch_handshake(socket: _S) -> _S:
    """A monitor for ``socket``'s handshakes; make it before ``connect``, or the first
    refusal can come before anyone listens. The caller closes it after the socket."""
    return socket.get_monitor_socket(
        zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)


class HandshakeWatch:
    """Reads one peer's monitor events and says when the broker has refused it for good.

    libzmq reports the broker's ZAP verdict (ZMTP 3.1 ERROR) as HANDSHAKE_FAILED_AUTH with
    the ZAP status code (400: this key is not allowed), and keys meeting no keys as a
    mechanism mismatch, at least sometimes: a wrong broker public key, and at times keys and
    no keys, show only as connections closed before the handshake ends:
    ``DROPPED_HANDSHAKES`` of them in a row, with no handshake between, is taken as that. Without this, a refused peer would see only
    silence and wait its whole timeout (or, for an agent, reconnect forever).
    """

    def __init__(self, broker: str, keys: CurveKeys | None) -> None:
        self.broker, self.keys = broker, keys
        self._connected = False
        self._dropped = 0

    def refusal(self, event_frames: list[bytes]) -> str | None:
        """The one line to report for this event, or None if it is not (yet) a refusal."""
        from zmq.utils.monitor import parse_monitor_message

        event = parse_monitor_message(event_frames)
        kind, value = event["event"], int(event["value"])
        keys, broker = self.keys, self.broker
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            who = f"CURVE key {key_fingerprint(keys.public)}" if keys is not None else "this peer"
            return (f"broker {broker} refused {who} (ZAP status {value}): it is not in the "
                    "broker's allow directory")
        if (kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH):
            if keys is None:
                return (f"broker {broker} requires CURVE: give this side keys (--curve-secret "
                        "and --curve-server, the broker's public key)")
            return f"broker {broker} does not use CURVE: connect without keys"
        if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._connected, self._dropped = False, 0
        elif kind == zmq.EVENT_CONNECTED:
            self._connected = True
        elif kind == zmq.EVENT_DISCONNECTED and self._connected:
            self._connected = False
            self._dropped += 1
            if self._dropped >= DROPPED_HANDSHAKES:
                fix = ("check that it uses CURVE and that --curve-server is its public key"
                       if keys is not None else "does it require CURVE keys (--curve-secret "
                       "and --curve-server)? is it an itas broker?")
                return (f"broker {broker} closed {self._dropped} connections in a row before "
                        f"the handshake ended: {fix}")
        return None
