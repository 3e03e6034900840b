"""A channel join on a socket: its checks and their replies, then the joined channel.

Following supabase/realtime (v2.129.8) `lib/realtime_web/channels/realtime_channel.ex` join/3
(limit_joins/2, limit_channels/2, confirm_token/1, maybe_assign_policies/3, join_error/1) and
`handle_info({:replay, messages})`; the join's parameters, token replies and replay query are in
`joins.py`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from hitl_devstack.keys import TokenError
from hitl_devstack.realtime.authorization import (
    AuthContext,
    DatabaseUnavailable,
    Policies,
    RlsPolicyError,
    read_policies,
)
from hitl_devstack.realtime.channel import Channel, Socket
from hitl_devstack.realtime.joins import (
    DB_UNAVAILABLE,
    UNAUTHORIZED,
    JoinRefused,
    flag,
    join_token,
    join_token_reason,
    obj,
    postgres_changes,
    replay,
)
from hitl_devstack.realtime.registry import ChannelRegistry
from hitl_devstack.realtime.serializer import Message

log = logging.getLogger("hitl_devstack.realtime")


class JoinHandler:
    """phx_join on a `realtime:` topic: refused with Realtime's reason, or a channel joined."""

    def __init__(self, registry: ChannelRegistry) -> None:
        self.registry = registry

    async def join(self, sock: Socket, msg: Message) -> None:
        try:
            await self._do_join(sock, msg)
        except JoinRefused as e:
            await asyncio.sleep(self.registry.limits.channel_error_backoff_s)  # join_error/1
            sock.reply(msg.join_ref, msg.ref, msg.topic, "error", {"reason": e.reason})
            if e.disconnect:  # %Phoenix.Socket.Broadcast{event: "disconnect"} → close 1001
                sock.close(1001)

    async def _do_join(self, sock: Socket, msg: Message) -> None:
        reg = self.registry
        subtopic = msg.topic.removeprefix("realtime:")
        if not subtopic:
            raise JoinRefused("TopicNameRequired: You must provide a topic name")
        params = obj(msg.payload)
        config = obj(params.get("config"))
        broadcast, presence = obj(config.get("broadcast")), obj(config.get("presence"))
        private = flag(config.get("private"))
        presence_enabled = flag(presence.get("enabled"))
        token = join_token(params, sock.token)
        if reg.stopping:
            raise JoinRefused("RealtimeRestarting: Realtime is restarting, please standby")
        if not sock.counted and reg.users() >= reg.limits.max_concurrent_users:
            raise JoinRefused("ConnectionRateLimitReached: Too many connected users")
        if reg.joins.triggered:  # limit_joins/2
            log.warning("realtime: ClientJoinRateLimitReached: Too many joins per second")
            raise JoinRefused(
                "ClientJoinRateLimitReached: Too many joins per second", disconnect=True
            )
        reg.joins.add()
        if len(sock.channels) >= reg.limits.max_channels_per_client:  # limit_channels/2
            raise JoinRefused("ChannelRateLimitReached: Too many channels")
        try:
            claims = reg.ctx.keys.verify(token)  # confirm_token/1
        except TokenError as e:
            raise JoinRefused(join_token_reason(e)) from None
        policies: Policies | None = None
        if private:  # maybe_assign_policies/3
            policies = Policies()
            ctx = AuthContext(subtopic, claims, sock.headers)
            try:
                await read_policies(reg.ctx.pool, ctx, policies, presence_enabled=presence_enabled)
            except RlsPolicyError as e:
                log.info("realtime: RLS policy error joining %s: %s", subtopic, e)
                raise JoinRefused("Unauthorized: " + UNAUTHORIZED + subtopic) from None
            except DatabaseUnavailable:
                raise JoinRefused("UnableToConnectToProject: " + DB_UNAVAILABLE) from None
            if not (policies.broadcast_read or policies.presence_read):
                raise JoinRefused("Unauthorized: " + UNAUTHORIZED + subtopic)
        replays: list[dict[str, Any]] = []
        if "replay" in broadcast:
            replays = await replay(reg.ctx.pool, subtopic, private, policies, broadcast["replay"])
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
        reg.topic(channel.key).subscribers[channel] = None
        reg.arm_confirm(channel)
        changes = [{**b.params, "id": b.reply_id} for b in bindings]
        sock.reply(msg.join_ref, msg.ref, msg.topic, "ok", {"postgres_changes": changes})
        reg.changes.joined(channel)
        for row in replays:  # handle_info({:replay, messages}): channel pushes, in order
            reg.push(channel, "broadcast", row["payload"])
        if flag(broadcast.get("replication_ready")):
            reg.system(channel, "system", "ok", "Replication connection established")
        if presence_enabled and channel.can_read_presence():  # PresenceHandler.sync/1
            reg.push(channel, "presence_state", reg.topics[channel.key].presence.state())
