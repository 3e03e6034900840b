"""The embedded devstack server: lifecycle, port handling, and what it leaves to its host."""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import time

import httpx
import pytest

from hitl_devstack.keys import make_keys
from hitl_devstack.server import Devstack, DevstackError


async def test_port_zero_binds_a_free_port_and_serves_until_stopped(db_url: str) -> None:
    stack = Devstack(db_url, make_keys(secrets.token_urlsafe(32)))
    await stack.start()
    try:
        async with httpx.AsyncClient() as http:
            up = await http.get(
                f"{stack.url}/rest/v1/cases?select=id", headers={"apikey": stack.keys.anon_key}
            )
    finally:
        await stack.stop()

    assert stack.port > 0
    assert stack.url == f"http://127.0.0.1:{stack.port}"
    assert up.status_code == 200
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(f"{stack.url}/rest/v1/cases")


async def test_a_taken_port_is_a_clear_error_and_nothing_is_left_running(db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = Devstack(db_url, make_keys(secrets.token_urlsafe(32)), port=port)

        with pytest.raises(DevstackError, match=f"cannot listen on 127.0.0.1:{port}"):
            await stack.start()

    assert stack.ctx is None


async def test_an_unreachable_database_is_a_clear_error(db_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    stack = Devstack(f"postgresql://postgres:secret@127.0.0.1:{dead_port}/x", make_keys("s" * 32))

    with pytest.raises(DevstackError, match="cannot connect to the database") as e:
        await stack.start()

    assert "secret" not in str(e.value)


async def test_embedding_leaves_signal_handling_to_the_host(db_url: str) -> None:
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    async with Devstack(db_url, make_keys(secrets.token_urlsafe(32))) as stack:
        async with httpx.AsyncClient() as http:
            await http.get(f"{stack.url}/rest/v1/cases")
        during = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    after = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))

    assert during == before
    assert after == before


async def test_keep_alive_requests_are_not_delayed_by_nagle(devstack: Devstack) -> None:
    # Without TCP_NODELAY on accepted sockets each keep-alive response waited ~40 ms for the
    # client's delayed ACK: ten requests took 400 ms or more.
    async with httpx.AsyncClient(base_url=devstack.url) as http:
        await http.get("/health")
        started = time.perf_counter()
        for _ in range(10):
            await http.get("/health")
        elapsed = time.perf_counter() - started

    assert elapsed < 0.3


async def test_concurrent_requests_share_the_pool(devstack: Devstack) -> None:
    headers = {"apikey": devstack.keys.service_role_key}
    async with httpx.AsyncClient(base_url=f"{devstack.url}/rest/v1", headers=headers) as http:
        replies = await asyncio.gather(
            *(http.post("/rpc/hitl_expire_sessions", json={}) for _ in range(50))
        )

    assert {r.status_code for r in replies} == {200}
    assert {r.json() for r in replies} == {0}
