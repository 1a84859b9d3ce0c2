"""The itas wire protocol: every frame layout in one place.

Clients and workers connect DEALER sockets to the broker's ROUTER. Every message
starts with a 6-byte header, ``b"ITAS" + version + command``; the broker reads
routing data from small frames and never decodes request or reply bodies, which
are msgpack written and read by the two ends.

    worker -> broker  READY      [hdr, msgpack {"service", "credit", "name", "heartbeat_ms"}]
    client -> broker  REQUEST    [hdr, msgpack [request_id, service, timeout_ms], body]
    broker -> worker  REQUEST    [hdr, ticket, body]
    worker -> broker  REPLY      [hdr, ticket, body]
    worker -> broker  ERROR      [hdr, ticket, msgpack [code, message]]
    broker -> client  REPLY      [hdr, msgpack [request_id, attempts], body]
    broker -> client  ERROR      [hdr, msgpack [request_id, attempts], msgpack [code, message]]
    broker -> worker  ERROR      [hdr, msgpack [code, message]]   (its READY was refused)
    broker -> peer    HEARTBEAT  [hdr, broker_epoch]   peer -> broker  HEARTBEAT [hdr]
    worker -> broker  DISCONNECT [hdr]                 broker -> worker DISCONNECT [hdr]

A ticket is the broker's name for one attempt of one request; a reply whose
ticket the broker no longer knows (the worker was given up on, or the broker
restarted) is dropped, and the client's resend covers it. ``attempts`` tells the
client how many workers the request was given to (more than one: a worker was lost). The broker's epoch
changes at every start, so peers notice a restart even when TCP reconnects
silently: workers announce again, clients resend what is in flight.
A broker answers DISCONNECT to a worker it does not know; the worker announces again.
Each worker sets the heartbeat pace between it and the broker (``heartbeat_ms``),
so agents with different settings share one broker.
"""

from __future__ import annotations

import enum
from typing import Any

import msgpack

from itas.errors import ProtocolError

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_SERVICE_NAME = 255

#: Service names the broker answers itself instead of routing to a worker.
STATUS_SERVICE = "broker.status"


class Command(enum.IntEnum):
    READY = 1
    REQUEST = 2
    REPLY = 3
    ERROR = 4
    HEARTBEAT = 5
    DISCONNECT = 6


class ErrorCode(enum.StrEnum):
    """Reasons carried by ERROR replies."""

    SERVICE_UNAVAILABLE = "service_unavailable"
    EXPIRED = "expired"
    WORKER_LOST = "worker_lost"
    BAD_REQUEST = "bad_request"
    INTERNAL = "internal"
    PROVIDER = "provider_error"
    BUDGET = "budget_exceeded"
    NO_CANDIDATES = "no_candidates"
    UNAUTHORIZED = "unauthorized"  # the sender's role (the broker's roles file) forbids it


def header(command: Command) -> bytes:
    return b"ITAS" + bytes((PROTOCOL_VERSION, command))


READY, REQUEST, REPLY, ERROR, HEARTBEAT, DISCONNECT = (header(c) for c in Command)
COMMAND_BY_HEADER: dict[bytes, Command] = {header(c): c for c in Command}


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes, what: str = "body") -> Any:
    """Decode msgpack, naming the frame in the error so a bad peer is easy to find."""
    try:
        return msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"{what}: not valid msgpack ({exc})") from exc


def command_of(frame: bytes) -> Command:
    command = COMMAND_BY_HEADER.get(frame)
    if command is None:
        if frame[:4] == b"ITAS" and len(frame) == 6:
            raise ProtocolError(f"header: unsupported protocol version {frame[4]}")
        raise ProtocolError(f"header: not an itas header: {frame[:16]!r}")
    return command


def ready_body(service: str, credit: int, name: str, heartbeat_ms: int) -> bytes:
    return pack({"service": service, "credit": credit, "name": name,
                 "heartbeat_ms": heartbeat_ms})


def parse_ready(frame: bytes) -> tuple[str, int, str, int | None]:
    body = unpack(frame, "READY body")
    if not isinstance(body, dict):
        raise ProtocolError("READY body: expected a map")
    service, credit, name = body.get("service"), body.get("credit"), body.get("name", "")
    if not isinstance(service, str) or not 0 < len(service) <= MAX_SERVICE_NAME:
        raise ProtocolError("READY body: 'service' must be a non-empty string")
    if not isinstance(credit, int) or isinstance(credit, bool) or not 0 < credit <= 100_000:
        raise ProtocolError("READY body: 'credit' must be an integer in 1..100000")
    heartbeat_ms = body.get("heartbeat_ms")
    if heartbeat_ms is not None and (not isinstance(heartbeat_ms, int)
                                     or not 10 <= heartbeat_ms <= 600_000):
        raise ProtocolError("READY body: 'heartbeat_ms' must be an integer in 10..600000")
    return service, credit, str(name), heartbeat_ms


def request_meta(request_id: int, service: str, timeout_ms: int) -> bytes:
    return pack([request_id, service, timeout_ms])


def parse_request_meta(frame: bytes) -> tuple[int, str, int]:
    meta = unpack(frame, "REQUEST meta")
    if (
        not isinstance(meta, list)
        or len(meta) != 3
        or not isinstance(meta[0], int)
        or not isinstance(meta[1], str)
        or not isinstance(meta[2], int)
    ):
        raise ProtocolError("REQUEST meta: expected [request_id:int, service:str, timeout_ms:int]")
    if not 0 < len(meta[1]) <= MAX_SERVICE_NAME or meta[2] <= 0:
        raise ProtocolError("REQUEST meta: empty service name or non-positive timeout")
    return meta[0], meta[1], meta[2]


def reply_meta(request_id: int, attempts: int) -> bytes:
    return pack([request_id, attempts])


def parse_reply_meta(frame: bytes) -> tuple[int, int]:
    meta = unpack(frame, "REPLY meta")
    if not (isinstance(meta, list) and len(meta) == 2
            and isinstance(meta[0], int) and isinstance(meta[1], int)):
        raise ProtocolError("REPLY meta: expected [request_id:int, attempts:int]")
    return meta[0], meta[1]


def error_body(code: str, message: str) -> bytes:
    return pack([str(code), message])


def parse_error(frame: bytes) -> tuple[str, str]:
    body = unpack(frame, "ERROR body")
    if not isinstance(body, list) or len(body) != 2 or not all(isinstance(x, str) for x in body):
        raise ProtocolError("ERROR body: expected [code:str, message:str]")
    return body[0], body[1]
