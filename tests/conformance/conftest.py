"""Fixtures of the Realtime conformance tests (the REST ones use tests/conftest.py directly)."""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from devstack_clients import APP_CASE_TOPIC_WRITES
from realtime_support import Raw, RtClients
from websockets.exceptions import ConnectionClosed

from hitl_devstack.cluster import Cluster
from hitl_devstack.keys import make_keys
from hitl_devstack.realtime import RealtimeLimits
from hitl_devstack.server import Devstack
from hitl_relay import migrate

# Supabase's refusal backoffs (5 s / 2 s) made short, as in the shared `devstack` fixture, and
# the 1-3 s Realtime waits before subscribing a join's postgres_changes.
FAST_BACKOFFS: dict[str, Any] = {
    "channel_error_backoff_s": 0.05,
    "connect_error_backoff_s": 0.05,
    "postgres_subscribe_min_s": 0.02,
    "postgres_subscribe_max_s": 0.06,
}

# These tests exercise Realtime's protocol (broadcast with ack and self, presence, REST
# broadcast, token refresh) on private `case:<uuid>` topics, which needs a client allowed to
# write there: an app's policy (devstack_clients.APP_CASE_TOPIC_WRITES) is added to this
# folder's template.
CONFORMANCE_POLICY = APP_CASE_TOPIC_WRITES
CONFORMANCE_TEMPLATE = f"hitl_ctpl_{os.getpid()}"


@pytest.fixture(scope="session")
async def template_db(pg_cluster: Cluster, template_db: str) -> AsyncIterator[str]:
    """The shared migrated template plus CONFORMANCE_POLICY, for this folder's databases."""
    admin = await asyncpg.connect(pg_cluster.url())
    try:
        await admin.execute(f'drop database if exists "{CONFORMANCE_TEMPLATE}" with (force)')
        await admin.execute(f'create database "{CONFORMANCE_TEMPLATE}" template "{template_db}"')
    finally:
        await admin.close()
    await migrate.local_sql_editor(pg_cluster.url(CONFORMANCE_TEMPLATE), CONFORMANCE_POLICY)
    yield CONFORMANCE_TEMPLATE
    admin = await asyncpg.connect(pg_cluster.url())
    try:
        await admin.execute(f'drop database if exists "{CONFORMANCE_TEMPLATE}" with (force)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def stack(pg_cluster: Cluster, template_db: str) -> AsyncIterator[Devstack]:
    """One devstack for a whole module, on its own fresh database: for tests that only use
    topics of their own (a uuid in the name), so they cannot see each other's traffic."""
    name = f"t_rt_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_cluster.url())
    try:
        await admin.execute(f"create database {name} template {template_db}")
    finally:
        await admin.close()
    shared = Devstack(
        pg_cluster.url(name),
        make_keys(secrets.token_urlsafe(32)),
        limits=RealtimeLimits(**FAST_BACKOFFS),
    )
    await shared.start()
    try:
        yield shared
    finally:
        await shared.stop()
        admin = await asyncpg.connect(pg_cluster.url())
        try:
            await admin.execute(f"drop database if exists {name} with (force)")
        finally:
            await admin.close()


@pytest.fixture
async def rt() -> AsyncIterator[RtClients]:
    clients = RtClients()
    try:
        yield clients
    finally:
        await clients.close()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[..., Awaitable[Raw]]]:
    """`await raw(stack, apikey=None, vsn="1.0.0")` opens a bare websocket, closed afterwards."""
    opened: list[Raw] = []

    async def open_(stack: Devstack, *args: Any, **kwargs: Any) -> Raw:
        sock = await Raw.open(stack, *args, **kwargs)
        opened.append(sock)
        return sock

    try:
        yield open_
    finally:
        for sock in opened:
            with contextlib.suppress(ConnectionClosed, OSError):
                await sock.close()


@pytest.fixture
async def stack_with(
    stack: Devstack,
) -> AsyncIterator[Callable[..., Awaitable[Devstack]]]:
    """`await stack_with(**limits)`: another devstack on the module's database and keys, with
    its own Realtime limits (fast backoffs unless given), stopped afterwards."""
    made: list[Devstack] = []

    async def make(port: int = 0, **limits: Any) -> Devstack:
        made.append(
            Devstack(
                stack.db_url,
                stack.keys,
                port=port,
                limits=RealtimeLimits(**{**FAST_BACKOFFS, **limits}),
            )
        )
        await made[-1].start()
        return made[-1]

    try:
        yield make
    finally:
        for other in made:
            await other.stop()
