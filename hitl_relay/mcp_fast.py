"""The common blocking `ask_human` call served without the SDK's per-request transport.

Why: the SDK's stateless streamable-HTTP transport builds, for every POST, a transport, a
`ServerSession`, a dispatcher, task groups, memory object streams, cancel scopes and
sse-starlette's response with its four tasks: about 530 collector-tracked objects and 85-99 KB
of memory for each call that waits on an operator (at 10,000 waiting calls a full collection
walks them all), and the answer's way out passes through all of them (about 0.35 ms per
answer, the relay's own hop). A blocking `ask_human` needs none of it: one request in, one
result out on the same SSE framing.

What is served here (`eligible`): a POST of one JSON-RPC `tools/call` request for `ask_human`
with the headers the SDK accepts, no task (`params.task`, or the 2026 tasks extension in the
request's capabilities) and no progress token (`params._meta.progressToken`), in a known
protocol version: a handshake-era one (the header absent means the SDK's default) or a 2026-era
one whose per-request envelope passes the SDK's own checks (`classify_inbound_request`, the
routing and `Mcp-Param-*` headers). The params pass the SDK's per-version check and the result
its per-version sieve (2026: `resultType` and the server-info stamp too), so the JSON-RPC
message on the wire is the SDK's. Everything else (initialize, tools/list, other tools, tasks,
callers that want progress, unknown versions, anything malformed) stays on the SDK path, which
answers it (errors included) exactly as before.

The response is the SDK's framing for the era. Handshake era (the SDK's stateless streaming
transport and sse-starlette): the SSE stream's status and headers at once, sse-starlette's
keep-alive comment every 15 s while the call waits (a proxy must not cut a 60 s
wait), one `event: message` event and the closing empty body. 2026 era (the SDK's per-request
entry): a plain JSON reply if the result comes within 15 s, else the SSE headers, a `: ping`
comment every 15 s and the result as the stream's last event. A client
that goes away mid-wait cancels the relay's wait, as on the SDK path (the session closes as
`cancelled`, the case stays open and answerable). The SDK's OpenTelemetry span per request is
not emitted for these calls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import anyio
import mcp_types as types
from loguru import logger
from mcp.server import _streamable_http_modern as sdk_modern
from mcp.server.streamable_http import CONTENT_TYPE_SSE, check_accept_headers
from mcp.server.transport_security import (
    DEFAULT_MAX_REQUEST_BODY_SIZE,
    TransportSecurityMiddleware,
    TransportSecuritySettings,
)
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    InboundModernRoute,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp_types import DEFAULT_NEGOTIATED_VERSION, SERVER_INFO_META_KEY, methods
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from hitl_relay import metrics
from hitl_relay.errors import InvalidRequest
from hitl_relay.mcp_server import render, render_invalid
from hitl_relay.mcp_task_wire import opted_in
from hitl_relay.models import parse_ask_request
from hitl_relay.relay import Relay
from hitl_relay.security.middleware import buffered_body, key_of_scope

# The SDK's 2026 entry is private (`_streamable_http_modern`); its own writers and constants are
# used so that the wire stays the SDK's. All are bound here, so an SDK that renames one fails
# this module's import (the relay does not start) rather than a caller's request; the
# differential tests compare the wire.
MODERN_SSE_HEADERS: Final = sdk_modern._SSE_HEADERS
# The ping interval is read when a server is built (the SDK's setting then); only its name here.
if not hasattr(sdk_modern, "_SSE_PING_INTERVAL"):
    raise ImportError("mcp.server._streamable_http_modern no longer has _SSE_PING_INTERVAL")
modern_response = sdk_modern._to_jsonrpc_response
modern_sse_event = sdk_modern._sse_event
modern_write = sdk_modern._write

# sse-starlette's line separator (the SDK uses its defaults).
SEP: Final = EventSourceResponse.DEFAULT_SEPARATOR
# The SDK's handshake-era stream's response headers, in its order (sse-starlette adds the last).
SSE_HEADERS: Final = [
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"content-type", CONTENT_TYPE_SSE.encode()),
    (b"x-accel-buffering", b"no"),
]
MODERN_PING: Final = b": ping\r\n\r\n"
# Cheap pre-checks on the raw body before parsing it (most POSTs are something else).
_MARKERS: Final = (b'"tools/call"', b'"ask_human"')
_ENVELOPE_KEYS: Final = frozenset({"jsonrpc", "id", "method", "params"})
_PARAMS_KEYS: Final = frozenset({"name", "arguments", "_meta"})
_MCP_PARAM_PREFIX: Final = "mcp-param-"

ToolSchema = Callable[[str], Mapping[str, Any] | None]


class Ask:
    """One eligible request: its JSON-RPC id, protocol version and tool arguments."""

    __slots__ = ("arguments", "modern", "request_id", "version")

    def __init__(self, request_id: int | str, version: str, arguments: dict[str, Any]) -> None:
        self.request_id = request_id
        self.version = version
        self.arguments = arguments
        self.modern = version in MODERN_PROTOCOL_VERSIONS


def eligible(
    scope: Scope,
    max_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_SIZE,
    tool_schema: ToolSchema | None = None,
) -> Ask | None:
    """The blocking `ask_human` call this request is, if this module may serve it; else None
    (the SDK serves it). `tool_schema`: the server's input schema per tool, for the 2026 era's
    `Mcp-Param-*` check (without it no 2026-era request is taken)."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    body = buffered_body(scope)
    if body is None or len(body) > max_body_bytes or not all(m in body for m in _MARKERS):
        return None
    headers = Headers(scope=scope)
    version = headers.get("mcp-protocol-version", DEFAULT_NEGOTIATED_VERSION)
    modern = version in MODERN_PROTOCOL_VERSIONS
    if version not in HANDSHAKE_PROTOCOL_VERSIONS and not (modern and tool_schema is not None):
        return None
    if not _content_type_json(headers.get("content-type")) or not _accepts_stream(scope):
        return None
    try:
        message = json.loads(body)
    except ValueError:
        return None
    ask = _ask_of(message, version)
    if ask is None or not modern or tool_schema is None:
        return ask
    return ask if _modern_checks_pass(message, headers, ask, tool_schema) else None


