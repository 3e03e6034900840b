"""The Realtime service: websocket endpoint, channels and fan-out.

Behaviour follows supabase/realtime (v2.129.8) and its Phoenix fork; the functions named in the
comments are where each rule comes from:
- `lib/realtime_web/channels/user_socket.ex` (connect, handshake errors),
- `deps/phoenix/lib/phoenix/socket.ex` (heartbeat, join/leave routing, unmatched topics,
  duplicate joins, phx_close),
- `lib/realtime_web/channels/realtime_channel.ex` (join checks and their reasons, access_token,
  confirm_token, shutdown_response),
- `lib/realtime_web/channels/realtime_channel/{broadcast,presence}_handler.ex`,
- `lib/realtime_web/channels/realtime_channel/message_dispatcher.ex` (fan-out and its gates),
- `lib/realtime/tenants/replication_connection.ex` (database broadcasts, in `database.py`),
- `lib/extensions/postgres_cdc_rls/` (postgres_changes, in `changes.py`);
the join's parameters, token replies and replay are in `joins.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from hitl_devstack.hops import HopHistogram
from hitl_devstack.keys import TokenError
from hitl_devstack.realtime import api
from hitl_devstack.realtime.authorization import (
    AuthContext,
    DatabaseUnavailable,
    Policies,
    RlsPolicyError,
    read_policies,
    write_policies,
)
from hitl_devstack.realtime.changes import PostgresChanges
from hitl_devstack.realtime.channel import Channel, Socket, Topic, TopicKey
from hitl_devstack.realtime.database import DatabaseBroadcasts
from hitl_devstack.realtime.joins import (
    DB_UNAVAILABLE,
    UNAUTHORIZED,
    JoinRefused,
    connect_error,
    flag,
    join_token,
    join_token_reason,
    obj,
    postgres_changes,
    replay,
    token_shutdown_message,
)
from hitl_devstack.realtime.limits import RateCounter, RealtimeLimits
from hitl_devstack.realtime.outgoing import Outgoing
from hitl_devstack.realtime.presence import Diff
from hitl_devstack.realtime.serializer import (
    Message,
    ProtocolError,
    UserBroadcast,
    UserBroadcastPush,
    dumps,
    negotiate,
)

log = logging.getLogger("hitl_devstack.realtime")

CONFIRM_TOKEN_INTERVAL_S = 300.0  # realtime_channel.ex @confirm_token_ms_interval


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
    """Mounted at `/realtime/v1` by the devstack server (`routes()`, `start()`, `stop()`)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.limits: RealtimeLimits = getattr(ctx, "limits", None) or RealtimeLimits.from_env()
        lim = self.limits
        # Per project, as Tenants.joins_per_second_rate / events_per_second_rate count them.
        self.joins = RateCounter(lim.max_joins_per_second, lim.rate_tick_s, lim.rate_buckets)
        self.events = RateCounter(lim.max_events_per_second, lim.rate_tick_s, lim.rate_buckets)
        self.db_hop = HopHistogram(
            "db_broadcast_to_frame_sent_seconds",
            "a database broadcast's row inserted (before its commit) to its frame written to a "
            "subscriber's socket",
        )
        self.presence_events = RateCounter(
            lim.max_presence_events_per_second, lim.rate_tick_s, lim.rate_buckets
        )
        self.changes = PostgresChanges(self)
        self.topics: dict[TopicKey, Topic] = {}
        self.sockets: set[Socket] = set()
        self.db = DatabaseBroadcasts(self)
        self._stopping = False

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
        self._stopping = False
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
        self._stopping = True
        await self.db.stop()
        sockets = list(self.sockets)
        for sock in sockets:
            sock.close(1001, "")
        waits = [asyncio.create_task(s.done.wait()) for s in sockets]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=5)
            for w in pending:
                w.cancel()
        await self.changes.stop()

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
        if self._stopping:
            await self._deny(ws, JSONResponse({"error": "Error connecting to Realtime"}, 500))
            return
        await ws.accept()
        headers = {k: v for k, v in ws.headers.items() if k.startswith("x-")}
        sock = Socket(ws, serializer, token, headers)
        self.sockets.add(sock)
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
                self._stop_channel(channel, close=False)  # presence leaves reach the others
            self.sockets.discard(sock)
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
                    self.db_hop.observe(time.perf_counter() - since)
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
                self._stop_channel(channel, close=True)
            await self._join(sock, msg)
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
            self._stop_channel(channel, close=True)
        elif msg.event == "broadcast":
            await self._broadcast(channel, msg)
        elif msg.event == "presence":
            await self._presence(channel, msg)
        elif msg.event == "access_token":
            await self._access_token(channel, msg)
        else:
            self.events.add()  # handle_in catch-all: counted, logged, no reply

    # ---- join (realtime_channel.ex join/3) ----------------------------------------------

    async def _join(self, sock: Socket, msg: Message) -> None:
        try:
            await self._do_join(sock, msg)
        except JoinRefused as e:
            await asyncio.sleep(self.limits.channel_error_backoff_s)  # join_error/1 backoff
            sock.reply(msg.join_ref, msg.ref, msg.topic, "error", {"reason": e.reason})
            if e.disconnect:  # %Phoenix.Socket.Broadcast{event: "disconnect"} → close 1001
                sock.close(1001)

    async def _do_join(self, sock: Socket, msg: Message) -> None:
        subtopic = msg.topic.removeprefix("realtime:")
        if not subtopic:
            raise JoinRefused("TopicNameRequired: You must provide a topic name")
        params = obj(msg.payload)
        config = obj(params.get("config"))
        broadcast, presence = obj(config.get("broadcast")), obj(config.get("presence"))
        private = flag(config.get("private"))
        presence_enabled = flag(presence.get("enabled"))
        token = join_token(params, sock.token)
        if self._stopping:
            raise JoinRefused("RealtimeRestarting: Realtime is restarting, please standby")
        if not sock.counted and self._users() >= self.limits.max_concurrent_users:
            raise JoinRefused("ConnectionRateLimitReached: Too many connected users")
        if self.joins.triggered:  # limit_joins/2
            log.warning("realtime: ClientJoinRateLimitReached: Too many joins per second")
            raise JoinRefused(
                "ClientJoinRateLimitReached: Too many joins per second", disconnect=True
            )
        self.joins.add()
        if len(sock.channels) >= self.limits.max_channels_per_client:  # limit_channels/2
            raise JoinRefused("ChannelRateLimitReached: Too many channels")
        try:
            claims = self.ctx.keys.verify(token)  # confirm_token/1
        except TokenError as e:
            raise JoinRefused(join_token_reason(e)) from None
        policies: Policies | None = None
        if private:  # maybe_assign_policies/3
            policies = Policies()
            ctx = AuthContext(subtopic, claims, sock.headers)
            try:
                await read_policies(self.ctx.pool, ctx, policies, presence_enabled=presence_enabled)
            except RlsPolicyError as e:
                log.info("realtime: RLS policy error joining %s: %s", subtopic, e)
                raise JoinRefused("Unauthorized: " + UNAUTHORIZED + subtopic) from None
            except DatabaseUnavailable:
                raise JoinRefused("UnableToConnectToProject: " + DB_UNAVAILABLE) from None
            if not (policies.broadcast_read or policies.presence_read):
                raise JoinRefused("Unauthorized: " + UNAUTHORIZED + subtopic)
        replays: list[dict[str, Any]] = []
        if "replay" in broadcast:
            replays = await replay(self.ctx.pool, subtopic, private, policies, broadcast["replay"])
        bindings = postgres_changes(params, config, subtopic)
        key = presence.get("key")
        channel = Channel(
            socket=sock,
            topic=msg.topic,
            join_ref=msg.join_ref,
            private=private,
            self_broadcast=flag(broadcast.get("self")),
            ack_broadcast=flag(broadcast.get("ack")),
            presence_key=key if isinstance(key, str) and key else str(uuid.uuid1()),
            presence_enabled=presence_enabled,
            token=token,
            claims=claims,
            policies=policies,
            replayed=frozenset(str(r["id"]) for r in replays),
            pg_bindings=bindings,
            pg_new_api="config" in params,
        )
        sock.counted = True  # UsersCounter.add/2
        sock.channels[msg.topic] = channel
        self._topic(channel.key).subscribers[channel] = None
        self._arm_confirm(channel)
        changes = [{**b.params, "id": b.reply_id} for b in bindings]
        sock.reply(msg.join_ref, msg.ref, msg.topic, "ok", {"postgres_changes": changes})
        self.changes.joined(channel)
        for row in replays:  # handle_info({:replay, messages}): channel pushes, in order
            self._push(channel, "broadcast", row["payload"])
        if flag(broadcast.get("replication_ready")):
            self._system(channel, "ok", "Replication connection established")
        if presence_enabled and channel.can_read_presence():  # PresenceHandler.sync/1
            self._push(channel, "presence_state", self.topics[channel.key].presence.state())

    def _users(self) -> int:
        """UsersCounter.tenant_users/1: sockets that have joined a channel."""
        return sum(1 for s in self.sockets if s.counted)

    # ---- channel helpers ----------------------------------------------------------------

    def _topic(self, key: TopicKey) -> Topic:
        topic = self.topics.get(key)
        if topic is None:
            topic = self.topics[key] = Topic()
        return topic

    def _push(self, channel: Channel, event: str, payload: Any) -> None:
        """A push from the channel process: its join_ref, no ref."""
        channel.socket.push(channel.join_ref, None, channel.topic, event, payload)

    def _system(self, channel: Channel, status: str, message: str) -> None:
        self.system(channel, "system", status, message)

    def system(self, channel: Channel, extension: str, status: str, message: str) -> None:
        """push_system_message/5."""
        self._push(
            channel,
            "system",
            {
                "channel": channel.subtopic,
                "extension": extension,
                "message": message,
                "status": status,
            },
        )

    def _shutdown(self, channel: Channel, message: str) -> None:
        """shutdown_response/2: system error, then the channel stops (phx_close)."""
        if channel.closed:
            return
        self._system(channel, "error", message)
        self._stop_channel(channel, close=True)

    def _stop_channel(self, channel: Channel, *, close: bool) -> None:
        if channel.closed:
            return
        channel.closed = True
        sock = channel.socket
        if sock.channels.get(channel.topic) is channel:
            del sock.channels[channel.topic]
        if channel.confirm_timer is not None:
            channel.confirm_timer.cancel()
        self.changes.left(channel)
        topic = self.topics.get(channel.key)
        if topic is not None:
            topic.subscribers.pop(channel, None)
            diff = topic.presence.untrack(channel.presence_key, channel)
            if diff is not None:
                self._presence_diff(channel.key, diff)
            if not topic:
                del self.topics[channel.key]
        if close:  # socket.ex encode_close: [join_ref, join_ref, topic, "phx_close", {}]
            sock.push(channel.join_ref, channel.join_ref, channel.topic, "phx_close", {})

    def _arm_confirm(self, channel: Channel) -> None:
        """confirm_token every min(5 min, time to exp); an expired token closes the channel."""
        if channel.confirm_timer is not None:
            channel.confirm_timer.cancel()
        exp = channel.claims.get("exp")
        if not isinstance(exp, int | float):
            return
        delay = min(CONFIRM_TOKEN_INTERVAL_S, max(0.0, float(exp) - time.time()) + 0.001)
        channel.confirm_timer = asyncio.get_running_loop().call_later(delay, self._confirm, channel)

    def _confirm(self, channel: Channel) -> None:
        if channel.closed:
            return
        try:
            channel.claims = self.ctx.keys.verify(channel.token)
        except TokenError as e:
            self._shutdown(channel, token_shutdown_message(e))
            return
        self._arm_confirm(channel)

    # ---- broadcast (broadcast_handler.ex) -----------------------------------------------

    async def _broadcast(self, channel: Channel, msg: Message) -> None:
        sock, payload = channel.socket, msg.payload
        if channel.policies is not None:
            policies = channel.policies
            if policies.broadcast_write is None:  # authorised once, on the first send
                ctx = AuthContext(channel.subtopic, channel.claims, sock.headers)
                try:
                    await write_policies(self.ctx.pool, ctx, policies)
                except (RlsPolicyError, DatabaseUnavailable) as e:
                    log.info("realtime: write check failed on %s: %s", channel.subtopic, e)
                    return
            if not policies.broadcast_write:
                return  # dropped without a reply, even with ack
        self.events.add()
        out: Outgoing
        if isinstance(payload, UserBroadcastPush):
            size = len(payload.payload) + len(payload.event) + 16
            user = UserBroadcast(channel.topic, payload.event, payload.payload, payload.is_json)
            out = Outgoing(channel.topic, user=user)
        elif isinstance(payload, dict):
            size = len(dumps(payload).encode())
            out = Outgoing(channel.topic, payload=payload)
        else:  # V2Serializer.fastlane! raises on a non-map broadcast: the channel crashes
            self._stop_channel(channel, close=False)
            sock.push(channel.join_ref, channel.join_ref, channel.topic, "phx_error", {})
            return
        if size > self.limits.max_payload_bytes:
            if channel.ack_broadcast:  # {:reply, {:error, :payload_size_exceeded}, socket}
                sock.reply(
                    channel.join_ref, msg.ref, channel.topic, "error", "payload_size_exceeded"
                )
            return
        self.fan_out(channel.key, out, sender=None if channel.self_broadcast else channel)
        if channel.ack_broadcast:
            sock.reply(channel.join_ref, msg.ref, channel.topic, "ok", {})

    def fan_out(
        self,
        key: TopicKey,
        out: Outgoing,
        *,
        sender: Channel | None = None,
        message_id: str | None = None,
        since: float | None = None,
    ) -> int:
        """MessageDispatcher.dispatch/3: every subscriber allowed to read, except the sender
        without `self`, encoded once per serializer. Returns how many received it."""
        topic = self.topics.get(key)
        if topic is None:
            return 0
        over_limit = self.events.triggered
        delivered: list[Channel] = []
        for ch in topic.subscribers:
            if ch is sender or not ch.can_read_broadcast():
                continue
            if message_id is not None and message_id in ch.replayed:
                continue
            data = out.encode(ch.socket.serializer)
            if data is None:
                continue
            ch.socket.send(data, since)
            delivered.append(ch)
        self.events.add(len(delivered))
        if over_limit:  # handle_info(:update_rate_counter) on each receiving channel
            if delivered:
                log.warning(
                    "realtime: MessagePerSecondRateLimitReached: Too many messages per second"
                )
            for ch in delivered:
                self._shutdown(ch, "Too many messages per second")
        return len(delivered)

    # ---- presence (presence_handler.ex) -------------------------------------------------

    def _presence_diff(self, key: TopicKey, diff: Diff) -> None:
        topic = self.topics.get(key)
        if topic is None:
            return
        cache: dict[str, str] = {}
        for ch in topic.subscribers:
            if not ch.can_read_presence():  # withheld from members denied presence.read
                continue
            ser = ch.socket.serializer
            data = cache.get(ser.version)
            if data is None:
                data = cache[ser.version] = ser.broadcast(ch.topic, "presence_diff", diff)
            ch.socket.send(data)

    async def _presence(self, channel: Channel, msg: Message) -> None:
        sock, payload = channel.socket, msg.payload
        if not isinstance(payload, dict) or "event" not in payload:
            sock.reply(channel.join_ref, msg.ref, channel.topic, "ok", {})
            return
        now = time.monotonic()  # limit_client_presence_event: a fixed window per channel
        if channel.presence_window_ends is None or now > channel.presence_window_ends:
            channel.presence_calls = 1
            channel.presence_window_ends = now + self.limits.presence_window_s
        elif channel.presence_calls >= self.limits.presence_max_calls:
            self._shutdown(channel, "Client presence rate limit exceeded")
            return
        else:
            channel.presence_calls += 1
        if self.presence_events.current_avg() > self.limits.max_presence_events_per_second:
            self._shutdown(channel, "Too many presence messages per second")  # limit_presence_event
            return
        self.presence_events.add()
        event = str(payload["event"]).lower()
        if event == "track":
            await self._track(channel, msg, payload)
        elif event == "untrack":
            diff = self._topic(channel.key).presence.untrack(channel.presence_key, channel)
            channel.tracked = None
            sock.reply(channel.join_ref, msg.ref, channel.topic, "ok", {})
            if diff is not None:
                self._presence_diff(channel.key, diff)
        else:  # UnknownPresenceEvent → {:reply, :error, socket}
            sock.reply(channel.join_ref, msg.ref, channel.topic, "error", {})

    async def _track(self, channel: Channel, msg: Message, payload: dict[str, Any]) -> None:
        sock = channel.socket
        policies = channel.policies
        if policies is not None:
            if policies.presence_write is None:  # authorised once, on the first track
                ctx = AuthContext(channel.subtopic, channel.claims, sock.headers)
                try:
                    if policies.presence_read is None:
                        await read_policies(self.ctx.pool, ctx, policies, presence_enabled=True)
                    await write_policies(self.ctx.pool, ctx, policies)
                except (RlsPolicyError, DatabaseUnavailable) as e:
                    log.info("realtime: presence check failed on %s: %s", channel.subtopic, e)
                    sock.reply(channel.join_ref, msg.ref, channel.topic, "error", {})
                    return
            if not policies.presence_write:
                sock.reply(channel.join_ref, msg.ref, channel.topic, "error", {})
                return
        meta = payload.get("payload", {})
        if not isinstance(meta, dict):
            reason = {"reason": "Presence track payload must be a map"}
            sock.reply(channel.join_ref, msg.ref, channel.topic, "error", reason)
            return
        if meta == channel.tracked:  # no payload change: a no-op
            sock.reply(channel.join_ref, msg.ref, channel.topic, "ok", {})
            return
        if len(dumps(meta).encode()) > self.limits.max_payload_bytes:
            self._shutdown(channel, "Track message size exceeded")
            return
        diff = self._topic(channel.key).presence.track(channel.presence_key, channel, meta)
        channel.tracked = meta
        channel.presence_enabled = True
        sock.reply(channel.join_ref, msg.ref, channel.topic, "ok", {})
        self._presence_diff(channel.key, diff)

    # ---- access_token (realtime_channel.ex handle_in "access_token") --------------------

    async def _access_token(self, channel: Channel, msg: Message) -> None:
        payload = obj(msg.payload)
        if "access_token" not in payload:
            self.events.add()
            return
        token = payload["access_token"]
        if token is None or token == channel.token:
            return
        if not isinstance(token, str):
            self.events.add()
            return
        if token.startswith("sb_"):
            return
        channel.token = token
        try:
            claims = self.ctx.keys.verify(token)
        except TokenError as e:
            self._shutdown(channel, token_shutdown_message(e))
            return
        previous = channel.policies
        if previous is not None:
            policies = Policies()
            ctx = AuthContext(channel.subtopic, claims, channel.socket.headers)
            try:
                await read_policies(
                    self.ctx.pool, ctx, policies, presence_enabled=channel.presence_enabled
                )
            except RlsPolicyError:
                self._shutdown(channel, UNAUTHORIZED + channel.subtopic)
                return
            except DatabaseUnavailable:
                self._shutdown(channel, DB_UNAVAILABLE)
                return
            if not (policies.broadcast_read or policies.presence_read):
                self._shutdown(channel, UNAUTHORIZED + channel.subtopic)
                return
            if (previous.broadcast_read and policies.broadcast_read is False) or (
                previous.presence_read and policies.presence_read is False
            ):
                self._shutdown(
                    channel,
                    "You no longer have permission to read from this Channel topic: "
                    + channel.subtopic,
                )
                return
            channel.policies = policies
        channel.claims = claims
        self._arm_confirm(channel)
        self.changes.resubscribe(channel)  # the subscriptions carry the new claims

    # ---- REST broadcast -----------------------------------------------------------------

    async def rest_broadcast(self, request: Any) -> Response:
        return await api.batch_broadcast(self, request)

    async def rest_broadcast_single(self, request: Any) -> Response:
        return await api.single_broadcast(self, request)

    def deliver_broadcast(
        self, subtopic: str, private: bool, event: str, payload: dict[str, Any], msg_id: Any
    ) -> None:
        """A Phoenix.Socket.Broadcast from the batch API (JSON text to every client)."""
        body: dict[str, Any] = {"event": event}
        if msg_id:
            body["meta"] = {"id": msg_id}
        body["payload"] = payload
        body["type"] = "broadcast"
        name = "realtime:" + subtopic
        self.fan_out((subtopic, private), Outgoing(name, payload=body))

    def deliver_user_broadcast(
        self, subtopic: str, private: bool, event: str, body: bytes, is_json: bool
    ) -> None:
        """A UserBroadcast from the single-message API (binary kind 4 to V2 clients)."""
        name = "realtime:" + subtopic
        user = UserBroadcast(name, event, body, is_json)
        self.fan_out((subtopic, private), Outgoing(name, user=user))
