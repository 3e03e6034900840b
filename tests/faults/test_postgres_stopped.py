"""Postgres stopped under a running devstack and relay: every call gets the fallback within a
second, the breaker opens, /readyz says why (database check false, with the reason); Postgres
back: the breaker closes by itself (its half-open probe is the next call) and calls are answered.

The cluster is this test's own (under `.hitl/`), so stopping it touches no other test.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from fault_stack import answer_in_db, sessions_by_call
from inprocess_relay import ask as ask_relay
from inprocess_relay import readyz as readyz_of
from inprocess_relay import relay_on
from waiting import wait_until

from hitl_devstack.cluster import Cluster, free_port
from hitl_devstack.keys import make_keys
from hitl_devstack.realtime import RealtimeLimits
from hitl_devstack.server import Devstack
from hitl_relay import migrate

ROOT = Path(__file__).resolve().parents[2]
FALLBACK_BOUND_S = 1.0  # platform_unreachable within about a second
# A loaded 2-core machine (other suites running) may add scheduling delay to the round trip.
FALLBACK_MARGIN_S = 0.5
BREAKER_RESET_S = 2.0


@dataclass
class Rig:
    cluster: Cluster
    db_url: str
    devstack: Devstack
    relay_url: str


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    home = Path(os.environ.get("HITL_HOME", ROOT / ".hitl")) / f"faults-pg-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(home / "pg", port=free_port())
    cluster.start()
    try:
        admin = await asyncpg.connect(cluster.url())
        try:
            await admin.execute("create database hitl")
        finally:
            await admin.close()
        db_url = cluster.url("hitl")
        await migrate.apply(db_url, local=True)
        limits = RealtimeLimits(channel_error_backoff_s=0.05, connect_error_backoff_s=0.05)
        devstack = Devstack(db_url, make_keys(secrets.token_urlsafe(32)), limits=limits)
        await devstack.start()
        try:
            async with relay_on(
                devstack,
                platform_timeout_seconds=0.5,
                breaker_failure_threshold=2,
                breaker_window_seconds=30,
                breaker_reset_seconds=BREAKER_RESET_S,
            ) as url:
                yield Rig(cluster, db_url, devstack, url)
        finally:
            await devstack.stop()
    finally:
        cluster.destroy()
        shutil.rmtree(home, ignore_errors=True)


async def ask(rig: Rig, call_id: str) -> tuple[dict[str, Any], float]:
    return await ask_relay(rig.relay_url, call_id)


async def answer_when_waiting(rig: Rig, call_id: str) -> None:
    """The operator answers the call's case as soon as its session waits."""

    async def waiting() -> bool:
        row = (await sessions_by_call(rig.db_url, [call_id])).get(call_id)
        return row is not None and row["status"] == "waiting"

    await wait_until(waiting, f"{call_id} waiting", 15)
    row = (await sessions_by_call(rig.db_url, [call_id]))[call_id]
    await answer_in_db(rig.db_url, {str(row["case_id"]): f"Yes ({call_id})."}, str(uuid.uuid4()))


async def answered_call(rig: Rig, call_id: str) -> tuple[dict[str, Any], float]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(answer_when_waiting, rig, call_id)
        result, elapsed = await ask(rig, call_id)
        tg.cancel_scope.cancel()
    return result, elapsed


async def readyz(rig: Rig) -> tuple[int, dict[str, Any]]:
    return await readyz_of(rig.relay_url)


async def test_postgres_stopped_falls_back_fast_opens_the_breaker_and_recovers(rig: Rig) -> None:
    async def ready() -> bool:
        return (await readyz(rig))[0] == 200

    await wait_until(ready, "/readyz 200 before the outage", 15)
    before, _ = await answered_call(rig, "before-outage")
    assert before["status"] == "answered"

    rig.cluster.stop()  # fast shutdown: every connection of the devstack is cut
    stopped_at = time.perf_counter()
    fallbacks: list[float] = []
    waited_ms: list[int] = []
    for n in range(5):
        result, elapsed = await ask(rig, f"outage-{n}")
        assert result["status"] == "platform_unreachable", result
        fallbacks.append(elapsed)
        waited_ms.append(int(result["waited_ms"]))
    print(
        f"\npostgres stopped: fallback round trips {[f'{s * 1000:.0f} ms' for s in fallbacks]}"
        f" (relay waited {waited_ms} ms); bound {FALLBACK_BOUND_S:g} s"
        f" + {FALLBACK_MARGIN_S:g} s margin for a loaded machine"
    )
    assert max(fallbacks) <= FALLBACK_BOUND_S + FALLBACK_MARGIN_S
    # Once the breaker is open the platform is not even tried (until the reset time has passed
    # and one call goes through as the half-open probe).
    assert waited_ms[2] < 100

    async def says_why() -> bool:
        status, body = await readyz(rig)
        return status == 503 and body["checks"]["database"]["ok"] is False

    await wait_until(says_why, "/readyz naming the database", 5)
    status, body = await readyz(rig)
    checks = body["checks"]
    print(f"readyz while down: {status} {body['reasons']}")
    assert checks["database"]["reason"]  # why, e.g. PGRST000 Database connection error
    assert "hitl_schema_version" in checks["database"]["reason"]
    assert checks["breaker"]["state"] in ("open", "half_open")
    assert checks["breaker"]["last_error"]
    assert any(r.startswith("database: ") for r in body["reasons"])

    rig.cluster.start()
    restarted_at = time.perf_counter()
    print(f"postgres down for {restarted_at - stopped_at:.2f} s")

    # The breaker is left alone: once its reset time has passed, the next call is the
    # half-open probe; calls keep coming (as they would from agents) until one is answered.
    attempts = 0
    recovered: dict[str, Any] | None = None
    with anyio.fail_after(30):
        while recovered is None:
            attempts += 1
            result, _ = await answered_call(rig, f"after-{attempts}")
            if result["status"] == "answered":
                recovered = result
            else:
                assert result["status"] == "platform_unreachable", result
    recovery_s = time.perf_counter() - restarted_at
    # An answer committed before the devstack listens again is not broadcast (Realtime
    # broadcasts are not durable): the call then gets it from its last read at the deadline.
    print(
        f"first answered call {recovery_s:.2f} s after postgres restarted ({attempts} calls; "
        f"it waited {recovered['waited_ms']} ms of its 10 s)"
    )

    status, body = await readyz(rig)
    assert body["checks"]["breaker"]["state"] == "closed"
    next_calls = [await answered_call(rig, f"steady-{n}") for n in range(3)]
    assert [r["status"] for r, _ in next_calls] == ["answered"] * 3
    # Delivered live over Realtime, not by the last read at the 10 s deadline.
    assert all(r["waited_ms"] < 9000 for r, _ in next_calls), next_calls
    print(f"after recovery: {[f'{s * 1000:.0f} ms' for _, s in next_calls]} per answered call")

    async def ready_again() -> bool:
        return (await readyz(rig))[0] == 200

    await wait_until(ready_again, "/readyz 200 after recovery", 10)
