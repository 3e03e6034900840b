"""The relay's own share of an answer's delivery, measured inside the running relay.

`hitl_answer_hop_seconds`: from the moment the case channel's frame carrying the answer is read
off the Realtime socket (`frame_read`, called by the socket's reader for every frame, before
realtime-py parses it) to the moment the tool result naming that case is handed to the HTTP
server as response bytes (`AnswerHopMiddleware`, on `/mcp`). Everything the relay does with an
answer lies between: parsing, the signature check, waking the waiting call, the MCP SDK's result
and its JSON and SSE encoding. What lies before (the database and Realtime) and after (the
socket, the caller) is not the relay's.

The frame's instant is kept by `adapters/hop_stamps.py` (the socket's side); this module
measures at the HTTP side and owns the histogram.
"""

from __future__ import annotations

import re
import time
from typing import Any

from prometheus_client import Histogram

from hitl_relay.adapters import hop_stamps
from hitl_relay.metrics import REGISTRY

answer_hop_seconds = Histogram(
    "hitl_answer_hop_seconds",
    "The relay's own share of delivering an answer pushed over Realtime: the case channel's "
    "frame read off the socket to the tool result's bytes handed to the HTTP server.",
    # Fine below 5 ms, where the target (p50 0.3 ms, p99 2 ms) and a lone call's hop lie: a
    # quantile is interpolated within its bucket, so a coarse bucket there cannot say.
    buckets=(
        *(ms / 1000 for ms in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)),
        *(ms / 1000 for ms in (1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10, 25, 50, 100, 1000)),
    ),
    registry=REGISTRY,
)

# A tool result names its case in the structured content (`"case_id": "<uuid>"`).
_CASE_ID = re.compile(rb'"case_id"\s*:\s*"([0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})"')


def result_bytes(body: bytes) -> None:
    """Response bytes on /mcp are being written: close the hop of each case they name."""
    if not hop_stamps.waiting():
        return
    for match in _CASE_ID.finditer(body):
        read_at = hop_stamps.take(match.group(1).decode())
        if read_at is not None:
            answer_hop_seconds.observe(time.perf_counter() - read_at)


class AnswerHopMiddleware:
    """ASGI middleware on /mcp: sees each response body chunk as it is sent."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_stamped(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and hop_stamps.waiting():
                result_bytes(message.get("body", b""))

        await self.app(scope, receive, send_stamped)
