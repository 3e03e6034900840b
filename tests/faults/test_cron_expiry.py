"""pg_cron expires a session past its expiry, and the relay waiting on that case is told.

A relay waits on a call; its session's deadline is moved into the past (as when a relay died and
another one is still waiting, or clocks drifted); then `hitl_expire_sessions()` runs, either
directly or as a pg_cron job scheduled into this test's database. The expiry broadcasts
`session` {status: expired} on `case:<id>`, and the waiting call returns at once with the
`timeout` fallback naming its case, long before its own deadline.

The SQL function's rules are tested in supabase/tests/30_expire_purge.sql and the job's
schedule in supabase/tests/90_jobs_cron.sql; this test is about the cron run and the relay.
Debian's pg_cron is 1.4 (no second-level schedules): the job is scheduled every minute, so the
cron run comes within 60 s. Among other tests, the cron case runs in a pytest process of its
own started at the beginning of the run, so that wait overlaps the others (conftest.py); its
item here passes only if it passed there.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg
import pytest
from fault_stack import sessions_by_call
from inprocess_relay import ask, relay_on
from own_run import OwnRun
from waiting import wait_until

from hitl_devstack.cluster import Cluster
from hitl_devstack.server import Devstack

CALL_TIMEOUT_S = 150  # the call's own deadline: far beyond the next cron minute
OWN_RUN_WAIT_S = 190  # the test's own timeout (200 s) in its run, started before this one


@asynccontextmanager
async def expiry_job(cluster: Cluster, database: str) -> AsyncIterator[CronJob]:
    """A copy of the expiry job scheduled into `database` (every minute); unscheduled on exit."""
    admin = await asyncpg.connect(cluster.url())  # pg_cron lives in `postgres`
    try:
        version = await admin.fetchval(
            "select extversion from pg_extension where extname = 'pg_cron'"
        )
        if version is None:
            # Where the migrations put it (a hosted project has it there): created anywhere
            # else it stays there for every later test on this cluster.
            await admin.execute("create extension pg_cron with schema pg_catalog")
            version = await admin.fetchval(
                "select extversion from pg_extension where extname = 'pg_cron'"
            )
        job = await admin.fetchval(
            "select cron.schedule_in_database($1, '* * * * *',"
            " 'select public.hitl_expire_sessions()', $2)",
            f"hitl-expire-test-{uuid.uuid4().hex[:8]}",
            database,
        )
        try:
            yield CronJob(admin, job, version)
        finally:
            await admin.execute("select cron.unschedule($1::bigint)", job)
    finally:
        await admin.close()


@dataclass
class CronJob:
    admin: asyncpg.Connection
    job_id: int
    pg_cron: str

    async def first_run(self) -> asyncpg.Record:
        """The job's first finished run (cron.job_run_details is written as it ends)."""
        found: list[asyncpg.Record] = []

        async def finished() -> bool:
            row = await self.admin.fetchrow(
                "select status, return_message, start_time, end_time from cron.job_run_details"
                " where jobid = $1 and status in ('succeeded', 'failed') order by runid limit 1",
                self.job_id,
            )
            found[:] = [row] if row is not None else []
            return row is not None

        await wait_until(finished, f"cron job {self.job_id}'s run recorded", 10)
        return found[0]


async def passed_in_its_own_run(run: OwnRun) -> None:
    """The test ran in `run` (started with the session): it passed there, and said so."""
    code = await asyncio.to_thread(run.proc.wait, OWN_RUN_WAIT_S)
    output = run.output()
    assert code == 0, output[-4000:]
    assert re.search(r"\b1 passed\b", output), output[-4000:]
    print("\n" + output[-1500:])


@pytest.mark.timeout(200)
@pytest.mark.parametrize("expire_by", ["function", "cron"])
async def test_an_overdue_session_expired_by_the_job_ends_the_waiting_call(
    expire_by: str,
    devstack: Devstack,
    db: asyncpg.Connection,
    pg_cluster: Cluster,
    cron_elsewhere: OwnRun | None,
) -> None:
    if cron_elsewhere is not None:
        await passed_in_its_own_run(cron_elsewhere)
        return
    call_id = f"cron-{expire_by}-{uuid.uuid4().hex[:8]}"
    database = await db.fetchval("select current_database()")
    outcome: dict[str, Any] = {}
    returned = anyio.Event()
    run: asyncpg.Record | None = None
    async with relay_on(devstack) as relay_url, anyio.create_task_group() as tg:

        async def call() -> None:
            outcome["result"], _ = await ask(relay_url, call_id, CALL_TIMEOUT_S)
            outcome["returned_at"] = time.perf_counter()
            returned.set()

        tg.start_soon(call)

        async def waiting() -> bool:
            row = (await sessions_by_call(devstack.db_url, [call_id])).get(call_id)
            return row is not None and row["status"] == "waiting"

        await wait_until(waiting, f"{call_id} waiting", 15)
        session = (await sessions_by_call(devstack.db_url, [call_id]))[call_id]
        await db.execute(
            "update hil_sessions set expires_at = now() - interval '1 second' where id = $1",
            session["id"],
        )
        if expire_by == "function":
            expired_at = time.perf_counter()
            assert await db.fetchval("select public.hitl_expire_sessions()") >= 1
            with anyio.fail_after(10):
                await returned.wait()  # told through the `session` event
            version = ""
        else:
            async with expiry_job(pg_cluster, database) as job:
                scheduled_at = time.perf_counter()
                with anyio.fail_after(75):  # the next minute boundary, plus a loaded machine
                    await returned.wait()
                run = await job.first_run()
                version = job.pg_cron
            expired_at = scheduled_at
            assert run["status"] == "succeeded", dict(run)
    result = outcome["result"]
    after = await sessions_by_call(devstack.db_url, [call_id])
    told_ms = (outcome["returned_at"] - expired_at) * 1000
    if run is None:
        print(f"\nexpired by the function: the call returned {told_ms:.0f} ms after it ran")
    else:
        ran_ms = (run["end_time"] - run["start_time"]).total_seconds() * 1000
        print(
            f"\nexpired by pg_cron {version} (job ran {ran_ms:.0f} ms, {run['return_message']!r}):"
            f" the call returned {told_ms / 1000:.1f} s after the job was scheduled"
            f" (next minute boundary)"
        )
    print(f"the call waited {result['waited_ms']} ms of its {CALL_TIMEOUT_S} s deadline")
    assert result["status"] == "timeout"
    assert result["case_id"] == str(session["case_id"])
    assert result["waited_ms"] < (CALL_TIMEOUT_S - 30) * 1000  # not the call's own deadline
    assert after[call_id]["status"] == "expired"
    assert after[call_id]["case_status"] == "open"  # still answerable (get_human_answer)
