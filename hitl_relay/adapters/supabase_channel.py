"""The relay's `CaseChannel` and `OperatorPresence` over the Realtime socket pool
(`realtime_pool.py`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast
from uuid import UUID

from loguru import logger

from hitl_relay.adapters.realtime_channel import RealtimeChannel
from hitl_relay.adapters.realtime_pool import SocketPool
from hitl_relay.adapters.realtime_tuning import (
    Changed,
)
from hitl_relay.errors import PlatformUnavailable
from hitl_relay.ports import (
    ChannelEvent,
)


class _Lost:
    """Queued when the subscription's channel is gone for good."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class SupabaseSubscription:
    """A confirmed-joined `case:<id>` subscription; events queue until read."""

    def __init__(self, case_id: UUID) -> None:
        self._case_id = case_id
        self._queue: asyncio.Queue[ChannelEvent | _Lost] = asyncio.Queue()
        self._lost: str | None = None

    @property
    def case_id(self) -> UUID:
        return self._case_id

    async def receive(self) -> ChannelEvent:
        if self._lost is not None:
            raise PlatformUnavailable(self._lost)
        item = await self._queue.get()
        if isinstance(item, _Lost):
            self._lost = f"subscription to case:{self._case_id} lost: {item.reason}"
            raise PlatformUnavailable(self._lost)
        return item

    def __aiter__(self) -> SupabaseSubscription:
        return self

    async def __anext__(self) -> ChannelEvent:
        return await self.receive()

    # Listener
    def on_event(self, event: ChannelEvent) -> None:
        self._queue.put_nowait(event)

    def on_interrupted(self) -> None:
        """Nothing to do: `Reconnected` follows the rejoin (or `on_lost` if it never comes)."""

    def on_lost(self, reason: str) -> None:
        self._queue.put_nowait(_Lost(reason))

    def on_presence_sync(self) -> None:
        """Case channels carry no presence."""


class SupabaseCaseChannel:
    """`CaseChannel` over the socket pool."""

    def __init__(self, pool: SocketPool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def subscribe(self, case_id: UUID) -> AsyncIterator[SupabaseSubscription]:
        sub = SupabaseSubscription(case_id)
        channel = await self._pool.attach(f"case:{case_id}", "case", sub)
        try:
            yield sub
        finally:
            self._pool.detach(channel, sub)

    @property
    def subscriptions(self) -> int:
        """Open subscriptions (each `subscribe` context not yet exited), for tests and metrics."""
        return sum(
            len(c.listeners)
            for s in self._pool.sockets
            for c in s.channels.values()
            if c.kind == "case"
        )


class SupabasePresence:
    """`OperatorPresence` from one long-lived join of the private `operators` channel.

    The relay joins with presence enabled but tracks nothing itself; it counts the distinct
    operators present (`operator_id` of each tracked meta, else the presence key). The count is
    unknown (None) until the join is confirmed and the server's `presence_state` has arrived,
    and again from any interruption until the next `presence_state`.
    """

    TOPIC = "operators"

    def __init__(self, pool: SocketPool, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self._pool = pool
        self._ttl_s = ttl_s
        self._clock = clock
        self._channel: RealtimeChannel | None = None
        self._synced = False
        self._lost = asyncio.Event()
        self._cached: tuple[float, int | None] | None = None
        self._task: asyncio.Task[None] | None = None
        # Notified whenever the count may have changed or become (un)known.
        self.changed = Changed()

    def start(self) -> None:
        """Join in the background and keep the join (rejoined after any loss, with backoff)."""
        if self._task is None:
            self._task = self._pool.spawn(self._keep_joined(), "presence on operators")

    async def _keep_joined(self) -> None:
        failures = 0
        while True:
            self._lost = asyncio.Event()
            try:
                self._channel = await self._pool.attach(self.TOPIC, "presence", self)
            except PlatformUnavailable as e:
                failures += 1
                delay = self._pool.tuning.reconnect_delay(failures)
                (logger.warning if failures == 1 else logger.debug)(
                    "presence on operators not joined ({}); retrying in {:.2f} s", e.detail, delay
                )
                await asyncio.sleep(delay)  # backoff between join attempts
                continue
            failures = 0
            self.changed.notify()  # joined: the count is known from now on
            await self._lost.wait()
            self._synced = False
            channel, self._channel = self._channel, None
            self._pool.detach(channel, self)

    @property
    def joined(self) -> bool:
        return self._channel is not None and self._synced

    def count(self) -> int | None:
        """The uncached count (None when unknown)."""
        channel = self._channel
        if channel is None or channel.rt is None or not self._synced:
            return None
        if channel.state != "joined":
            return None
        operators: set[str] = set()
        for key, metas in channel.rt.presence.state.items():
            for meta in metas:
                operator_id = cast(Mapping[str, Any], meta).get("operator_id")
                operators.add(str(operator_id) if operator_id else key)
        return len(operators)

    async def operators_online(self) -> int | None:
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < self._ttl_s:
            return self._cached[1]
        value = self.count()
        # Only a known count is kept: "unknown" (not joined or not synced yet) is cheap to
        # ask again, and kept it would outlast the join that makes the count known.
        self._cached = None if value is None else (now, value)
        return value

    # Listener
    def on_event(self, event: ChannelEvent) -> None:
        """`operators` carries `case_opened` broadcasts, which the relay does not need."""

    def on_interrupted(self) -> None:
        self._synced = False
        self._cached = None
        self.changed.notify()

    def on_lost(self, reason: str) -> None:
        self._synced = False
        self._cached = None
        self._lost.set()
        self.changed.notify()

    def on_presence_sync(self) -> None:
        self._synced = True
        self._cached = None
        self.changed.notify()
