"""Routes the POSTs to /mcp between the SDK's stateless streamable-HTTP transports.

The SDK picks a response's framing per transport, not per request (`json_response`): the
relay's transport streams (SSE), which a blocking `ask_human` needs for its progress
notifications and a 2025-11-25 `tasks/result` for the operator's question and status
notifications. The task polls, `tasks/get`, `tasks/list` and `tasks/cancel`, go to a second,
JSON transport over the same server: the 2025-11-25 tasks specification says a server SHOULD
NOT upgrade `tasks/get` to SSE "as the client has indicated it wishes to poll", and a plain
JSON reply also costs the relay less per poll.

A POST that carries a client's JSON-RPC *response* to an elicitation a `tasks/result` stream
sent (`mcp_task_wire.input_request_id`) is handed to the task service here: a stateless transport
has no pending request to match it with, and the response may reach any replica.

The handshake-era versions only: 2026-07-28 requests go to the SDK's own modern entry through
the streaming transport. The body is the one the security layer buffered (`buffered_body`);
without it nothing is routed.

A blocking `ask_human` of either era is served by `mcp_fast` instead (the same messages,
without the SDK's per-request objects); everything it does not take goes to the SDK as before.

While a request is served, the housekeeping it starts waits for its result (`result_first`).
"""

from __future__ import annotations

import json
from typing import Any, Final

from loguru import logger
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hitl_relay.errors import HitlError
from hitl_relay.mcp_fast import FastAsk
from hitl_relay.mcp_task_wire import INPUT_REQUEST_PREFIX, owner_of_authorization
from hitl_relay.mcp_tasks import TaskService
from hitl_relay.result_first import serving_request
from hitl_relay.security.middleware import buffered_body, key_of_scope

POLL_METHODS: Final = frozenset({"tasks/get", "tasks/list", "tasks/cancel"})
# Cheap pre-checks on the raw body before parsing it (most POSTs are neither).
_MARKERS: Final = (b'"tasks/', INPUT_REQUEST_PREFIX.encode())


class McpRouter:
    """ASGI: task polls to the JSON transport, input responses to the task service, everything
    else to the streaming transport."""

    def __init__(
        self,
        streaming: ASGIApp,
        polls: ASGIApp,
        tasks: TaskService,
        fast: FastAsk | None = None,
    ) -> None:
        self._streaming = streaming
        self._polls = polls
        self._tasks = tasks
        self._fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The request's housekeeping (closing a session, leaving a channel) waits for its result.
        with serving_request() as written:

            async def send_result_first(message: Message) -> None:
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    written()

            await self._route(scope, receive, send_result_first)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = _handshake_message(scope)
        if message is not None:
            if message.get("method") in POLL_METHODS:
                await self._polls(scope, receive, send)
                return
            if "method" not in message and self._tasks.available:
                handled = await self._input_response(scope, message)
                if handled is not None:
                    await handled(scope, receive, send)
                    return
        if self._fast is not None:
            ask = self._fast.take(scope)
            if ask is not None:
                await self._fast.serve(ask, scope, receive, send)
                return
        await self._streaming(scope, receive, send)

    async def _input_response(self, scope: Scope, message: dict[str, Any]) -> Response | None:
        owner = owner_of_authorization(Headers(scope=scope).get("authorization"))
        try:
            if not await self._tasks.input_response(owner, key_of_scope(scope), message):
                return None
        except HitlError as e:
            logger.warning("input response not recorded: {}", e)
            return JSONResponse({"error": "task store unavailable; try again"}, status_code=503)
        # Streamable HTTP: a POST of responses only is answered 202 Accepted, no body.
        return Response(status_code=202)


def _handshake_message(scope: Scope) -> dict[str, Any] | None:
    """The POSTed JSON-RPC message of a handshake-era request that may need routing, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    version = Headers(scope=scope).get("mcp-protocol-version")
    if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
        return None
    body = buffered_body(scope)
    if body is None or not any(marker in body for marker in _MARKERS):
        return None
    try:
        message = json.loads(body)
    except ValueError:
        return None  # the transport answers a parse error
    return message if isinstance(message, dict) else None
