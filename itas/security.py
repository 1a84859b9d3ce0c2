"""CURVE keys: generating them, loading them, and the rule for insecure binds.

Secret key files are written readable by their owner only (0600): anyone who
can read one can impersonate that agent or broker.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from itas.errors import ConfigError

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
