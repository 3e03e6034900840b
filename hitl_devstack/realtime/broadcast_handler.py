"""Broadcasts: a client's send on its channel, and the fan-out every broadcast goes through.

Following supabase/realtime (v2.129.8)
`lib/realtime_web/channels/realtime_channel/broadcast_handler.ex` (a client's broadcast, its
write check and ack) and `lib/realtime_web/channels/realtime_channel/message_dispatcher.ex`
(fan-out and its gates). Database broadcasts (`database.py`) and the REST broadcast API
(`api.py`) reach the sockets through this handler: it is their host.
"""

from __future__ import annotations

import logging
from typing import Any

from hitl_devstack.hops import HopStart
from hitl_devstack.realtime.authorization import (
    AuthContext,
    DatabaseUnavailable,
    RlsPolicyError,
    write_policies,
)
from hitl_devstack.realtime.channel import Channel, TopicKey
from hitl_devstack.realtime.outgoing import Outgoing
from hitl_devstack.realtime.registry import ChannelRegistry
from hitl_devstack.realtime.serializer import Message, UserBroadcast, UserBroadcastPush, dumps

log = logging.getLogger("hitl_devstack.realtime")


class BroadcastHandler:
    """A client's broadcast, the fan-out to a topic's subscribers, and delivery for the API
    (`api.BroadcastHost` and `database.BroadcastsHost`)."""

    def __init__(self, registry: ChannelRegistry) -> None:
        self.registry = registry
        self.ctx: Any = registry.ctx
        self.limits = registry.limits
        self.events = registry.events

    async def handle(self, channel: Channel, msg: Message) -> None:
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
            self.registry.stop_channel(channel, close=False)
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
        since: HopStart | None = None,
    ) -> int:
        """MessageDispatcher.dispatch/3: every subscriber allowed to read, except the sender
        without `self`, encoded once per serializer. Returns how many received it."""
        topic = self.registry.topics.get(key)
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
                self.registry.shutdown(ch, "Too many messages per second")
        return len(delivered)

    # ---- the REST broadcast API's deliveries --------------------------------------------

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
