"""The joined channels of one devstack, by topic, and what happens to a channel after its join.

What every handler of the Realtime service shares: its context and limits, the per-project rate
counters, the sockets, the topics and their subscribers, and the postgres_changes poller. A
channel's life after its join follows supabase/realtime (v2.129.8)
`lib/realtime_web/channels/realtime_channel.ex`: system messages (push_system_message/5),
shutdown_response/2, the channel stopping (presence leaves reach the others), confirm_token on a
timer and handle_in "access_token"; `deps/phoenix/lib/phoenix/socket.ex` for phx_close.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hitl_devstack.keys import TokenError
from hitl_devstack.realtime.authorization import (
    AuthContext,
    DatabaseUnavailable,
    Policies,
    RlsPolicyError,
    read_policies,
)
from hitl_devstack.realtime.changes import PostgresChanges
from hitl_devstack.realtime.channel import Channel, Socket, Topic, TopicKey
from hitl_devstack.realtime.joins import DB_UNAVAILABLE, UNAUTHORIZED, obj, token_shutdown_message
from hitl_devstack.realtime.limits import RateCounter, RealtimeLimits
from hitl_devstack.realtime.presence import Diff
from hitl_devstack.realtime.serializer import Message

CONFIRM_TOKEN_INTERVAL_S = 300.0  # realtime_channel.ex @confirm_token_ms_interval


class ChannelRegistry:
    """The sockets, the topics with their subscribers and presence, and the channels' lifecycle."""

    def __init__(self, ctx: Any, limits: RealtimeLimits) -> None:
        self.ctx = ctx  # the DevstackContext: its keys, pool and db_url
        self.limits = limits
        lim = limits
        # Per project, as Tenants.joins_per_second_rate / events_per_second_rate count them.
        self.joins = RateCounter(lim.max_joins_per_second, lim.rate_tick_s, lim.rate_buckets)
        self.events = RateCounter(lim.max_events_per_second, lim.rate_tick_s, lim.rate_buckets)
        self.presence_events = RateCounter(
            lim.max_presence_events_per_second, lim.rate_tick_s, lim.rate_buckets
        )
        self.changes = PostgresChanges(self)
        self.topics: dict[TopicKey, Topic] = {}
        self.sockets: set[Socket] = set()
        self.stopping = False  # the service is stopping: no new connections or joins

    def topic(self, key: TopicKey) -> Topic:
        topic = self.topics.get(key)
        if topic is None:
            topic = self.topics[key] = Topic()
        return topic

    def users(self) -> int:
        """UsersCounter.tenant_users/1: sockets that have joined a channel."""
        return sum(1 for s in self.sockets if s.counted)

    # ---- pushes from the channel process ------------------------------------------------

    def push(self, channel: Channel, event: str, payload: Any) -> None:
        """A push from the channel process: its join_ref, no ref."""
        channel.socket.push(channel.join_ref, None, channel.topic, event, payload)

    def system(self, channel: Channel, extension: str, status: str, message: str) -> None:
        """push_system_message/5."""
        self.push(
            channel,
            "system",
            {
                "channel": channel.subtopic,
                "extension": extension,
                "message": message,
                "status": status,
            },
        )

    def presence_diff(self, key: TopicKey, diff: Diff) -> None:
        """A presence_diff to every subscriber of the topic allowed to read presence."""
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

    # ---- the channel stopping -----------------------------------------------------------

    def shutdown(self, channel: Channel, message: str) -> None:
        """shutdown_response/2: system error, then the channel stops (phx_close)."""
        if channel.closed:
            return
        self.system(channel, "system", "error", message)
        self.stop_channel(channel, close=True)

    def stop_channel(self, channel: Channel, *, close: bool) -> None:
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
                self.presence_diff(channel.key, diff)
            if not topic:
                del self.topics[channel.key]
        if close:  # socket.ex encode_close: [join_ref, join_ref, topic, "phx_close", {}]
            sock.push(channel.join_ref, channel.join_ref, channel.topic, "phx_close", {})

    # ---- the channel's token (confirm_token, handle_in "access_token") ------------------

    def arm_confirm(self, channel: Channel) -> None:
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
            self.shutdown(channel, token_shutdown_message(e))
            return
        self.arm_confirm(channel)

    async def access_token(self, channel: Channel, msg: Message) -> None:
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
            self.shutdown(channel, token_shutdown_message(e))
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
                self.shutdown(channel, UNAUTHORIZED + channel.subtopic)
                return
            except DatabaseUnavailable:
                self.shutdown(channel, DB_UNAVAILABLE)
                return
            if not (policies.broadcast_read or policies.presence_read):
                self.shutdown(channel, UNAUTHORIZED + channel.subtopic)
                return
            if (previous.broadcast_read and policies.broadcast_read is False) or (
                previous.presence_read and policies.presence_read is False
            ):
                self.shutdown(
                    channel,
                    "You no longer have permission to read from this Channel topic: "
                    + channel.subtopic,
                )
                return
            channel.policies = policies
        channel.claims = claims
        self.arm_confirm(channel)
        self.changes.resubscribe(channel)  # the subscriptions carry the new claims
