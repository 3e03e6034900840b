"""The common blocking `ask_human` call served without the SDK's per-request transport.

Why: the SDK's stateless streamable-HTTP transport builds, for every POST, a transport, a
`ServerSession`, a dispatcher, task groups, memory object streams, cancel scopes and
sse-starlette's response with its four tasks: about 530 collector-tracked objects and 85-99 KB
of memory for each call that waits on an operator (at 10,000 waiting calls a full collection
walks them all), and the answer's way out passes through all of them (about 0.35 ms per
answer, the relay's own hop). A blocking `ask_human` needs none of it: one request in, one
result out on the same SSE framing.

What is served here (`eligible`): a POST of one JSON-RPC `tools/call` request for `ask_human`
in a handshake-era protocol version (the header absent means the SDK's default), with the
headers the SDK's transport accepts, no task (`params.task`) and no progress token
(`params._meta.progressToken`). The request's params pass the SDK's own per-version check, and
the result goes through the SDK's own per-version result sieve, so the JSON-RPC message on the
wire is the SDK's. Everything else (initialize, tools/list, other tools, tasks, callers that
want progress, 2026-era requests, anything malformed) stays on the SDK path, which answers it
(errors included) exactly as before.

The response is the SDK's framing: the same status and headers as its SSE stream, one
`event: message` event with the JSON-RPC response, sse-starlette's keep-alive comment every
`PING_INTERVAL_S` while the call waits (a proxy must not cut a 60 s wait), and the closing empty
body. A client that goes away mid-wait cancels the relay's wait, as on the SDK path (the
session closes as `cancelled`, the case stays open and answerable). The SDK's OpenTelemetry
span per request is not emitted for these calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import anyio
import mcp_types as types
from loguru import logger
from mcp.server.streamable_http import CONTENT_TYPE_SSE, check_accept_headers
from mcp.server.transport_security import (
    DEFAULT_MAX_REQUEST_BODY_SIZE,
    TransportSecurityMiddleware,
    TransportSecuritySettings,
)
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp_types import DEFAULT_NEGOTIATED_VERSION, methods
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from hitl_relay import metrics
from hitl_relay.errors import InvalidRequest
from hitl_relay.mcp_server import render, render_invalid
from hitl_relay.models import parse_ask_request
from hitl_relay.relay import Relay
from hitl_relay.security.middleware import buffered_body, key_of_scope

# sse-starlette's keep-alive interval and line separator (the SDK uses its defaults).
PING_INTERVAL_S: Final = float(EventSourceResponse.DEFAULT_PING_INTERVAL)
SEP: Final = EventSourceResponse.DEFAULT_SEPARATOR
# The SDK stream's response headers, in its order (sse-starlette adds the last three).
SSE_HEADERS: Final = [
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"content-type", CONTENT_TYPE_SSE.encode()),
    (b"x-accel-buffering", b"no"),
]
# Cheap pre-checks on the raw body before parsing it (most POSTs are something else).
_MARKERS: Final = (b'"tools/call"', b'"ask_human"')
_ENVELOPE_KEYS: Final = frozenset({"jsonrpc", "id", "method", "params"})
_PARAMS_KEYS: Final = frozenset({"name", "arguments", "_meta"})


def eligible(scope: Scope, max_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_SIZE) -> Ask | None:
    """The blocking `ask_human` call this request is, if this module may serve it; else None
    (the SDK serves it)."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    body = buffered_body(scope)
    if body is None or len(body) > max_body_bytes or not all(m in body for m in _MARKERS):
        return None
    headers = {k: v for k, v in scope["headers"] if k in _HEADERS_READ}
    version_header = headers.get(b"mcp-protocol-version")
    version = DEFAULT_NEGOTIATED_VERSION if version_header is None else version_header.decode()
    if version not in HANDSHAKE_PROTOCOL_VERSIONS:
        return None
    if not _content_type_json(headers.get(b"content-type")) or not _accepts_stream(scope):
        return None
    try:
        message = json.loads(body)
    except ValueError:
        return None
    return _ask_of(message, version)


_HEADERS_READ: Final = frozenset({b"mcp-protocol-version", b"content-type"})


def _content_type_json(value: bytes | None) -> bool:
    # Both checks the SDK makes: its security layer's prefix test and its transport's own.
    if value is None:
        return False
    content_type = value.decode("latin-1")
    if not content_type.lower().startswith("application/json"):
        return False
    parts = [part.strip() for part in content_type.split(";")[0].split(",")]
    return "application/json" in parts


