"""The itas wire protocol (version 2): every frame layout in one place.

Clients and workers connect DEALER sockets to the broker's ROUTER. Every message
starts with a 6-byte header, ``b"ITAS" + version + command``; the broker reads
routing data from small frames and never decodes request or reply bodies, which
are msgpack written and read by the two ends.

    worker -> broker  READY      [hdr, msgpack {"service", "credit", "name", "heartbeat_ms"}]
    client -> broker  REQUEST    [hdr, key, msgpack [service, timeout_ms], body]
    client -> broker  CANCEL     [hdr, key]
    broker -> worker  REQUEST    [hdr, ticket, body]
    broker -> worker  CANCEL     [hdr, ticket]
    worker -> broker  REPLY      [hdr, ticket, body]
    worker -> broker  ERROR      [hdr, ticket, msgpack [code, message]]
    broker -> client  REPLY      [hdr, key, msgpack attempts, body]
    broker -> client  ERROR      [hdr, key, msgpack attempts, msgpack [code, message]]
    broker -> peer    HEARTBEAT  [hdr, broker_epoch]   peer -> broker  HEARTBEAT [hdr]
    worker -> broker  DISCONNECT [hdr]                 broker -> worker DISCONNECT [hdr]

Version 2 (version 1 had per-process ticket counters and no deadlines or keys):

- A request ``key`` (``KEY_BYTES`` random-prefixed bytes the client makes, unique per
  request) travels with the request to the worker (inside the ticket) and back
  with its reply; the broker forwards a reply only for a ticket it issued, key
  included, and the client accepts one only if the key is one it is waiting
  for. A reply can therefore never be delivered to another request. A resend
  carries the same key, so the broker keeps one copy of a request however often
  it is sent (and routes the reply to the socket that sent it last).
- A ``ticket`` is the broker's name for one attempt, which the worker echoes:
  ``epoch (8 bytes) + counter (8) + timeout_ms (4, big-endian) + key`` (see
  ``ticket``; one frame, so the worker's frames cost no more than in version 1). The epoch changes at every broker start, so a late reply to
  an old broker's ticket can never match a new one; such replies are dropped and
  counted, without any answer (an answer per stale reply made a re-announce storm).
  A worker seeing a new epoch re-announces and stops the work of old tickets,
  whose replies nobody would take.
- ``timeout_ms`` is what is left of the request's time; the broker never hands a
  worker an expired request, ends in-flight ones at their deadline with a
  ``deadline`` error to the client and a CANCEL to the worker, and forwards a
  client's CANCEL (it gave up) to the worker running the request.
- Peers learn the epoch from HEARTBEAT answers: a client asks (an empty
  HEARTBEAT) when it opens and before sending after a silence, and resends what
  it sent under another epoch.

``attempts`` tells the client how many workers the request was given to (more
than one: a worker was lost). Errors the broker itself replies with:
``service_unavailable`` (no worker serves it), ``deadline``, ``overloaded``
(a queue limit), ``too_large``, ``worker_lost``. A broker answers DISCONNECT to a
worker it does not know that replies with a current ticket; the worker announces
again. Each worker sets the heartbeat pace between it and the broker
(``heartbeat_ms``), so agents with different settings share one broker.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import msgpack

from itas.errors import ProtocolError

PROTOCOL_VERSION = 2
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_SERVICE_NAME = 255
KEY_BYTES = 16
MAX_KEY_BYTES = 64
EPOCH_BYTES = 8

#: Service names the broker answers itself instead of routing to a worker.
STATUS_SERVICE = "broker.status"


class Command(enum.IntEnum):
    READY = 1
    REQUEST = 2
    REPLY = 3
    ERROR = 4
    HEARTBEAT = 5
    DISCONNECT = 6
    CANCEL = 7


class ErrorCode(enum.StrEnum):
    """Reasons carried by ERROR replies."""

    SERVICE_UNAVAILABLE = "service_unavailable"
    DEADLINE = "deadline"
    OVERLOADED = "overloaded"
    TOO_LARGE = "too_large"
    WORKER_LOST = "worker_lost"
    BAD_REQUEST = "bad_request"
    INTERNAL = "internal"
    PROVIDER = "provider_error"
    BUDGET = "budget_exceeded"
    NO_CANDIDATES = "no_candidates"


def header(command: Command) -> bytes:
    return b"ITAS" + bytes((PROTOCOL_VERSION, command))


READY, REQUEST, REPLY, ERROR, HEARTBEAT, DISCONNECT, CANCEL = (header(c) for c in Command)
COMMAND_BY_HEADER: dict[bytes, Command] = {header(c): c for c in Command}


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def packer() -> Callable[[Any], bytes]:
    """A private packer, faster than ``pack`` (no set-up per call); for one thread only."""
    return msgpack.Packer(use_bin_type=True).pack


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


def request_meta(service: str, timeout_ms: int) -> bytes:
    return pack([service, timeout_ms])


def parse_request_meta(frame: bytes) -> tuple[str, int]:
    meta = unpack(frame, "REQUEST meta")
    if not (isinstance(meta, list) and len(meta) == 2 and isinstance(meta[0], str)
            and isinstance(meta[1], int) and not isinstance(meta[1], bool)):
        raise ProtocolError("REQUEST meta: expected [service:str, timeout_ms:int]")
    if not 0 < len(meta[0]) <= MAX_SERVICE_NAME or meta[1] <= 0:
        raise ProtocolError("REQUEST meta: empty service name or non-positive timeout")
    return meta[0], meta[1]


def check_key(key: bytes) -> bytes:
    if not 0 < len(key) <= MAX_KEY_BYTES:
        raise ProtocolError(f"request key: expected 1..{MAX_KEY_BYTES} bytes, got {len(key)}")
    return key


TICKET_HEAD = EPOCH_BYTES + 8 + 4  # epoch, counter, timeout_ms; the request key follows


def ticket(epoch: bytes, counter: int, timeout_ms: int, key: bytes) -> bytes:
    return epoch + counter.to_bytes(8, "big") + min(timeout_ms, 2**32 - 1).to_bytes(4, "big") + key


def ticket_timeout_ms(frame: bytes) -> int:
    """What was left of the request's time when the broker sent it."""
    if len(frame) <= TICKET_HEAD:
        raise ProtocolError(f"ticket: expected more than {TICKET_HEAD} bytes, got {len(frame)}")
    return int.from_bytes(frame[EPOCH_BYTES + 8:TICKET_HEAD], "big")


def parse_int(frame: bytes, what: str) -> int:
    value = unpack(frame, what)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"{what}: expected a non-negative integer")
    return value


def error_body(code: str, message: str) -> bytes:
    return pack([str(code), message])


def parse_error(frame: bytes) -> tuple[str, str]:
    body = unpack(frame, "ERROR body")
    if not isinstance(body, list) or len(body) != 2 or not all(isinstance(x, str) for x in body):
        raise ProtocolError("ERROR body: expected [code:str, message:str]")
    return body[0], body[1]
