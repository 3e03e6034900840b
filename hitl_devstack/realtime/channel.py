"""A client's websocket (`Socket`), its joined channels (`Channel`) and the per-topic index.

A Socket owns one send queue drained by one writer task, so every frame for a client goes out in
the order it was produced (replies, pushes, broadcasts), as from Phoenix's transport process.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from hitl_devstack.hops import HopStart
from hitl_devstack.realtime.authorization import Policies
from hitl_devstack.realtime.presence import TopicPresence
from hitl_devstack.realtime.serializer import Serializer

log = logging.getLogger("hitl_devstack.realtime")

# Frames queued for a client that does not read; past this the socket is closed, never the server.
SEND_QUEUE_LIMIT = 50_000

TopicKey = tuple[str, bool]  # (sub-topic, private): private and public topics never mix


@dataclass(eq=False)
class Binding:
    """One `postgres_changes` entry of a join: the id in the join reply (phash) and the
    subscription id Realtime writes to `realtime.subscription` (a uuid1)."""

    params: dict[str, Any]
    reply_id: int
    subscription_id: uuid.UUID


class Socket:
    def __init__(
        self, ws: WebSocket, serializer: Serializer, token: str, headers: dict[str, str]
    ) -> None:
        self.ws = ws
        self.serializer = serializer
        self.token = token  # the connect token (apikey): the default for joins
        self.headers = headers  # x-* upgrade headers, for `request.headers` in RLS checks
        self.channels: dict[str, Channel] = {}
        # a frame, or a frame with the instant its database broadcast arrived (to time the hop)
        self.queue: asyncio.Queue[str | bytes | tuple[str | bytes, HopStart] | None] = (
            asyncio.Queue()
        )
        self.closing: tuple[int, str] | None = None
        self.gone = False  # the client went away: nothing more can be sent
        self.done = asyncio.Event()
        self.counted = False  # counted as a connected user (joined a channel once)

    def send(self, data: str | bytes, since: HopStart | None = None) -> None:
        if self.closing is not None:
            return
        if self.queue.qsize() >= SEND_QUEUE_LIMIT:
            log.warning(
                "closing a socket that stopped reading (%d frames queued)", SEND_QUEUE_LIMIT
            )
            self.close(1011, "send queue overflow: the client is not reading")
            return
        self.queue.put_nowait(data if since is None else (data, since))

    def push(
        self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any
    ) -> None:
        self.send(self.serializer.push(join_ref, ref, topic, event, payload))

    def reply(
        self, join_ref: str | None, ref: str | None, topic: str, status: str, response: Any
    ) -> None:
        self.send(self.serializer.reply(join_ref, ref, topic, status, response))

    def close(self, code: int, reason: str = "") -> None:
        """Close after the frames already queued have gone out."""
        if self.closing is None:
            self.closing = (code, reason.encode()[:123].decode(errors="ignore"))
            self.queue.put_nowait(None)


@dataclass(eq=False)
class Channel:
    """One joined `realtime:<sub-topic>` on one socket (a Phoenix channel process)."""

    socket: Socket
    topic: str
    join_ref: str | None
    private: bool
    self_broadcast: bool
    ack_broadcast: bool
    presence_key: str
    presence_enabled: bool
    token: str
    claims: dict[str, Any]
    policies: Policies | None  # None on public channels (no authorisation)
    replayed: frozenset[str] = frozenset()
    tracked: dict[str, Any] | None = None  # the last tracked presence payload
    presence_calls: int = 0
    presence_window_ends: float | None = None
    confirm_timer: asyncio.TimerHandle | None = None
    closed: bool = False
    pg_bindings: list[Binding] = field(default_factory=list)
    pg_new_api: bool = True  # the join had `config`: changes come as `postgres_changes`
    pg_task: asyncio.Task[None] | None = None  # the pending postgres_subscribe

    @property
    def subtopic(self) -> str:
        return self.topic.removeprefix("realtime:")

    @property
    def key(self) -> TopicKey:
        return (self.subtopic, self.private)

    def can_read_broadcast(self) -> bool:
        return self.policies is None or self.policies.broadcast_read is True

    def can_read_presence(self) -> bool:
        return self.policies is None or self.policies.presence_read is True


@dataclass(eq=False)
class Topic:
    """Subscribers of one (sub-topic, private) pair, in join order, and its presence."""

    subscribers: dict[Channel, None] = field(default_factory=dict)
    presence: TopicPresence = field(default_factory=TopicPresence)

    def __bool__(self) -> bool:
        return bool(self.subscribers) or bool(self.presence)
