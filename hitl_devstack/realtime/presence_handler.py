"""Presence on a joined channel: a client's track and untrack, with their limits and checks.

Following supabase/realtime (v2.129.8)
`lib/realtime_web/channels/realtime_channel/presence_handler.ex` (handle/3, the write check on
the first track, limit_client_presence_event, limit_presence_event); the presence state and its
diffs are in `presence.py`, and the diffs reach the topic's members through the registry.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from hitl_devstack.realtime.authorization import (
    AuthContext,
    DatabaseUnavailable,
    RlsPolicyError,
    read_policies,
    write_policies,
)
from hitl_devstack.realtime.channel import Channel
from hitl_devstack.realtime.registry import ChannelRegistry
from hitl_devstack.realtime.serializer import Message, dumps

log = logging.getLogger("hitl_devstack.realtime")


class PresenceHandler:
    """A channel's `presence` pushes: track, untrack, or an unknown event's error reply."""

    def __init__(self, registry: ChannelRegistry) -> None:
        self.registry = registry

    async def handle(self, channel: Channel, msg: Message) -> None:
        reg, lim = self.registry, self.registry.limits
        sock, payload = channel.socket, msg.payload
        if not isinstance(payload, dict) or "event" not in payload:
            sock.reply(channel.join_ref, msg.ref, channel.topic, "ok", {})
            return
        now = time.monotonic()  # limit_client_presence_event: a fixed window per channel
        if channel.presence_window_ends is None or now > channel.presence_window_ends:
            channel.presence_calls = 1
            channel.presence_window_ends = now + lim.presence_window_s
        elif channel.presence_calls >= lim.presence_max_calls:
            reg.shutdown(channel, "Client presence rate limit exceeded")
            return
        else:
            channel.presence_calls += 1
        if reg.presence_events.current_avg() > lim.max_presence_events_per_second:
            reg.shutdown(channel, "Too many presence messages per second")  # limit_presence_event
            return
        reg.presence_events.add()
        event = str(payload["event"]).lower()
        if event == "track":
            await self._track(channel, msg, payload)
        elif event == "untrack":
            diff = reg.topic(channel.key).presence.untrack(channel.presence_key, channel)
            channel.tracked = None
            sock.reply(channel.join_ref, msg.ref, channel.topic, "ok", {})
            if diff is not None:
                reg.presence_diff(channel.key, diff)
        else:  # UnknownPresenceEvent → {:reply, :error, socket}
            sock.reply(channel.join_ref, msg.ref, channel.topic, "error", {})

    async def _track(self, channel: Channel, msg: Message, payload: dict[str, Any]) -> None:
        reg = self.registry
        sock = channel.socket
        policies = channel.policies
        if policies is not None:
            if policies.presence_write is None:  # authorised once, on the first track
                ctx = AuthContext(channel.subtopic, channel.claims, sock.headers)
                try:
                    if policies.presence_read is None:
                        await read_policies(reg.ctx.pool, ctx, policies, presence_enabled=True)
                    await write_policies(reg.ctx.pool, ctx, policies)
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
        if len(dumps(meta).encode()) > reg.limits.max_payload_bytes:
            reg.shutdown(channel, "Track message size exceeded")
            return
        diff = reg.topic(channel.key).presence.track(channel.presence_key, channel, meta)
        channel.tracked = meta
        channel.presence_enabled = True
        sock.reply(channel.join_ref, msg.ref, channel.topic, "ok", {})
        reg.presence_diff(channel.key, diff)
