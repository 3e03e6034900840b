"""The Realtime service: the websocket endpoint, its frames' routing, and the REST broadcast API.

Behaviour follows supabase/realtime (v2.129.8) and its Phoenix fork; the functions named in the
comments are where each rule comes from:
- `lib/realtime_web/channels/user_socket.ex` (connect, handshake errors),
- `deps/phoenix/lib/phoenix/socket.ex` (heartbeat, join/leave routing, unmatched topics,
  duplicate joins, phx_close).
Each kind of push is handled by its own module, which names its sources: joins in
`join_handler.py` (their parameters, token replies and replay in `joins.py`), broadcasts and the
fan-out in `broadcast_handler.py`, presence in `presence_handler.py`, the channels' lifecycle and
access_token in `registry.py`, database broadcasts in `database.py`, postgres_changes in
`changes.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from hitl_devstack.hops import HopHistogram
from hitl_devstack.keys import TokenError
from hitl_devstack.realtime import api
from hitl_devstack.realtime.broadcast_handler import BroadcastHandler
from hitl_devstack.realtime.channel import Socket, Topic, TopicKey
from hitl_devstack.realtime.database import DatabaseBroadcasts
from hitl_devstack.realtime.join_handler import JoinHandler
from hitl_devstack.realtime.joins import connect_error
from hitl_devstack.realtime.limits import RateCounter, RealtimeLimits
from hitl_devstack.realtime.presence_handler import PresenceHandler
from hitl_devstack.realtime.registry import ChannelRegistry
from hitl_devstack.realtime.serializer import Message, ProtocolError, negotiate

log = logging.getLogger("hitl_devstack.realtime")


class _DenialIsNotAnError(logging.Filter):
    """uvicorn's websockets-sansio protocol logs "ASGI callable returned without completing
    handshake." after an ASGI `websocket.http.response` denial, which it did send correctly; the
    devstack's only websocket endpoint is this one, so the line is always a false alarm."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


_uvicorn_error_log = logging.getLogger("uvicorn.error")
if not any(isinstance(f, _DenialIsNotAnError) for f in _uvicorn_error_log.filters):
    _uvicorn_error_log.addFilter(_DenialIsNotAnError())


