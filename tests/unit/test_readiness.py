"""/readyz: every check with its details, 200 only when all pass, 503 naming what failed; the
platform checks are cached so a polling load balancer cannot hammer the platform."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
from relay_support import make_settings

from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.config import Settings
from hitl_relay.http_app import create_app, running
from hitl_relay.ports import Backend, Check, PlatformReadiness
from hitl_relay.readiness import EXPECTED_SCHEMA_VERSION, ReadinessMonitor, migrations_check
from hitl_relay.resilience import CircuitBreaker


@asynccontextmanager
async def readyz_of(
    platform: MemoryPlatform, **settings: object
) -> AsyncIterator[httpx.AsyncClient]:
    config: Settings = make_settings(api_keys="readiness-key-0123456789", **settings)

    @asynccontextmanager
    async def backend(_settings: Settings) -> AsyncIterator[Backend]:
        yield platform.backend()

    async with (
        running(create_app(config, backend=backend)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        yield http


async def test_a_healthy_platform_is_ready_with_every_check_detailed() -> None:
    async with readyz_of(MemoryPlatform()) as http:
        response = await http.get("/readyz")
    body = response.json()
    assert response.status_code == 200
    assert body["ready"] is True
    assert "reasons" not in body
    checks = body["checks"]
    assert set(checks) == {"database", "realtime", "migrations", "breaker"}
    assert checks["database"]["ok"] is True
    assert checks["realtime"]["ok"] is True
    assert checks["database"]["latency_ms"] >= 0
    assert checks["migrations"] == {
        "ok": True,
        "expected": EXPECTED_SCHEMA_VERSION,
        "found": EXPECTED_SCHEMA_VERSION,
    }
    assert checks["breaker"] == {"ok": True, "state": "closed", "last_error": None}


async def test_an_unreachable_database_is_not_ready_and_says_why() -> None:
    platform = MemoryPlatform()
    platform.faults.rpc_down = True
    async with readyz_of(platform) as http:
        response = await http.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["ready"] is False
    assert body["checks"]["database"]["ok"] is False
    assert "platform down" in body["checks"]["database"]["reason"]
    assert body["checks"]["migrations"]["found"] is None
    assert any(r.startswith("database: ") and "platform down" in r for r in body["reasons"])


async def test_a_database_behind_the_relays_schema_names_both_versions() -> None:
    platform = MemoryPlatform()
    platform.schema_version = "20261125002200"
    async with readyz_of(platform) as http:
        response = await http.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    migrations = body["checks"]["migrations"]
    assert (migrations["ok"], migrations["found"]) == (False, "20261125002200")
    assert "apply the newer migrations" in migrations["reason"]
    assert EXPECTED_SCHEMA_VERSION in migrations["reason"]


async def test_a_database_without_the_schema_function_asks_for_the_migrations() -> None:
    platform = MemoryPlatform()
    platform.schema_version = None
    async with readyz_of(platform) as http:
        body = (await http.get("/readyz")).json()
    assert "hitl_schema_version() is missing" in body["checks"]["migrations"]["reason"]


async def test_realtime_down_is_not_ready() -> None:
    platform = MemoryPlatform()
    platform.disconnect()
    async with readyz_of(platform) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reasons"] == ["realtime: no realtime socket connected"]


async def test_an_open_breaker_is_not_ready_and_names_the_last_failure() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=60)
    breaker.record_failure("hitl_open_case: ConnectError: refused")
    monitor = ReadinessMonitor(MemoryPlatform(), breaker)
    readiness = await monitor.check()
    assert readiness.ready is False
    check = readiness.checks["breaker"]
    assert (check["ok"], check["state"]) == (False, "open")
    assert check["last_error"] == "hitl_open_case: ConnectError: refused"
    assert "circuit breaker open" in readiness.reasons[0]


async def test_platform_checks_are_cached_and_shared_by_concurrent_pollers() -> None:
    now = [0.0]
    platform = MemoryPlatform()
    monitor = ReadinessMonitor(platform, None, ttl_s=1.0, clock=lambda: now[0])
    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(monitor.check)
    assert monitor.probes == 1
    assert platform.rpc_calls.count("schema_version") == 1
    now[0] = 1.01
    await monitor.check()
    assert monitor.probes == 2


class _Hanging:
    async def readiness(self, timeout_s: float) -> PlatformReadiness:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_hanging_platform_fails_the_checks_within_the_bound() -> None:
    monitor = ReadinessMonitor(_Hanging(), None, timeout_s=0.2)
    started = anyio.current_time()
    readiness = await monitor.check()
    elapsed = anyio.current_time() - started
    print(f"hanging probe cut off after {elapsed * 1000:.0f} ms (bound 200 ms + 100 ms margin)")
    assert readiness.ready is False
    assert readiness.checks["database"]["reason"] == "no answer within 0.2 s"
    assert elapsed < 1.0


def test_a_check_renders_its_reason_only_when_it_has_one() -> None:
    assert Check(ok=True, latency_ms=1.234).as_json() == {"ok": True, "latency_ms": 1.2}
    assert Check(ok=False, latency_ms=2.0, reason="x").as_json()["reason"] == "x"


def test_a_key_that_may_not_run_the_schema_function_is_named_not_the_migrations() -> None:
    platform = PlatformReadiness(
        database=Check(ok=True, latency_ms=1.0),
        realtime=Check(ok=True, latency_ms=0.0),
        schema_version=None,
        schema_error="42501 permission denied for function hitl_schema_version",
    )
    check = migrations_check(platform, EXPECTED_SCHEMA_VERSION)
    assert check["ok"] is False
    assert "must be the service_role key" in check["reason"]
    assert "apply the migrations" not in check["reason"]
