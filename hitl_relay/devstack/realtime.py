"""The Realtime subset: Supabase Realtime's Phoenix protocol over Starlette websockets.

Speaks what the real clients speak (`/work/shared/notes/supabase-protocol.md` §1-§7, from
supabase/realtime `lib/realtime_web/channels/realtime_channel.ex`, `user_socket.ex`,
`socket/v2_serializer.ex`, `broadcast_handler.ex`, `presence_handler.ex`):

- serializer per socket from `vsn`: 1.0.0 JSON objects (realtime-py), 2.0.0 arrays plus binary
  user broadcasts (realtime-js / supabase-js: kind 3 in, kind 4 out);
- `phx_join` with `config` (broadcast ack/self, presence key/enabled, private) and
  `access_token`; private channels authorised by the `realtime.messages` RLS policies under the
  token's role with `realtime.topic()` set, in a transaction that is always rolled back;
- broadcast, presence (track/untrack, presence_state, presence_diff), heartbeat,
  access_token refresh, phx_leave/phx_close, Supabase's limits and error strings;
- database broadcasts: `realtime.send` rows arrive by NOTIFY `hitl_realtime` after commit, in
  commit order, and go to every subscriber of the topic allowed to read it;
- REST broadcast: `POST /api/broadcast` and `POST /api/broadcast/{topic}/events/{event}`.

Not supported (documented in the devstack README): postgres_changes delivery (joins with
bindings are answered as Supabase answers them, but no change events are sent), broadcast
replay, binary (non-JSON) payloads from clients other than as opaque pass-through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from hitl_relay.devstack.keys import TokenError

log = logging.getLogger("hitl_relay.devstack.realtime")

NOTIFY_CHANNEL = "hitl_realtime"
ALLOWED_ROLES = ("anon", "authenticated", "service_role")
SEND_QUEUE_LIMIT = 50_000  # frames waiting for one slow socket before it is dropped


@dataclass
class RealtimeLimits:
    """Supabase's limits (config/runtime.exs, guides/realtime/limits.mdx); the backoffs are
    Supabase's too, set small in tests. Joins and messages per second are those of the Pro (no
    spend cap) / Team tier, so a burst of 1,000 calls behaves as on a production project; each can
    be set with HITL_REALTIME_<FIELD> (e.g. HITL_REALTIME_MAX_JOINS_PER_SECOND=100 for Free)."""

    max_channels_per_client: int = 100
    max_joins_per_second: int = 2500
    max_events_per_second: int = 2500
    max_payload_bytes: int = 3_000 * 1000 + 500
    presence_max_calls: int = 5
    presence_window_s: float = 30.0
    idle_timeout_s: float = 60.0
    channel_error_backoff_s: float = 5.0
    connect_error_backoff_s: float = 2.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RealtimeLimits:
        env = os.environ if environ is None else environ
        limits = cls()
        for f in fields(cls):
            raw = env.get(f"HITL_REALTIME_{f.name.upper()}")
            if raw is not None:
                try:
                    setattr(limits, f.name, type(getattr(limits, f.name))(raw))
                except ValueError:
                    raise ValueError(f"HITL_REALTIME_{f.name.upper()}: must be a number") from None
        return limits


# ---- wire format ------------------------------------------------------------------------


@dataclass
class Frame:
    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: Any
    binary: bool = False  # arrived as a V2 binary user broadcast (kind 3)


class ProtocolError(Exception):
    """A frame we cannot read; the socket gets an error reply or is closed, never a crash."""


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


class V1:
    """Phoenix.Socket.V1.JSONSerializer: objects; server frames carry no join_ref."""

    version = "1.0.0"

    @staticmethod
    def decode(data: str | bytes) -> Frame:
        if isinstance(data, bytes):
            raise ProtocolError("binary frames need vsn=2.0.0")
        try:
            obj = json.loads(data)
        except ValueError as e:
            raise ProtocolError(f"invalid JSON: {e}") from None
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("topic"), str)
            or not isinstance(obj.get("event"), str)
        ):
            raise ProtocolError("a message needs string topic and event")
        return Frame(
            _opt_str(obj.get("join_ref")),
            _opt_str(obj.get("ref")),
            obj["topic"],
            obj["event"],
            obj.get("payload") if obj.get("payload") is not None else {},
        )

    @staticmethod
    def encode(frame: Frame) -> str:
        return json.dumps(
            {
                "event": frame.event,
                "payload": frame.payload,
                "ref": frame.ref,
                "topic": frame.topic,
            },
            separators=(",", ":"),
        )

    @staticmethod
    def encode_user_broadcast(topic: str, event: str, payload: Any, meta: dict[str, Any]) -> str:
        inner: dict[str, Any] = {"event": event, "payload": payload, "type": "broadcast"}
        if meta:
            inner["meta"] = meta
        return V1.encode(Frame(None, None, topic, "broadcast", inner))


class V2:
    """RealtimeWeb.Socket.V2Serializer: arrays in text frames, binary user broadcasts."""

    version = "2.0.0"

    @staticmethod
    def decode(data: str | bytes) -> Frame:
        if isinstance(data, bytes):
            return V2._decode_binary(data)
        try:
            arr = json.loads(data)
        except ValueError as e:
            raise ProtocolError(f"invalid JSON: {e}") from None
        if not isinstance(arr, list) or len(arr) != 5:
            raise ProtocolError("a V2 message is [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = arr
        if not isinstance(topic, str) or not isinstance(event, str):
            raise ProtocolError("topic and event must be strings")
        return Frame(
            _opt_str(join_ref), _opt_str(ref), topic, event, payload if payload is not None else {}
        )

    @staticmethod
    def _decode_binary(data: bytes) -> Frame:
        # kind 3, USER_BROADCAST_PUSH: u8 kind | u8 len(join_ref) | u8 len(ref) | u8 len(topic) |
        # u8 len(event) | u8 len(metadata) | u8 encoding | fields... | payload
        if len(data) < 7 or data[0] != 3:
            raise ProtocolError("only binary user broadcast pushes (kind 3) are accepted")
        jl, rl, tl, el, ml, enc = data[1], data[2], data[3], data[4], data[5], data[6]
        off = 7
        if len(data) < off + jl + rl + tl + el + ml:
            raise ProtocolError("binary frame shorter than its header says")
        try:
            join_ref = data[off : off + jl].decode()
            off += jl
            ref = data[off : off + rl].decode()
            off += rl
            topic = data[off : off + tl].decode()
            off += tl
            event = data[off : off + el].decode()
            off += el
            meta_raw = data[off : off + ml].decode()
            off += ml
        except UnicodeDecodeError:
            raise ProtocolError("binary frame fields must be UTF-8") from None
        body = data[off:]
        payload: Any
        if enc == 1:
            try:
                payload = json.loads(body) if body else {}
            except ValueError as e:
                raise ProtocolError(f"invalid JSON payload: {e}") from None
        else:
            payload = body
        inner: dict[str, Any] = {"type": "broadcast", "event": event, "payload": payload}
        if meta_raw:
            try:
                meta = json.loads(meta_raw)
            except ValueError:
                raise ProtocolError("invalid metadata JSON") from None
            if isinstance(meta, dict) and "persist" in meta:
                inner["meta"] = {"persist": meta["persist"]}
        return Frame(join_ref or None, ref or None, topic, "broadcast", inner, binary=True)

    @staticmethod
    def encode(frame: Frame) -> str:
        return json.dumps(
            [frame.join_ref, frame.ref, frame.topic, frame.event, frame.payload],
            separators=(",", ":"),
        )

    @staticmethod
    def encode_user_broadcast(topic: str, event: str, payload: Any, meta: dict[str, Any]) -> bytes:
        # kind 4, USER_BROADCAST: u8 kind | u8 len(topic) | u8 len(event) | u8 len(meta) |
        # u8 encoding | topic | event | meta | payload
        t, e = topic.encode(), event.encode()
        m = json.dumps(meta, separators=(",", ":")).encode() if meta else b""
        body = json.dumps(payload, separators=(",", ":")).encode()
        if max(len(t), len(e), len(m)) > 255:
            raise ProtocolError("topic, event and metadata must be at most 255 bytes")
        return bytes([4, len(t), len(e), len(m), 1]) + t + e + m + body


Serializer = type[V1] | type[V2]


# ---- authorisation ----------------------------------------------------------------------


@dataclass
class Perms:
    broadcast_read: bool = False
    broadcast_write: bool = False
    presence_read: bool = False
    presence_write: bool = False


ALL = Perms(True, True, True, True)


async def authorize(pool: asyncpg.Pool, claims: dict[str, Any], subtopic: str) -> Perms:
    """Evaluate the `realtime.messages` policies for this token and topic, as Realtime does.

    Read: probe rows inserted by the superuser, then selected under the token's role (SELECT
    policies). Write: rows inserted under the role (INSERT policies; 42501 means no). The
    transaction always rolls back.
    """
    role = str(claims.get("role", ""))
    if role not in ALLOWED_ROLES:
        return Perms()
    if role == "service_role":
        return ALL  # bypassrls
    perms = Perms()
    async with pool.acquire() as conn:
        tr = conn.transaction()
        await tr.start()
        try:
            ids = await conn.fetch(
                "insert into realtime.messages (topic, extension, private)"
                " select $1, ext, true from unnest(array['broadcast','presence']) as ext"
                " returning id, extension",
                subtopic,
            )
            claims_json = json.dumps(claims)
            await conn.execute(
                "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true),"
                " set_config('request.jwt.claim.sub', $3, true),"
                " set_config('request.jwt.claim.role', $1, true),"
                " set_config('realtime.topic', $4, true)",
                role,
                claims_json,
                str(claims.get("sub") or ""),
                subtopic,
            )
            visible = {
                r["extension"]
                for r in await conn.fetch(
                    "select extension from realtime.messages where id = any($1::uuid[])",
                    [r["id"] for r in ids],
                )
            }
            perms.broadcast_read = "broadcast" in visible
            perms.presence_read = "presence" in visible
            for ext in ("broadcast", "presence"):
                sp = conn.transaction()
                await sp.start()
                try:
                    await conn.execute(
                        "insert into realtime.messages (topic, extension, private)"
                        " values ($1, $2, true)",
                        subtopic,
                        ext,
                    )
                    setattr(perms, f"{ext}_write", True)
                except asyncpg.InsufficientPrivilegeError:
                    pass
                finally:
                    await sp.rollback()
        finally:
            await tr.rollback()
    return perms


# ---- channels and sockets ---------------------------------------------------------------


@dataclass(eq=False)
class Channel:
    conn: Connection
    topic: str  # "realtime:<subtopic>"
    join_ref: str | None
    private: bool
    broadcast_self: bool
    broadcast_ack: bool
    presence_key: str
    presence_enabled: bool
    claims: dict[str, Any]
    token: str
    perms: Perms
    expiry: asyncio.TimerHandle | None = None

    @property
    def subtopic(self) -> str:
        return self.topic.removeprefix("realtime:")

    @property
    def key(self) -> tuple[str, bool]:
        return (self.subtopic, self.private)


@dataclass(eq=False)
class Connection:
    service: RealtimeService
    ws: WebSocket
    codec: Serializer
    token: str
    channels: dict[str, Channel] = field(default_factory=dict)
    queue: asyncio.Queue[str | bytes | None] = field(default_factory=asyncio.Queue)
    events: deque[float] = field(default_factory=deque)
    presence_calls: deque[float] = field(default_factory=deque)
    closed: bool = False

    def send(self, data: str | bytes) -> None:
        if self.closed:
            return
        if self.queue.qsize() > SEND_QUEUE_LIMIT:
            log.warning("dropping a socket that does not read (%d frames queued)", SEND_QUEUE_LIMIT)
            self.closed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(data)

    def push(self, frame: Frame) -> None:
        self.send(self.codec.encode(frame))

    def reply(self, frame: Frame, status: str, response: Any) -> None:
        self.push(
            Frame(
                frame.join_ref,
                frame.ref,
                frame.topic,
                "phx_reply",
                {"status": status, "response": response},
            )
        )

    def system(self, channel: Channel, status: str, message: str) -> None:
        self.push(
            Frame(
                channel.join_ref,
                None,
                channel.topic,
                "system",
                {
                    "message": message,
                    "status": status,
                    "extension": "system",
                    "channel": channel.subtopic,
                },
            )
        )

    def close_channel(self, channel: Channel) -> None:
        self.push(Frame(channel.join_ref, channel.join_ref, channel.topic, "phx_close", {}))


def _rate(window: deque[float], limit: int, per_s: float) -> bool:
    """Record one event; False when `limit` per `per_s` is exceeded."""
    now = time.monotonic()
    while window and now - window[0] > per_s:
        window.popleft()
    window.append(now)
    return len(window) <= limit


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _truthy(value: Any) -> bool:
    return value is True or value == "true"


def _phash(params: dict[str, Any]) -> int:
    # Realtime uses :erlang.phash2(params); any stable non-zero int is what clients need.
    return zlib.crc32(json.dumps(params, sort_keys=True).encode()) or 1


class RealtimeService:
    """Mounted at `/realtime/v1` by the devstack server."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.limits: RealtimeLimits = getattr(ctx, "limits", None) or RealtimeLimits.from_env()
        self.joins: deque[float] = deque()  # per project, as Supabase counts them
        self.subscribers: dict[tuple[str, bool], set[Channel]] = {}
        # (subtopic, private) → presence key → list of (channel, meta)
        self.presence: dict[tuple[str, bool], dict[str, list[tuple[Channel, dict[str, Any]]]]] = {}
        self.connections: set[Connection] = set()
        self._listen_conn: asyncpg.Connection | None = None
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

    async def start(self) -> None:
        self._stopping = False
        self._listen_conn = await asyncpg.connect(self.ctx.db_url)
        await self._listen_conn.add_listener(NOTIFY_CHANNEL, self._on_notify)

    async def stop(self) -> None:
        self._stopping = True
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):  # shutting down: the connection may be gone
                await self._listen_conn.close()
            self._listen_conn = None
        for conn in list(self.connections):
            conn.closed = True
            conn.queue.put_nowait(None)  # the writer closes with 1001 "going away"

    # ---- websocket lifecycle ------------------------------------------------------------

    async def websocket(self, ws: WebSocket) -> None:
        params = ws.query_params
        token = ws.headers.get("x-api-key") or params.get("apikey") or ""
        codec: Serializer = V2 if params.get("vsn", "1.0.0").startswith("2.") else V1
        try:
            self.ctx.keys.verify(token)
        except TokenError as e:
            await asyncio.sleep(self.limits.connect_error_backoff_s)
            await self._deny(ws, 401, e.message)
            return
        if self._stopping:
            await self._deny(ws, 500, "Error connecting to Realtime")
            return
        await ws.accept()
        conn = Connection(self, ws, codec, token)
        self.connections.add(conn)
        writer = asyncio.create_task(self._writer(conn))
        try:
            await self._reader(conn)
        finally:
            conn.closed = True
            self.connections.discard(conn)
            for channel in list(conn.channels.values()):
                self._remove_channel(channel)
            conn.queue.put_nowait(None)
            with contextlib.suppress(Exception):  # the socket may already be gone
                await writer

    async def _deny(self, ws: WebSocket, status: int, message: str) -> None:
        try:
            await ws.send_denial_response(JSONResponse({"error": message}, status_code=status))
        except RuntimeError:
            await ws.close(code=1008, reason=message[:120])

    async def _writer(self, conn: Connection) -> None:
        try:
            while True:
                data = await conn.queue.get()
                if data is None:
                    break
                if isinstance(data, bytes):
                    await conn.ws.send_bytes(data)
                else:
                    await conn.ws.send_text(data)
        except (WebSocketDisconnect, RuntimeError, OSError):
            conn.closed = True
        finally:
            if conn.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(RuntimeError, OSError):
                    await conn.ws.close(code=1001 if self._stopping else 1000)

    async def _reader(self, conn: Connection) -> None:
        while not conn.closed:
            try:
                message = await asyncio.wait_for(conn.ws.receive(), self.limits.idle_timeout_s)
            except TimeoutError:
                return  # idle: Phoenix closes sockets that stopped heartbeating
            if message["type"] == "websocket.disconnect":
                return
            data: str | bytes | None = message.get("text")
            if data is None:
                data = message.get("bytes")
            if data is None:
                continue
            if len(data) > 5_000_000:
                await conn.ws.close(code=1009, reason="frame too large")
                return
            try:
                frame = conn.codec.decode(data)
            except ProtocolError as e:
                log.info("unreadable frame: %s", e)
                conn.push(
                    Frame(
                        None,
                        None,
                        "phoenix",
                        "phx_reply",
                        {"status": "error", "response": {"reason": str(e)}},
                    )
                )
                continue
            try:
                await self._dispatch(conn, frame)
            except (asyncpg.PostgresError, OSError) as e:
                log.exception(
                    "realtime: platform error handling %s on %s", frame.event, frame.topic
                )
                if frame.ref is not None:
                    conn.reply(frame, "error", {"reason": f"Unknown Error on Channel: {e}"})

    # ---- dispatch -----------------------------------------------------------------------

    async def _dispatch(self, conn: Connection, frame: Frame) -> None:
        if frame.topic == "phoenix" and frame.event == "heartbeat":
            conn.reply(frame, "ok", {})
            return
        if frame.event == "phx_join":
            await self._join(conn, frame)
            return
        channel = conn.channels.get(frame.topic)
        if channel is None:
            if frame.ref is not None:
                conn.reply(frame, "error", {"reason": "unmatched topic"})
            return
        if frame.event == "phx_leave":
            conn.reply(frame, "ok", {})
            self._remove_channel(channel)
            conn.close_channel(channel)
        elif frame.event == "broadcast":
            await self._broadcast_from_client(conn, channel, frame)
        elif frame.event == "presence":
            await self._presence(conn, channel, frame)
        elif frame.event == "access_token":
            await self._access_token(conn, channel, frame)
        elif frame.ref is not None:
            conn.reply(frame, "ok", {})

    async def _join_error(self, conn: Connection, frame: Frame, reason: str) -> None:
        await asyncio.sleep(self.limits.channel_error_backoff_s)
        conn.reply(frame, "error", {"reason": reason})

    async def _join(self, conn: Connection, frame: Frame) -> None:
        payload: dict[str, Any] = frame.payload if isinstance(frame.payload, dict) else {}
        config: dict[str, Any] = _obj(payload.get("config"))
        subtopic = frame.topic.removeprefix("realtime:")
        if not subtopic:
            await self._join_error(conn, frame, "TopicNameRequired: You must provide a topic name")
            return
        if not _rate(self.joins, self.limits.max_joins_per_second, 1.0):
            conn.reply(
                frame, "error", {"reason": "ClientJoinRateLimitReached: Too many joins per second"}
            )
            conn.closed = True
            conn.queue.put_nowait(None)
            return
        if frame.topic not in conn.channels and (
            len(conn.channels) >= self.limits.max_channels_per_client
        ):
            await self._join_error(conn, frame, "ChannelRateLimitReached: Too many channels")
            return
        token = payload.get("access_token") or payload.get("user_token") or ""
        if not isinstance(token, str) or not token or token.startswith("sb_"):
            token = conn.token
        try:
            claims = self.ctx.keys.verify(token)
        except TokenError as e:
            await self._join_error(conn, frame, f"{e.kind}: {e.message}")
            return
        broadcast = _obj(config.get("broadcast"))
        presence = _obj(config.get("presence"))
        private = _truthy(config.get("private"))
        perms = ALL if not private else await authorize(self.ctx.pool, claims, subtopic)
        if private and not (perms.broadcast_read or perms.presence_read):
            await self._join_error(
                conn,
                frame,
                "Unauthorized: You do not have permissions to read from this Channel topic: "
                + subtopic,
            )
            return
        old = conn.channels.get(frame.topic)
        if old is not None:  # a duplicate join replaces the old channel
            self._remove_channel(old)
            conn.close_channel(old)
        key = presence.get("key")
        channel = Channel(
            conn=conn,
            topic=frame.topic,
            join_ref=frame.join_ref or frame.ref,
            private=private,
            broadcast_self=_truthy(broadcast.get("self")),
            broadcast_ack=_truthy(broadcast.get("ack")),
            presence_key=str(key) if key not in (None, "") else str(uuid.uuid4()),
            presence_enabled=_truthy(presence.get("enabled")),
            claims=claims,
            token=token,
            perms=perms,
        )
        conn.channels[frame.topic] = channel
        self.subscribers.setdefault(channel.key, set()).add(channel)
        self._arm_expiry(channel)
        bindings = config.get("postgres_changes")
        changes = []
        if isinstance(bindings, list):
            for b in bindings:
                if isinstance(b, dict):
                    changes.append({**b, "id": _phash(b)})
        conn.reply(frame, "ok", {"postgres_changes": changes})
        if channel.presence_enabled and (not private or perms.presence_read):
            conn.push(
                Frame(
                    channel.join_ref,
                    None,
                    channel.topic,
                    "presence_state",
                    self._presence_state(channel.key),
                )
            )

    def _arm_expiry(self, channel: Channel) -> None:
        if channel.expiry is not None:
            channel.expiry.cancel()
        exp = channel.claims.get("exp")
        if not isinstance(exp, int | float):
            return
        delay = max(0.0, float(exp) - time.time())
        if delay > 7 * 86400:
            return
        channel.expiry = asyncio.get_running_loop().call_later(delay, self._expire, channel)

    def _expire(self, channel: Channel) -> None:
        conn = channel.conn
        if conn.channels.get(channel.topic) is not channel:
            return
        ago = int(time.time() - float(channel.claims.get("exp", time.time())))
        conn.system(channel, "error", f"Token has expired {ago} seconds ago")
        self._remove_channel(channel)
        conn.close_channel(channel)

    def _remove_channel(self, channel: Channel) -> None:
        conn = channel.conn
        if conn.channels.get(channel.topic) is channel:
            del conn.channels[channel.topic]
        subs = self.subscribers.get(channel.key)
        if subs is not None:
            subs.discard(channel)
            if not subs:
                del self.subscribers[channel.key]
        if channel.expiry is not None:
            channel.expiry.cancel()
        self._untrack(channel)

    # ---- broadcast ----------------------------------------------------------------------

    async def _broadcast_from_client(
        self, conn: Connection, channel: Channel, frame: Frame
    ) -> None:
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        event = payload.get("event")
        if not isinstance(event, str):
            if frame.ref is not None and channel.broadcast_ack:
                conn.reply(frame, "error", {"reason": "broadcast needs an event name"})
            return
        if not _rate(conn.events, self.limits.max_events_per_second, 1.0):
            conn.system(channel, "error", "Too many messages per second")
            self._remove_channel(channel)
            conn.close_channel(channel)
            return
        user_payload = payload.get("payload", {})
        size = (
            len(json.dumps(user_payload))
            if not isinstance(user_payload, bytes)
            else len(user_payload)
        )
        if size > self.limits.max_payload_bytes:
            if channel.broadcast_ack and frame.ref is not None:
                conn.reply(frame, "error", {"reason": "payload_size_exceeded"})
            return
        if channel.private and not channel.perms.broadcast_write:
            return  # Realtime drops unauthorised private sends silently, even with ack
        meta = _obj(payload.get("meta"))
        self.fan_out(
            channel.subtopic,
            channel.private,
            event,
            user_payload,
            meta,
            sender=None if channel.broadcast_self else channel,
            binary=frame.binary,
        )
        if channel.broadcast_ack and frame.ref is not None:
            conn.reply(frame, "ok", {})

    def fan_out(
        self,
        subtopic: str,
        private: bool,
        event: str,
        payload: Any,
        meta: dict[str, Any],
        *,
        sender: Channel | None = None,
        binary: bool,
    ) -> int:
        """Deliver one user broadcast to every subscriber allowed to read it; returns how many."""
        subs = self.subscribers.get((subtopic, private))
        if not subs:
            return 0
        topic = "realtime:" + subtopic
        encoded: dict[Any, str | bytes] = {}
        n = 0
        for ch in subs:
            if ch is sender or (private and not ch.perms.broadcast_read):
                continue
            codec = ch.conn.codec
            if codec is V2 and not binary:
                # JSON-originated broadcasts reach V2 clients as text (realtime-js decodes both)
                wire_key: Any = ("v2text",)
                if wire_key not in encoded:
                    inner: dict[str, Any] = {
                        "type": "broadcast",
                        "event": event,
                        "payload": payload,
                    }
                    if meta:
                        inner["meta"] = meta
                    encoded[wire_key] = V2.encode(Frame(None, None, topic, "broadcast", inner))
            else:
                wire_key = codec
                if wire_key not in encoded:
                    encoded[wire_key] = codec.encode_user_broadcast(topic, event, payload, meta)
            ch.conn.send(encoded[wire_key])
            n += 1
        return n

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, raw: object) -> None:
        try:
            msg = json.loads(str(raw))
        except ValueError:
            log.warning("unreadable %s notification: %.200r", NOTIFY_CHANNEL, raw)
            return
        if msg.get("too_large"):
            task = asyncio.get_running_loop().create_task(self._deliver_large(msg))
            self._large_tasks.add(task)
            task.add_done_callback(self._large_tasks.discard)
            return
        self._deliver_db(msg)

    _large_tasks: set[asyncio.Task[None]] = set()

    async def _deliver_large(self, msg: dict[str, Any]) -> None:
        async with self.ctx.pool.acquire() as conn:
            payload = await conn.fetchval(
                "select payload from realtime.messages where id = $1::uuid", msg["id"]
            )
        msg["payload"] = json.loads(payload) if isinstance(payload, str) else payload
        self._deliver_db(msg)

    def _deliver_db(self, msg: dict[str, Any]) -> None:
        topic, event = msg.get("topic"), msg.get("event")
        if not isinstance(topic, str) or not isinstance(event, str):
            return
        self.fan_out(
            topic,
            bool(msg.get("private")),
            event,
            msg.get("payload") or {},
            {"id": msg.get("id")},
            binary=True,
        )

    # ---- presence -----------------------------------------------------------------------

    def _presence_state(self, key: tuple[str, bool]) -> dict[str, Any]:
        state = self.presence.get(key, {})
        return {k: {"metas": [m for _, m in entries]} for k, entries in state.items() if entries}

    def _presence_diff(
        self, key: tuple[str, bool], joins: dict[str, Any], leaves: dict[str, Any]
    ) -> None:
        subtopic, private = key
        frame = Frame(
            None, None, "realtime:" + subtopic, "presence_diff", {"joins": joins, "leaves": leaves}
        )
        for ch in self.subscribers.get(key, ()):
            if private and not ch.perms.presence_read:
                continue
            ch.conn.push(frame)

    async def _presence(self, conn: Connection, channel: Channel, frame: Frame) -> None:
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        if not _rate(
            conn.presence_calls, self.limits.presence_max_calls, self.limits.presence_window_s
        ):
            conn.system(channel, "error", "Client presence rate limit exceeded")
            self._remove_channel(channel)
            conn.close_channel(channel)
            return
        if channel.private and not channel.perms.presence_write:
            conn.reply(frame, "error", {})
            return
        event = str(payload.get("event", "")).lower()
        if event == "track":
            meta = payload.get("payload", {})
            if not isinstance(meta, dict):
                conn.reply(frame, "error", {"reason": "Presence track payload must be a map"})
                return
            self._track(channel, meta)
            conn.reply(frame, "ok", {})
        elif event == "untrack":
            self._untrack(channel)
            conn.reply(frame, "ok", {})
        else:
            conn.reply(frame, "error", {"reason": f"unknown presence event {event!r}"})

    def _track(self, channel: Channel, meta: dict[str, Any]) -> None:
        state = self.presence.setdefault(channel.key, {})
        entries = state.setdefault(channel.presence_key, [])
        mine = next((i for i, (ch, _) in enumerate(entries) if ch is channel), None)
        new_meta = {**meta, "phx_ref": uuid.uuid4().hex[:16]}
        if mine is not None:
            old = entries[mine][1]
            if {k: v for k, v in old.items() if k not in ("phx_ref", "phx_ref_prev")} == meta:
                return  # identical re-track: no-op
            new_meta["phx_ref_prev"] = old["phx_ref"]
            entries[mine] = (channel, new_meta)
            self._presence_diff(
                channel.key,
                {channel.presence_key: {"metas": [new_meta]}},
                {channel.presence_key: {"metas": [old]}},
            )
        else:
            entries.append((channel, new_meta))
            self._presence_diff(channel.key, {channel.presence_key: {"metas": [new_meta]}}, {})

    def _untrack(self, channel: Channel) -> None:
        state = self.presence.get(channel.key)
        if not state:
            return
        entries = state.get(channel.presence_key, [])
        gone = [m for ch, m in entries if ch is channel]
        if not gone:
            return
        state[channel.presence_key] = [(ch, m) for ch, m in entries if ch is not channel]
        if not state[channel.presence_key]:
            del state[channel.presence_key]
        if not state:
            del self.presence[channel.key]
        self._presence_diff(channel.key, {}, {channel.presence_key: {"metas": gone}})

    # ---- access token -------------------------------------------------------------------

    async def _access_token(self, conn: Connection, channel: Channel, frame: Frame) -> None:
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        token = payload.get("access_token")
        if (
            not isinstance(token, str)
            or not token
            or token.startswith("sb_")
            or (token == channel.token)
        ):
            return
        try:
            claims = self.ctx.keys.verify(token)
        except TokenError as e:
            conn.system(channel, "error", e.message)
            self._remove_channel(channel)
            conn.close_channel(channel)
            return
        perms = (
            ALL if not channel.private else await authorize(self.ctx.pool, claims, channel.subtopic)
        )
        if channel.private and not (perms.broadcast_read or perms.presence_read):
            conn.system(
                channel,
                "error",
                "Unauthorized: You do not have permissions to read from this Channel "
                f"topic: {channel.subtopic}",
            )
            self._remove_channel(channel)
            conn.close_channel(channel)
            return
        channel.token, channel.claims, channel.perms = token, claims, perms
        self._arm_expiry(channel)

    # ---- REST broadcast -----------------------------------------------------------------

    def _rest_claims(self, request: Request) -> dict[str, Any] | None:
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        token = token or request.headers.get("apikey", "") or request.query_params.get("apikey", "")
        try:
            claims: dict[str, Any] = self.ctx.keys.verify(token)
        except TokenError:
            return None
        return claims

    async def _rest_send(
        self,
        claims: dict[str, Any],
        topic: str,
        event: str,
        payload: Any,
        private: bool,
        meta: dict[str, Any],
        *,
        binary: bool = False,
    ) -> bool:
        """Deliver one REST broadcast; False when a private topic refuses this token's write.

        The batch endpoint sends a Phoenix.Socket.Broadcast (JSON text to every client); the
        single endpoint a UserBroadcast (binary kind 4 to V2 clients), as single_broadcast.ex does.
        """
        if private:
            perms = await authorize(self.ctx.pool, claims, topic)
            if not perms.broadcast_write:
                return False
        self.fan_out(topic, private, event, payload, meta, binary=binary)
        return True

    async def rest_broadcast(self, request: Request) -> Response:
        claims = self._rest_claims(request)
        if claims is None:
            return JSONResponse({"message": "Unauthorized"}, status_code=401)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"errors": {"messages": ["invalid JSON"]}}, status_code=422)
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list):
            return JSONResponse({"errors": {"messages": ["can't be blank"]}}, status_code=422)
        for i, m in enumerate(messages):
            if (
                not isinstance(m, dict)
                or not isinstance(m.get("topic"), str)
                or not isinstance(m.get("event"), str)
                or not isinstance(m.get("payload"), dict)
            ):
                return JSONResponse(
                    {"errors": {"messages": [f"{i}: topic, event and payload are required"]}},
                    status_code=422,
                )
            if len(json.dumps(m["payload"])) > self.limits.max_payload_bytes:
                return JSONResponse(
                    {"errors": {"messages": ["Payload size exceeds tenant limit"]}}, status_code=422
                )
        for m in messages:
            meta = {"id": m["id"]} if m.get("id") else {}
            await self._rest_send(
                claims, m["topic"], m["event"], m["payload"], _truthy(m.get("private")), meta
            )
        return Response(status_code=202)

    async def rest_broadcast_single(self, request: Request) -> Response:
        claims = self._rest_claims(request)
        if claims is None:
            return JSONResponse({"message": "Unauthorized"}, status_code=401)
        raw = await request.body()
        if len(raw) > self.limits.max_payload_bytes:
            return JSONResponse(
                {"errors": {"messages": ["Payload size exceeds tenant limit"]}}, status_code=422
            )
        try:
            payload: Any = json.loads(raw) if raw else {}
        except ValueError:
            return JSONResponse({"errors": {"payload": ["invalid JSON"]}}, status_code=422)
        sent = await self._rest_send(
            claims,
            request.path_params["topic"],
            request.path_params["event"],
            payload,
            _truthy(request.query_params.get("private")),
            {},
            binary=True,
        )
        if not sent:
            # single_broadcast.ex: no RLS write permission → 403 {"message": "Unauthorized"}
            return JSONResponse({"message": "Unauthorized"}, status_code=403)
        return Response(status_code=202)
