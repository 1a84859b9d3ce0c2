"""Checking an AWS Signature Version 4 the way AWS does, for the fake Bedrock endpoint.

The fake server knows the test's secret key and recomputes the signature from
the request exactly as it arrived (method, raw path, query, the headers the
client says it signed, body hash), following AWS's published SigV4 recipe. A
request signed with another key, region or service, or changed after signing,
fails, so a passing test shows the real boto3 client signed for Bedrock with the
credentials of the environment, and that the secret itself never travelled
(only the signature does).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
AUTHORIZATION = re.compile(
    rf"^{ALGORITHM} Credential=(?P<key_id>[^/]+)/(?P<date>\d{{8}})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _canonical_query(query: str) -> str:
    pairs = sorted(part.partition("=")[::2] for part in query.split("&") if part)
    return "&".join(f"{key}={value}" for key, value in pairs)


def signature_problem(
    *,
    method: str,
    raw_path: str,
    headers: Mapping[str, str],
    body: bytes,
    key_id: str,
    secret: str,
    region: str,
    service: str,
) -> str | None:
    """None when the request is signed by ``key_id``/``secret`` for region and service.

    ``headers`` are lower-cased names; ``raw_path`` is the request target as sent
    (path and query, percent-encoding intact).
    """
    match = AUTHORIZATION.match(headers.get("authorization", ""))
    if match is None:
        return f"authorization header is not SigV4: {headers.get('authorization')!r}"
    expected = {"key_id": key_id, "region": region, "service": service}
    for field, value in expected.items():
        if match[field] != value:
            return f"signed with {field} {match[field]!r}, expected {value!r}"
    amz_date = headers.get("x-amz-date", "")
    if not amz_date.startswith(match["date"]):
        return f"x-amz-date {amz_date!r} does not match the credential date {match['date']}"
    path, _, query = raw_path.partition("?")
    signed = match["signed"].split(";")
    if "host" not in signed:
        return "the host header is not signed"
    missing = [name for name in signed if name not in headers]
    if missing:
        return f"signed header(s) {missing} missing from the request"
    canonical_headers = "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in signed)
    payload_hash = headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    if payload_hash != hashlib.sha256(body).hexdigest():
        return "body does not match its signed hash"
    canonical = "\n".join(
        [
            method.upper(),
            quote(path, safe="/~"),
            _canonical_query(query),
            canonical_headers,
            match["signed"],
            payload_hash,
        ]
    )
    scope = f"{match['date']}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(f"AWS4{secret}".encode(), match["date"])
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature, match["signature"]):
        return "signature does not match"
    return None
