"""/readyz over the Supabase adapter against the devstack: ready once realtime presence is joined;
a database missing the schema function says to apply the migrations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
from waiting import wait_until

from hitl_devstack.server import Devstack
from hitl_relay.config import Settings
from hitl_relay.http_app import create_app, running
from hitl_relay.readiness import EXPECTED_SCHEMA_VERSION


@asynccontextmanager
async def relay_http(devstack: Devstack) -> AsyncIterator[httpx.AsyncClient]:
    config = Settings(
        _env_file=None,
        backend="supabase",
        supabase_url=devstack.url,
        supabase_service_role_key=devstack.keys.service_role_key,
        api_keys="readiness-key-0123456789",
    )
    async with running(create_app(config)) as url, httpx.AsyncClient(base_url=url) as http:
        yield http


async def ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def test_the_relay_on_the_devstack_is_ready_with_every_check_passing(
    devstack: Devstack,
) -> None:
    async with relay_http(devstack) as http:
        await wait_until(lambda: ready(http), "/readyz 200 (presence joined)", 10)
        body = (await http.get("/readyz")).json()
    checks = body["checks"]
    print(
        f"readyz: database {checks['database']['latency_ms']} ms, "
        f"realtime {checks['realtime']['latency_ms']} ms"
    )
    assert body["ready"] is True
    assert checks["database"]["ok"] is True
    assert checks["realtime"]["ok"] is True
    assert checks["migrations"]["found"] == EXPECTED_SCHEMA_VERSION
    assert checks["breaker"]["state"] == "closed"


async def test_a_database_missing_the_schema_function_is_not_ready(
    devstack: Devstack, db: asyncpg.Connection
) -> None:
    await db.execute("drop function public.hitl_schema_version()")
    async with relay_http(devstack) as http:
        response = await http.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["checks"]["database"]["ok"] is True  # Postgres answered; the schema is behind
    migrations = body["checks"]["migrations"]
    assert migrations["found"] is None
    assert "hitl_schema_version() is missing" in migrations["reason"]
    assert "apply the migrations" in migrations["reason"]
