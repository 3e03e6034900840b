"""Readiness: may a load balancer send this relay calls? (`GET /readyz`, `hitl-relay doctor`)

Four checks, each with whether it passed and why not:

    database    one RPC through the platform (`hitl_schema_version()`), bounded
    realtime    a Realtime socket is connected and presence on `operators` is joined
    migrations  the database's schema version is the one this relay expects
    breaker     the circuit breaker is not open

The platform checks come from the backend's `ReadinessProbe` (adapters); they are cached for
`ttl_s` and run by one caller at a time, so a load balancer polling `/readyz` costs the platform
at most one RPC a second. The breaker is read live (it costs nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from hitl_relay import metrics
from hitl_relay.ports import EXPECTED_SCHEMA_VERSION, Check, PlatformReadiness, ReadinessProbe
from hitl_relay.resilience import CircuitBreaker

# The platform checks together stay under a second (a load balancer's probe timeout is ~1 s).
__all__ = ["EXPECTED_SCHEMA_VERSION", "ReadinessMonitor", "migrations_check"]

CHECK_TIMEOUT_S = 0.8
CACHE_TTL_S = 1.0


@dataclass(frozen=True)
class Readiness:
    """The outcome of the checks, as `/readyz` renders it."""

    ready: bool
    checks: dict[str, dict[str, Any]]
    reasons: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ready": self.ready, "checks": self.checks}
        if self.reasons:
            body["reasons"] = self.reasons
        return body


def migrations_check(platform: PlatformReadiness, expected: str) -> dict[str, Any]:
    """{"ok", "expected", "found"} plus a reason when they differ."""
    found = platform.schema_version
    body: dict[str, Any] = {"ok": found == expected, "expected": expected, "found": found}
    if not platform.database.ok:
        body["reason"] = "unknown: the database is unreachable"
    elif platform.schema_error is not None and platform.schema_error.startswith("42501"):
        body["reason"] = (
            f"hitl_schema_version() may not be run with this key ({platform.schema_error}): "
            "SUPABASE_SERVICE_ROLE_KEY must be the service_role key"
        )
    elif found is None:
        detail = f" ({platform.schema_error})" if platform.schema_error else ""
        body["reason"] = (
            f"hitl_schema_version() is missing{detail}: apply the migrations "
            "(hitl-relay migrate --database-url ... or supabase db push)"
        )
    elif found < expected:
        body["reason"] = (
            f"the database is at {found}, this relay needs {expected}: apply the newer migrations"
        )
    elif found > expected:
        body["reason"] = (
            f"the database is at {found}, newer than this relay ({expected}): upgrade the relay"
        )
    return body


def breaker_check(breaker: CircuitBreaker | None) -> dict[str, Any]:
    if breaker is None:
        return {"ok": True, "state": "none", "last_error": None}
    ok = not breaker.is_open
    body: dict[str, Any] = {
        "ok": ok,
        "state": breaker.state.name.lower(),
        "last_error": breaker.last_error,
    }
    if not ok:
        body["reason"] = (
            f"circuit breaker open after repeated platform failures (last: {breaker.last_error}); "
            f"next probe in {breaker.seconds_until_probe():.1f} s"
        )
    return body


def summarise(
    platform: PlatformReadiness, breaker: CircuitBreaker | None, expected: str
) -> Readiness:
    checks: dict[str, dict[str, Any]] = {
        "database": platform.database.as_json(),
        "realtime": platform.realtime.as_json(),
        "migrations": migrations_check(platform, expected),
        "breaker": breaker_check(breaker),
    }
    reasons = [
        f"{name}: {check.get('reason', 'failed')}"
        for name, check in checks.items()
        if not check["ok"]
    ]
    return Readiness(ready=not reasons, checks=checks, reasons=reasons)


def unprobed() -> PlatformReadiness:
    """For a backend without a readiness probe: nothing to say against it."""
    skipped = Check(ok=True, latency_ms=0.0, reason="not checked (the backend has no probe)")
    return PlatformReadiness(
        database=skipped, realtime=skipped, schema_version=EXPECTED_SCHEMA_VERSION
    )


async def probe_platform(probe: ReadinessProbe, timeout_s: float) -> PlatformReadiness:
    """`probe.readiness(timeout_s)`, cut off (as failed checks) if it overruns."""
    started = time.perf_counter()
    with anyio.move_on_after(timeout_s + 0.1):
        return await probe.readiness(timeout_s)
    elapsed_ms = (time.perf_counter() - started) * 1000
    late = Check(ok=False, latency_ms=elapsed_ms, reason=f"no answer within {timeout_s:g} s")
    return PlatformReadiness(database=late, realtime=late, schema_version=None)


class ReadinessMonitor:
    """Runs the checks for `/readyz`; platform checks cached for `ttl_s`, one run at a time."""

    def __init__(
        self,
        probe: ReadinessProbe | None,
        breaker: CircuitBreaker | None,
        *,
        expected: str = EXPECTED_SCHEMA_VERSION,
        timeout_s: float = CHECK_TIMEOUT_S,
        ttl_s: float = CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._breaker = breaker
        self._expected = expected
        self._timeout_s = timeout_s
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: tuple[float, PlatformReadiness] | None = None
        self._lock = anyio.Lock()
        self.probes = 0  # platform probes run (tests check the cache with it)

    async def check(self) -> Readiness:
        """The verdict (also set on the `hitl_ready` gauge, for the readiness alert)."""
        readiness = summarise(await self._platform(), self._breaker, self._expected)
        metrics.ready.set(1 if readiness.ready else 0)
        return readiness

    async def _platform(self) -> PlatformReadiness:
        if self._probe is None:
            return unprobed()
        async with self._lock:  # concurrent pollers wait for one probe and share it
            cached = self._cached
            if cached is not None and self._clock() - cached[0] < self._ttl_s:
                return cached[1]
            self.probes += 1
            platform = await probe_platform(self._probe, self._timeout_s)
            self._cached = (self._clock(), platform)
            return platform
