"""Fixtures shared by every test: one Postgres cluster for the session, a fresh database per test.

The cluster lives in `.hitl/test-pg` on a free port (so tests never collide with a `scripts/dev`
cluster on 54322). Databases are cloned from a template that has `supabase/local/` and the
migrations applied once per session (procrastinate's approach), so a test that writes starts
from a clean, migrated schema in a few milliseconds.
"""

from __future__ import annotations

import os
import secrets
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from hitl_devstack.cluster import Cluster, end_with_parent
from hitl_devstack.keys import make_keys
from hitl_devstack.pgtap import process_alive, stop_unless_in_use
from hitl_devstack.server import Devstack

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_PREFIX = "hitl_tpl_"


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a cancelled CI job, `kill`) ends the run as Ctrl-C does: pytest then still tears
    the session down, which stops the Postgres cluster it started. Left at Python's default,
    SIGTERM ends the process at once and the cluster keeps running."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    end_with_parent()  # and when `scripts/test`'s shell is killed, SIGTERM reaches this run too


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """The session's Postgres 15 + pg_cron cluster: started if stopped, and stopped when the
    session ends unless another live run still uses it or HITL_KEEP_TEST_PG=1."""
    home = Path(os.environ.get("HITL_HOME", ROOT / ".hitl"))
    cluster = Cluster(home / "test-pg", port=None)
    cluster.start()
    yield cluster
    # In a thread of its own: the session's event loop may still be running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(stop_unless_in_use, cluster).result()


@pytest.fixture(scope="session")
async def template_db(pg_cluster: Cluster) -> AsyncIterator[str]:
    """A database with supabase/local and every migration applied, built once per pytest run.

    Named after this process, so parallel pytest runs on one cluster never drop each other's
    template; templates of runs that died are dropped here.
    """
    from hitl_relay import migrate

    name = f"{TEMPLATE_PREFIX}{os.getpid()}"
    admin = await asyncpg.connect(pg_cluster.url())
    try:
        for row in await admin.fetch(
            "select datname from pg_database where datname like $1", TEMPLATE_PREFIX + "%"
        ):
            pid = int(row["datname"].removeprefix(TEMPLATE_PREFIX))
            if pid == os.getpid() or not process_alive(pid):
                await admin.execute(f'drop database if exists "{row["datname"]}" with (force)')
        await admin.execute(f"create database {name}")
    finally:
        await admin.close()
    await migrate.apply(pg_cluster.url(name), local=True)
    yield name
    admin = await asyncpg.connect(pg_cluster.url())
    try:
        await admin.execute(f"drop database if exists {name} with (force)")
    finally:
        await admin.close()


@pytest.fixture
async def db_url(pg_cluster: Cluster, template_db: str) -> AsyncIterator[str]:
    """URL of a fresh migrated database owned by this test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_cluster.url())
    try:
        await admin.execute(f"create database {name} template {template_db}")
    finally:
        await admin.close()
    yield pg_cluster.url(name)
    admin = await asyncpg.connect(pg_cluster.url())
    try:
        await admin.execute(f"drop database if exists {name} with (force)")
    finally:
        await admin.close()


@pytest.fixture
async def devstack(db_url: str) -> AsyncIterator[Devstack]:
    """A started devstack (REST, Realtime, Auth) on this test's database, on a free port, with
    keys from a fresh random secret; `.url`, `.keys`, `.db_url`."""
    from hitl_devstack.realtime import RealtimeLimits

    # Supabase's refusal backoffs (5 s / 2 s) made short so refusal tests stay fast.
    limits = RealtimeLimits(channel_error_backoff_s=0.05, connect_error_backoff_s=0.05)
    stack = Devstack(db_url, make_keys(secrets.token_urlsafe(32)), limits=limits)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()


@pytest.fixture
async def app_case_topic_writes(devstack: Devstack) -> Devstack:
    """The devstack, with an operators' app policy letting operators write on `case:` topics
    (devstack_clients.APP_CASE_TOPIC_WRITES): for tests of what the relay does with events
    a client sends there."""
    from devstack_clients import APP_CASE_TOPIC_WRITES

    from hitl_relay import migrate

    await migrate.local_sql_editor(devstack.db_url, APP_CASE_TOPIC_WRITES)
    return devstack


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection to this test's fresh database."""
    conn = await asyncpg.connect(db_url)
    try:
        yield conn
    finally:
        await conn.close()
