"""`http_app.running`, the in-process server the tests serve the app with: it yields only once
uvicorn has started, and an app that fails to start is an error, not a URL that refuses
connections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from hitl_relay.http_app import running


async def test_the_url_it_yields_answers_at_once() -> None:
    async def hello(_: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/", hello)])
    async with running(app) as url, httpx.AsyncClient() as client:
        response = await client.get(url + "/")
    assert (response.status_code, response.text) == (200, "hello")


async def test_an_app_whose_start_up_fails_is_an_error() -> None:
    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("the platform is unreachable")
        yield  # pragma: no cover

    yielded = False
    with pytest.raises(RuntimeError, match="did not start"):
        async with running(Starlette(lifespan=lifespan)):
            yielded = True
    assert not yielded