class RealtimeService:
    """Mounted at `/realtime/v1` by the devstack server (`routes()`, `start()`, `stop()`): the
    websocket endpoint and its frame routing, over the handlers that own each kind of push."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.limits: RealtimeLimits = getattr(ctx, "limits", None) or RealtimeLimits.from_env()
        self.registry = ChannelRegistry(ctx, self.limits)
        self.db_hop = HopHistogram(
            "db_broadcast_to_frame_sent_seconds",
            "a database broadcast's row inserted (before its commit) to its frame written to a "
            "subscriber's socket",
        )
        self.answer_hop = HopHistogram(
            "db_message_to_frame_sent_seconds",
            "the same for `message` broadcasts only (answers and clarifications)",
        )
        self.joining = JoinHandler(self.registry)
        self.broadcasts = BroadcastHandler(self.registry)
        self.presence = PresenceHandler(self.registry)
        self.db = DatabaseBroadcasts(self.broadcasts)

    @property
    def joins(self) -> RateCounter:
        """Joins per second for the project (Tenants.joins_per_second_rate)."""
        return self.registry.joins

    @property
    def topics(self) -> dict[TopicKey, Topic]:
        return self.registry.topics

    def routes(self) -> list[BaseRoute]:
        return [
            WebSocketRoute("/websocket", self.websocket),
            Route("/api/broadcast", self.rest_broadcast, methods=["POST"]),
            Route(
                "/api/broadcast/{topic}/events/{event}",
                self.rest_broadcast_single,
                methods=["POST"],
            ),
        ]

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """LISTEN on `hitl_realtime` (raises if the database is unreachable), then keep it."""
        if self.db.started:
            return  # already started
        self.registry.stopping = False
        lim = self.limits
        log.info(
            "realtime limits: %d connections, %d joins/s, %d messages/s, %d presence messages/s,"
            " %d channels per connection, %d payload bytes",
            lim.max_concurrent_users,
            lim.max_joins_per_second,
            lim.max_events_per_second,
            lim.max_presence_events_per_second,
            lim.max_channels_per_client,
            lim.max_payload_bytes,
        )
        await self.db.start()

    async def stop(self) -> None:
        """Stop listening; close every socket with 1001 so clients reconnect and rejoin."""
        self.registry.stopping = True
        await self.db.stop()
        sockets = list(self.registry.sockets)
        for sock in sockets:
            sock.close(1001, "")
        waits = [asyncio.create_task(s.done.wait()) for s in sockets]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=5)
            for w in pending:
                w.cancel()
        await self.registry.changes.stop()

    # ---- websocket ----------------------------------------------------------------------

    async def websocket(self, ws: WebSocket) -> None:
        serializer = negotiate(ws.query_params.get("vsn"))
        if serializer is None:  # phoenix/transports/websocket.ex: unsupported vsn → 403 ""
            await self._deny(ws, Response(status_code=403))
            return
        token = ws.headers.get("x-api-key") or ws.query_params.get("apikey") or ""
        try:
            self.ctx.keys.verify(token)
        except TokenError as e:
            await asyncio.sleep(self.limits.connect_error_backoff_s)  # CONNECT_ERROR_BACKOFF_MS
            await self._deny(ws, JSONResponse({"error": connect_error(e)}, status_code=401))
            return
        if self.registry.stopping:
            await self._deny(ws, JSONResponse({"error": "Error connecting to Realtime"}, 500))
            return
        await ws.accept()
        headers = {k: v for k, v in ws.headers.items() if k.startswith("x-")}
        sock = Socket(ws, serializer, token, headers)
        self.registry.sockets.add(sock)
        reader = asyncio.create_task(self._read(sock))
        writer = asyncio.create_task(self._write(sock))
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                sock.close(1000)  # a no-op when the reader already chose a close code
                await asyncio.wait({writer}, timeout=5)
        finally:
            for task in (reader, writer):
                task.cancel()
            for task in (reader, writer):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for channel in list(sock.channels.values()):
                self.registry.stop_channel(channel, close=False)  # presence leaves reach the others
            self.registry.sockets.discard(sock)
            sock.done.set()

    async def _deny(self, ws: WebSocket, response: Response) -> None:
        try:
            await ws.send_denial_response(response)
        except RuntimeError:  # the server cannot send HTTP responses on a websocket scope
            await ws.close(code=1008)

    async def _write(self, sock: Socket) -> None:
        ws = sock.ws
        try:
            while True:
                item = await sock.queue.get()
                if item is None:
                    break
                data, since = item if isinstance(item, tuple) else (item, None)
                if isinstance(data, bytes):
                    await ws.send_bytes(data)
                else:
                    await ws.send_text(data)
                if since is not None:
                    took = time.perf_counter() - since.at
                    self.db_hop.observe(took)
                    if since.answer:
                        self.answer_hop.observe(took)
        except (WebSocketDisconnect, RuntimeError, OSError):
            sock.gone = True
            return
        if not sock.gone:
            code, reason = sock.closing or (1000, "")
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await ws.close(code=code, reason=reason)

    async def _read(self, sock: Socket) -> None:
        while True:
            try:
                async with asyncio.timeout(self.limits.idle_timeout_s):
                    message = await sock.ws.receive()
            except TimeoutError:  # no frame (not even a heartbeat) for the idle timeout
                sock.close(1000, "idle timeout")
                return
            if message["type"] == "websocket.disconnect":
                sock.gone = True
                sock.close(1000)
                return
            data: str | bytes | None = message.get("text")
            if data is None:
                data = message.get("bytes")
            if data is None:
                continue
            if len(data) > self.limits.max_frame_bytes:
                sock.close(1009, "message too big")
                return
            try:
                msg = sock.serializer.decode(data)
            except ProtocolError as e:
                # Phoenix's serializer raises and the socket process dies: the connection
                # closes; other sockets are untouched.
                log.info("realtime: closing a socket after an unreadable frame: %s", e)
                sock.close(1011, f"invalid message: {e}")
                return
            await self._handle(sock, msg)

    # ---- routing (phoenix/lib/phoenix/socket.ex handle_in) ------------------------------

    async def _handle(self, sock: Socket, msg: Message) -> None:
        if msg.topic == "phoenix" and msg.event == "heartbeat":
            sock.reply(None, msg.ref, "phoenix", "ok", {})
            return
        channel = sock.channels.get(msg.topic)
        if msg.event == "phx_join":
            if not msg.topic.startswith("realtime:"):  # no channel route for this topic
                sock.reply(None, msg.ref, msg.topic, "error", {"reason": "unmatched topic"})
                return
            if channel is not None:  # a duplicate join closes the existing channel first
                self.registry.stop_channel(channel, close=True)
            await self.joining.join(sock, msg)
            return
        if channel is None:
            if msg.event == "phx_leave":
                sock.reply(msg.join_ref, msg.ref, msg.topic, "ok", {})
            else:
                sock.reply(None, msg.ref, msg.topic, "error", {"reason": "unmatched topic"})
            return
        if msg.join_ref is not None and channel.join_ref not in (None, msg.join_ref):
            return  # a push for an earlier join of this topic: dropped
        if msg.event == "phx_leave":
            sock.reply(channel.join_ref, msg.ref, channel.topic, "ok", {})
            self.registry.stop_channel(channel, close=True)
        elif msg.event == "broadcast":
            await self.broadcasts.handle(channel, msg)
        elif msg.event == "presence":
            await self.presence.handle(channel, msg)
        elif msg.event == "access_token":
            await self.registry.access_token(channel, msg)
        else:
            self.registry.events.add()  # handle_in catch-all: counted, logged, no reply

    # ---- REST broadcast -----------------------------------------------------------------

    async def rest_broadcast(self, request: Any) -> Response:
        return await api.batch_broadcast(self.broadcasts, request)

    async def rest_broadcast_single(self, request: Any) -> Response:
        return await api.single_broadcast(self.broadcasts, request)
