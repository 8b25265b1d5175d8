"""Webhook signatures (pure, no I/O): ``X-Crm-Signature: sha256=<hex>`` is
HMAC-SHA256(secret, ``f"{timestamp}."`` + raw body), with ``X-Crm-Timestamp`` in unix
seconds. Signing the timestamp with the body lets a stale timestamp be refused, which bounds
how long a captured delivery could be replayed; the delivery log catches replays inside that
window."""

from __future__ import annotations

import hashlib
import hmac
import re

from crm_platform.errors import Unauthenticated

SIGNATURE_HEADER = "X-Crm-Signature"
TIMESTAMP_HEADER = "X-Crm-Timestamp"
SCHEME = "sha256="
# Unix seconds only: int() would also take "+1", " 1" or "1_000".
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def digest(secret: str, timestamp: int, body: bytes) -> str:
    """The lower-case hex HMAC of one delivery."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Crm-Signature`` value a sender puts on ``body``."""
    return SCHEME + digest(secret, timestamp, body)


def check_headers(
    signature: str | None, timestamp: str | None, *, now: float, tolerance: int
) -> tuple[str, int]:
    """The signature and the timestamp, if both headers are present and the timestamp is
    within ``tolerance`` seconds of ``now``. Needs no secret, so junk is refused before any
    database work."""
    if not signature or not timestamp:
        raise Unauthenticated(
            f"{SIGNATURE_HEADER} and {TIMESTAMP_HEADER} headers are required",
            reason="WEBHOOK_SIGNATURE_MISSING",
        )
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        raise Unauthenticated(
            f"{TIMESTAMP_HEADER} must be unix seconds", reason="WEBHOOK_TIMESTAMP_INVALID"
        )
    seconds = int(timestamp)
    if abs(now - seconds) > tolerance:
        raise Unauthenticated(
            f"{TIMESTAMP_HEADER} is more than {tolerance} s from the server's clock",
            reason="WEBHOOK_TIMESTAMP_STALE",
        )
    return signature, seconds


def verify(secret: str, signature: str, timestamp: int, body: bytes) -> str:
    """The verified digest (lower-case hex: the delivery's replay key, so a re-cased copy of
    the same signature is still a replay). Compared in constant time."""
    expected = digest(secret, timestamp, body)
    given = signature[len(SCHEME) :] if signature.startswith(SCHEME) else ""
    if not _HEX_RE.fullmatch(given) or not hmac.compare_digest(given.lower(), expected):
        raise Unauthenticated(
            f"{SIGNATURE_HEADER} does not match the body", reason="WEBHOOK_SIGNATURE_INVALID"
        )
    return expected
