"""Signed webhooks, like Stripe's: `x-hitl-signature: t=<unix seconds>,v1=<hex>`, where `v1` is
the hex HMAC-SHA256, keyed with the shared secret, of `f"{t}.{body}"` (the raw body bytes).
Callbacks (`hitl_relay.callbacks`) and escalation webhooks (`adapters.notify`) sign this way."""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "x-hitl-signature"
# A receiver refuses timestamps further than this from its clock (a replayed delivery).
TOLERANCE_S = 300


def sign_callback(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `x-hitl-signature` header value for `body`."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_callback_signature(
    secret: str,
    body: bytes,
    header: str | None,
    *,
    tolerance_s: int = TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True when `header` signs `body` with `secret` and its timestamp is within
    `tolerance_s` of now (either direction). Constant-time; several `v1=` entries allowed."""
    if not header:
        return False
    stamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and len(value) <= 12:
            stamp = int(value)
        elif name == "v1" and value:
            candidates.append(value.strip())
    if stamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    return matched
