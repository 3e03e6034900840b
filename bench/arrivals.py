"""When each tool result's bytes reached the harness, so a delivery can be split into the wire's
part and the harness's own (its MCP client's parse and validation of the result, its tasks).

`ArrivalTransport` wraps the harness's HTTP transport: for each `tools/call` of `ask_human` it
keeps, under the call's question, the instant the last chunk of the response body was read off
the connection. `call_tool` returns later: what lies between is the client's, not the relay's.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2


class _StampedBody(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, arrived: dict[str, float], question: str) -> None:
        self._inner, self._arrived, self._question = inner, arrived, question

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._arrived[self._question] = time.monotonic()
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _question(request: httpx2.Request) -> str | None:
    """The question of an `ask_human` tools/call request, else None."""
    try:
        body = request.content
    except httpx2.RequestNotRead:
        return None
    if b'"ask_human"' not in body:
        return None
    try:
        message = json.loads(body)
        question = message["params"]["arguments"]["question"]
    except (ValueError, KeyError, TypeError):
        return None
    return question if isinstance(question, str) else None


class ArrivalTransport(httpx2.AsyncBaseTransport):
    """`inner`, with each ask_human response's last body chunk stamped in `arrived`
    (question → time.monotonic())."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, arrived: dict[str, float]) -> None:
        self._inner, self.arrived = inner, arrived

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        question = _question(request)
        if question is not None:
            response.stream = _StampedBody(response.stream, self.arrived, question)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
