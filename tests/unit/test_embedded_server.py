"""`EmbeddedServer`, the uvicorn of the in-process relay and of the devstack: `exit()` stops it
at once, yet as gracefully as uvicorn's own shutdown (a request in flight is answered first,
the app's lifespan shutdown runs)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from waiting import wait_until

from hitl_relay.embedded import EmbeddedServer


def refuses_connections(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


async def test_exit_closes_the_listener_at_once_and_answers_the_request_in_flight() -> None:
    entered, release, lifespan_ended = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(_: Request) -> PlainTextResponse:
        entered.set()
        await release.wait()
        return PlainTextResponse("answered")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        lifespan_ended.set()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        Starlette(routes=[Route("/", slow)], lifespan=lifespan),
        lifespan="on",
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=30,
    )
    server = EmbeddedServer(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await server.startup_over.wait()
        assert server.started
        async with httpx.AsyncClient() as client:
            request = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/"))
            await entered.wait()
            server.exit()

            async def listener_closed() -> bool:
                return refuses_connections(port)

            await wait_until(listener_closed, "the listener to close after exit()")
            assert not serving.done()  # still answering the request in flight
            assert not lifespan_ended.is_set()
            release.set()
            response = await request
        assert (response.status_code, response.text) == (200, "answered")
        await asyncio.wait_for(serving, 30)
        assert lifespan_ended.is_set()
    finally:
        server.exit()
        release.set()
        await asyncio.wait_for(serving, 30)
        sock.close()
