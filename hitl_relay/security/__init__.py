"""Security controls of the relay's HTTP edge (design.md, "Security"; docs/security.md).

    settings.py    SecuritySettings: the HITL_* security variables (`Settings.security`)
    keys.py        API keys: plain or sha256:<hex>, rotation, revocation, compromised keys,
                   constant-time comparison, `generate_key()`
    network.py     client address behind trusted proxies, IP allowlist, forwarded scheme
    ratelimit.py   per-address / per-key / per-call limits (limits; memory or shared counters)
    audit.py       AuditSink (hil_audit, log, memory), log redaction
    middleware.py  the ASGI guards (HTTPS, IP, limits, body size, Origin, auth)
    layer.py       SecurityLayer: builds all of the above for one app

`hitl_relay.retell` (the signed Retell webhook) and `hitl_relay.callbacks` (signed outgoing
callbacks, SSRF guard) build on these. Nothing here imports `hitl_relay.config`: `config`
composes `settings` from this package, and the layer reads the relay's settings through a
protocol (`layer.Settings`). The platform is reached only through the backend's ports
(`AuditStore`, `RateLimitStore`).
"""

from __future__ import annotations

from hitl_relay.security.audit import (
    AuditEvent,
    AuditSink,
    LogAuditSink,
    MemoryAuditSink,
    NullAuditSink,
    PlatformAuditSink,
    ThrottledAuditSink,
    redacted,
)
from hitl_relay.security.keys import (
    COMPROMISED_SHA256,
    KeyRing,
    env_lines,
    generate_key,
    key_problems,
)
from hitl_relay.security.layer import SecurityLayer
from hitl_relay.security.ratelimit import (
    Decision,
    MemoryRateLimiter,
    RateLimiter,
    Rule,
    SharedRateLimiter,
)
from hitl_relay.security.settings import SecuritySettings

__all__ = [
    "COMPROMISED_SHA256",
    "AuditEvent",
    "AuditSink",
    "Decision",
    "KeyRing",
    "LogAuditSink",
    "MemoryAuditSink",
    "MemoryRateLimiter",
    "NullAuditSink",
    "PlatformAuditSink",
    "RateLimiter",
    "Rule",
    "SecurityLayer",
    "SecuritySettings",
    "SharedRateLimiter",
    "ThrottledAuditSink",
    "env_lines",
    "generate_key",
    "key_problems",
    "redacted",
]