def _accepts_stream(scope: Scope) -> bool:
    has_json, has_sse = check_accept_headers(Request(scope))
    return has_json and has_sse


def _ask_of(message: object, version: str) -> Ask | None:
    if not isinstance(message, dict) or not message.keys() <= _ENVELOPE_KEYS:
        return None
    request_id = message.get("id")
    if message.get("jsonrpc") != "2.0" or message.get("method") != "tools/call":
        return None
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        return None
    params = message.get("params")
    if not isinstance(params, dict) or not params.keys() <= _PARAMS_KEYS:
        return None  # `task` (and anything unknown) stays with the SDK
    if params.get("name") != "ask_human":
        return None
    arguments = params.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        return None
    meta = params.get("_meta")
    if meta is not None and (not isinstance(meta, dict) or "progressToken" in meta):
        return None
    try:
        methods.validate_client_request("tools/call", version, params)
    except Exception:  # whatever the SDK's check rejects, the SDK answers
        return None
    return Ask(request_id, version, arguments or {})


class Ask:
    """One eligible request: its JSON-RPC id, protocol version and tool arguments."""

    __slots__ = ("arguments", "request_id", "version")

    def __init__(self, request_id: int | str, version: str, arguments: dict[str, Any]) -> None:
        self.request_id = request_id
        self.version = version
        self.arguments = arguments


class FastAsk:
    """ASGI-level server of eligible `ask_human` requests (see the module docstring)."""

    def __init__(
        self,
        relay: Callable[[], Relay],
        security: TransportSecuritySettings | None,
        ping_interval_s: float = PING_INTERVAL_S,
    ) -> None:
        self._relay = relay
        self._security = TransportSecurityMiddleware(security)
        self._ping_interval_s = ping_interval_s

    async def serve(self, ask: Ask, scope: Scope, receive: Receive, send: Send) -> None:
        # The SDK's transport checks Host and Origin first; its refusal is answered as it would.
        refusal = await self._security.validate_request(Request(scope), is_post=True)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        payload: bytes | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch, receive, send, tg.cancel_scope)
            payload = await self._answer(ask, key_of_scope(scope))
            tg.cancel_scope.cancel()
        if payload is None:  # the client went away: nothing to write
            return
        await send({"type": "http.response.body", "body": payload, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch(self, receive: Receive, send: Send, scope: anyio.CancelScope) -> None:
        """Until cancelled: keep-alive comments while the call waits; a disconnect cancels it."""
        while True:
            with anyio.move_on_after(self._ping_interval_s) as idle:
                message = await receive()
                if message["type"] == "http.disconnect":
                    scope.cancel()
                    return
            if idle.cancelled_caught:
                ping = ServerSentEvent(comment=f"ping - {datetime.now(UTC)}", sep=SEP)
                await send({"type": "http.response.body", "body": ping.encode(), "more_body": True})

    async def _answer(self, ask: Ask, owner: str | None) -> bytes:
        """The SSE event carrying the JSON-RPC response to `ask`, as the SDK would write it."""
        try:
            result = await self._result(ask, owner)
            dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
            shaped = methods.serialize_server_result("tools/call", ask.version, dumped)
            message: types.JSONRPCResponse | types.JSONRPCError = types.JSONRPCResponse(
                jsonrpc="2.0", id=ask.request_id, result=shaped
            )
        except Exception as e:
            error = handler_exception_to_error_data(e)
            if error is None:
                logger.exception("ask_human failed")
                error = types.ErrorData(code=0, message=str(e))  # the SDK dispatcher's catch-all
            message = types.JSONRPCError(jsonrpc="2.0", id=ask.request_id, error=error)
        data = message.model_dump_json(by_alias=True, exclude_unset=True)
        return ServerSentEvent(data=data, event="message", sep=SEP).encode()

    async def _result(self, ask: Ask, owner: str | None) -> types.CallToolResult:
        try:
            request = parse_ask_request(ask.arguments)
        except InvalidRequest as e:
            metrics.invocations.labels(outcome="invalid").inc()
            return render_invalid(e)
        try:
            return render(await self._relay().ask(request, None, owner=owner))
        except InvalidRequest as e:
            return render_invalid(e)