def _content_type_json(value: str | None) -> bool:
    # Both checks the SDK makes: its security layer's prefix test and its transport's own.
    if value is None or not value.lower().startswith("application/json"):
        return False
    return "application/json" in [part.strip() for part in value.split(";")[0].split(",")]


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


def _modern_checks_pass(
    message: dict[str, Any], headers: Headers, ask: Ask, tool_schema: ToolSchema
) -> bool:
    """The 2026 entry's checks before it dispatches, in its order; any refusal is the SDK's to
    answer."""
    if find_duplicated_routing_header(headers.items()) is not None:
        return False
    verdict = classify_inbound_request(message, headers=dict(headers))
    if not isinstance(verdict, InboundModernRoute) or verdict.protocol_version != ask.version:
        return False
    if opted_in(message["params"]):
        return False  # a task for a client with the tasks extension
    if any(name.startswith(_MCP_PARAM_PREFIX) for name in headers):
        return False
    if not ask.arguments:
        return True
    schema = tool_schema("ask_human")
    return schema is None or validate_mcp_param_headers(schema, ask.arguments, headers) is None


class FastAsk:
    """ASGI-level server of eligible `ask_human` requests (see the module docstring)."""

    def __init__(
        self,
        relay: Callable[[], Relay],
        security: TransportSecuritySettings | None,
        *,
        server_info: Callable[[], dict[str, Any]] | None = None,
        tool_schema: ToolSchema | None = None,
        max_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_SIZE,
        ping_interval_s: float | None = None,
        modern_deferral_s: float | None = None,
    ) -> None:
        self._relay = relay
        self._security = TransportSecurityMiddleware(security)
        # The 2026 era needs the server's identity stamp and its tools' schemas.
        self._server_info = server_info
        self._tool_schema = tool_schema if server_info is not None else None
        self._max_body_bytes = max_body_bytes
        # The SDK's intervals, read when the server is built (not when this module is imported).
        sse_ping = float(EventSourceResponse.DEFAULT_PING_INTERVAL)
        self._ping_interval_s = sse_ping if ping_interval_s is None else ping_interval_s
        deferral = float(sdk_modern._SSE_PING_INTERVAL)  # its name checked at import (above)
        self._modern_deferral_s = deferral if modern_deferral_s is None else modern_deferral_s

    def take(self, scope: Scope) -> Ask | None:
        """`eligible` with this server's limits."""
        return eligible(scope, self._max_body_bytes, self._tool_schema)

    async def serve(self, ask: Ask, scope: Scope, receive: Receive, send: Send) -> None:
        # The SDK checks Host and Origin first; its refusal is answered as it would.
        refusal = await self._security.validate_request(Request(scope), is_post=True)
        if refusal is not None:
            await refusal(scope, receive, send)
        elif ask.modern:
            await self._serve_modern(ask, scope, receive, send)
        else:
            await self._serve_handshake(ask, scope, receive, send)

    async def _serve_handshake(self, ask: Ask, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        payload: bytes | None = None
        watch = Watch(receive, send, self._ping_interval_s, None)
        try:
            with watch.scope:
                payload = await self._handshake_event(ask, key_of_scope(scope))
        finally:
            watch.close()
        if payload is None:  # the client went away: nothing to write
            return
        await send({"type": "http.response.body", "body": payload, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _serve_modern(self, ask: Ask, scope: Scope, receive: Receive, send: Send) -> None:
        reply: types.JSONRPCResponse | types.JSONRPCError | None = None
        # The stream starts (`watch.streaming`) at the first keep-alive.
        watch = Watch(receive, send, self._modern_deferral_s, False)
        try:
            with watch.scope:
                result = self._modern_result(ask, key_of_scope(scope))
                reply = await modern_response(ask.request_id, result)
        finally:
            watch.close()
        if reply is None:  # the client went away: nothing to write
            return
        if watch.streaming:
            event = modern_sse_event(reply)
            await send({"type": "http.response.body", "body": event, "more_body": False})
        else:
            await modern_write(reply, scope, receive, send)

    async def _handshake_event(self, ask: Ask, owner: str | None) -> bytes:
        """The SSE event carrying the JSON-RPC response to `ask`, as the SDK would write it."""
        try:
            result = await self._result(ask, owner)
            dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
            shaped = _sieved(ask.version, dumped)
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

    async def _modern_result(self, ask: Ask, owner: str | None) -> dict[str, Any]:
        """The result as the SDK's runner shapes it for a 2026-era request."""
        result = await self._result(ask, owner)
        dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        shaped = _sieved(ask.version, dumped)
        if shaped.get("resultType") is None:
            shaped["resultType"] = "complete"
        meta = shaped.get("_meta")
        # The SDK stamps a missing or null stamp in a mapping `_meta`, never over a handler's.
        key = SERVER_INFO_META_KEY
        open_meta = meta is None or (isinstance(meta, dict) and meta.get(key) is None)
        if self._server_info is not None and open_meta:
            shaped["_meta"] = {**(meta or {}), SERVER_INFO_META_KEY: self._server_info()}
        return shaped

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


class Watch:
    """While one call waits: keep-alive comments every `interval` s, and a disconnect cancels
    `scope` (the wait). `streaming` (2026 era, else None): the stream starts at the first
    keep-alive.

    Why not a watcher task in a task group: that costs a task group, its cancel scope, the
    task's state, a cancel scope and a timer per keep-alive interval, about 5 KB for each
    waiting call. Here the keep-alive is a timer that starts a task only to write a comment,
    and the disconnect a plain task reading `receive` (all a waiting call gets from it)."""

    __slots__ = (
        "_interval",
        "_listener",
        "_loop",
        "_ping",
        "_send",
        "_timer",
        "error",
        "scope",
        "streaming",
    )

    def __init__(
        self, receive: Receive, send: Send, interval: float, streaming: bool | None
    ) -> None:
        self.scope = anyio.CancelScope()
        self.streaming = streaming
        self.error: BaseException | None = None  # a keep-alive's write failed: the wait's error
        self._send = send
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._ping: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(interval, self._due)
        self._listener = self._loop.create_task(_until_disconnect(receive))
        self._listener.add_done_callback(self._ended)

    def close(self) -> None:
        """Stop watching (before the result is written: nothing else writes after this). Raises
        the keep-alive's error, if one failed."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._listener.remove_done_callback(self._ended)
        self._listener.cancel()
        if self._ping is not None:
            # A keep-alive is written whole or not at all: its send only awaits before writing.
            self._ping.cancel()
            self._ping = None
        if self.error is not None:
            raise self.error

    def _ended(self, listener: asyncio.Task[None]) -> None:
        if not listener.cancelled():
            self.error = listener.exception()
            self.scope.cancel()  # the client went away (or its stream failed): stop waiting

    def _due(self) -> None:
        self._timer = None
        self._ping = self._loop.create_task(self._keep_alive())

    async def _keep_alive(self) -> None:
        try:
            if self.streaming is None:
                ping = ServerSentEvent(comment=f"ping - {datetime.now(UTC)}", sep=SEP).encode()
            else:
                ping = MODERN_PING
                if not self.streaming:
                    self.streaming = True
                    start = {"type": "http.response.start", "status": 200}
                    await self._send({**start, "headers": MODERN_SSE_HEADERS})
            await self._send({"type": "http.response.body", "body": ping, "more_body": True})
        except Exception as e:
            self.error = e
            self.scope.cancel()
            return
        self._ping = None
        self._timer = self._loop.call_later(self._interval, self._due)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _sieved(version: str, dumped: dict[str, Any]) -> dict[str, Any]:
    """The SDK's per-version check of a tools/call result (its runner's `_serialize`)."""
    try:
        return methods.serialize_server_result("tools/call", version, dumped)
    except ValidationError:
        logger.exception("ask_human returned an invalid result")
        raise MCPError(
            code=types.INTERNAL_ERROR, message="Handler returned an invalid result"
        ) from None
