"""The background monitor's readings through the Supabase adapter: the expiry job's health
(`hitl_expiry_job`) and the presence count, as the alert rules read them on /metrics."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import asyncpg
from integration_support import platform_on

from hitl_devstack.server import Devstack
from hitl_relay import metrics
from hitl_relay.monitoring import Monitor
from hitl_relay.ports import JobHealth


async def test_a_database_without_the_cron_job_reports_it_unscheduled(devstack: Devstack) -> None:
    async with platform_on(devstack.url, devstack.keys.service_role_key) as platform:
        assert await platform.store.expiry_job() == JobHealth(scheduled=False, last_success=None)
        monitor = Monitor(platform.presence, None, platform.store)
        await monitor.sample_expiry()
    assert math.isnan(metrics.expiry_last_run._value.get())


async def test_the_newest_succeeded_run_of_the_job_is_exported(
    devstack: Devstack, db: asyncpg.Connection
) -> None:
    # pg_cron lives in one database of the cluster, not in a test's clone: the two tables the
    # function reads, with pg_cron's column names and types (pg_cron.sql, 1.4).
    await db.execute(
        """
        create schema cron;
        create table cron.job (jobid bigint primary key, jobname text);
        create table cron.job_run_details (runid bigint primary key, jobid bigint, status text,
                                           end_time timestamptz);
        grant usage on schema cron to public;
        grant select on cron.job, cron.job_run_details to public;
        insert into cron.job values (7, 'hitl-expire-sessions');
        insert into cron.job_run_details values
          (1, 7, 'succeeded', '2026-12-06 10:00:01+00'),
          (2, 7, 'failed', '2026-12-06 10:01:01+00');
        """
    )
    last = datetime(2026, 12, 6, 10, 0, 1, tzinfo=UTC)
    async with platform_on(devstack.url, devstack.keys.service_role_key) as platform:
        assert await platform.store.expiry_job() == JobHealth(scheduled=True, last_success=last)
        monitor = Monitor(platform.presence, None, platform.store)
        await monitor.sample_expiry()
        assert metrics.expiry_last_run._value.get() == last.timestamp()
        await db.execute("delete from cron.job_run_details")
        await monitor.sample_expiry()
        assert metrics.expiry_last_run._value.get() == 0.0  # scheduled, never succeeded
