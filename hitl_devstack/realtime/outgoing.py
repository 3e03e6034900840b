"""One broadcast on its way to a topic's subscribers, encoded at most once per serializer."""

from __future__ import annotations

from typing import Any

from hitl_devstack.realtime.serializer import Serializer, UserBroadcast


class Outgoing:
    """One broadcast, encoded at most once per serializer (MessageDispatcher's cache)."""

    __slots__ = ("_cache", "payload", "topic", "user")

    def __init__(
        self, topic: str, payload: dict[str, Any] | None = None, user: UserBroadcast | None = None
    ) -> None:
        self.topic = topic
        self.payload = payload  # a Phoenix.Socket.Broadcast payload, sent as JSON text
        self.user = user  # or a UserBroadcast (binary kind 4 to V2 sockets)
        self._cache: dict[str, str | bytes | None] = {}

    def encode(self, serializer: Serializer) -> str | bytes | None:
        v = serializer.version
        if v not in self._cache:
            if self.user is not None:
                self._cache[v] = serializer.user_broadcast(self.user)
            else:
                self._cache[v] = serializer.broadcast(self.topic, "broadcast", self.payload or {})
        return self._cache[v]
