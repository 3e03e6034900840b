"""The twin's realtime side: case channels (`MemoryCaseChannel`, `MemorySubscription`), the
operators' presence (`MemoryPresence`) and the operators' side of a case (`MemoryOperator`: it
answers, asks back and shows presence). Each takes the platform as the small `RealtimeHost` it
uses, so this module never imports `memory.py`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol
from uuid import UUID

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from hitl_relay.adapters.memory_state import Faults, MemCase
from hitl_relay.errors import PlatformUnavailable
from hitl_relay.ports import (
    ChannelEvent,
    Clock,
    HumanMessage,
    MessageKind,
    Reconnected,
    SenderType,
    Subscription,
    WakeUp,
)


class _Lost:
    """Sentinel put on a subscription's queue when it is lost for good."""


class MemorySubscription:
    """A confirmed subscription to one case; events queue until read."""

    def __init__(self, case_id: UUID) -> None:
        self._case_id = case_id
        self._send: MemoryObjectSendStream[ChannelEvent | _Lost]
        self._recv: MemoryObjectReceiveStream[ChannelEvent | _Lost]
        self._send, self._recv = anyio.create_memory_object_stream[ChannelEvent | _Lost](
            max_buffer_size=math.inf
        )
        self.connected = True
        self._lost = False

    @property
    def case_id(self) -> UUID:
        return self._case_id

    def deliver(self, event: ChannelEvent | _Lost) -> None:
        with contextlib.suppress(anyio.ClosedResourceError):  # left already: nobody listens
            self._send.send_nowait(event)

    def lose(self) -> None:
        """Rejoining is impossible: every read from now on fails."""
        self.deliver(_Lost())

    async def receive(self) -> ChannelEvent:
        if self._lost:
            raise PlatformUnavailable(f"subscription to case:{self._case_id} is lost")
        try:
            item = await self._recv.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._lost = True
            raise PlatformUnavailable(f"subscription to case:{self._case_id} is closed") from None
        if isinstance(item, _Lost):
            self._lost = True
            raise PlatformUnavailable(f"subscription to case:{self._case_id} is lost")
        return item

    def __aiter__(self) -> MemorySubscription:
        return self

    async def __anext__(self) -> ChannelEvent:
        return await self.receive()

    def close(self) -> None:
        self._send.close()
        self._recv.close()


class RealtimeHost(Protocol):
    """What the channel, presence and operator sides use of the platform (`MemoryPlatform`)."""

    clock: Clock
    cases: dict[UUID, MemCase]
    subscriptions: dict[UUID, set[MemorySubscription]]
    faults: Faults
    present: set[str] | None
    joins_requested: int
    joins_confirmed: int
    leaves: int

    realtime_connected: bool

    def changed(self) -> None: ...

    def broadcast(self, case_id: UUID, event: ChannelEvent) -> None: ...

    async def wait_until(self, predicate: Callable[[], bool], within_s: float = 5.0) -> None: ...

    def forge_broadcast(self, case_id: UUID, event: str, payload: Mapping[str, Any]) -> None: ...

    def post_message(
        self,
        case_id: UUID,
        content: str,
        *,
        kind: MessageKind = "answer",
        sender_type: SenderType = "human",
        sender_id: str | None = "operator-0",
        option_index: int | None = None,
    ) -> HumanMessage: ...


class MemoryCaseChannel:
    """`CaseChannel`: joins confirm at once unless a fault holds or refuses them."""

    def __init__(self, platform: RealtimeHost) -> None:
        self._p = platform

    def subscribe(self, case_id: UUID) -> AbstractAsyncContextManager[Subscription]:
        return self._subscribe(case_id)

    @asynccontextmanager
    async def _subscribe(self, case_id: UUID) -> AsyncIterator[Subscription]:
        p = self._p
        p.joins_requested += 1
        p.changed()
        if p.faults.refuse_joins:
            raise PlatformUnavailable(f"join case:{case_id} refused (injected)")
        gate = p.faults.join_gate
        if gate is not None:
            await gate.wait()
        else:
            await anyio.lowlevel.checkpoint()
        sub = MemorySubscription(case_id)
        p.subscriptions.setdefault(case_id, set()).add(sub)
        p.joins_confirmed += 1
        p.changed()
        try:
            yield sub
        finally:
            subs = p.subscriptions.get(case_id, set())
            subs.discard(sub)
            if not subs:
                p.subscriptions.pop(case_id, None)
            sub.close()
            p.leaves += 1
            p.changed()


class MemoryPresence:
    """`OperatorPresence`: the count of present operators, cached for `ttl_s`."""

    def __init__(self, platform: RealtimeHost, ttl_s: float) -> None:
        self._p = platform
        self._ttl = ttl_s
        self._cached: tuple[float, int | None] | None = None

    async def operators_online(self) -> int | None:
        await anyio.lowlevel.checkpoint()
        now = self._p.clock.monotonic()
        if self._cached is not None and now - self._cached[0] < self._ttl:
            return self._cached[1]
        present = self._p.present
        value = None if present is None else len(present)
        self._cached = (now, value)
        return value


class MemoryOperator:
    """The operators' side of the twin: answer a case, be present or not."""

    def __init__(self, platform: RealtimeHost) -> None:
        self._p = platform

    async def answer(
        self,
        case_id: UUID,
        content: str,
        *,
        kind: MessageKind = "answer",
        sender_type: SenderType = "human",
        option_index: int | None = None,
    ) -> UUID:
        await anyio.lowlevel.checkpoint()
        return self._p.post_message(
            case_id, content, kind=kind, sender_type=sender_type, option_index=option_index
        ).message_id

    async def forge(self, case_id: UUID, event: str, payload: Mapping[str, Any]) -> None:
        """Broadcast on `case:<case_id>` as a client (an operator's token may send there)."""
        await anyio.lowlevel.checkpoint()
        self._p.forge_broadcast(case_id, event, payload)

    async def ask_back(self, case_id: UUID, question: str) -> UUID:
        """Reply with a question instead of an answer (a `clarification` message)."""
        return await self.answer(case_id, question, kind="clarification")

    async def go_online(self, operator_id: str = "operator-0") -> None:
        await anyio.lowlevel.checkpoint()
        if self._p.present is None:
            self._p.present = set()
        self._p.present.add(operator_id)
        self._p.changed()

    async def go_offline(self, operator_id: str = "operator-0") -> None:
        await anyio.lowlevel.checkpoint()
        if self._p.present is None:
            self._p.present = set()
        self._p.present.discard(operator_id)
        self._p.changed()

    async def wait_for_case(self, within_s: float = 5.0) -> UUID:
        """The next case without an answer, once one exists (oldest first)."""
        await self._p.wait_until(
            lambda: any(c.answer_message_id is None for c in self._p.cases.values()), within_s
        )
        return next(c.id for c in self._p.cases.values() if c.answer_message_id is None)

    async def answer_every_case(self, text: str, delay_s: float) -> None:
        """Run until cancelled: answer each new case with `text` after `delay_s` (demos)."""
        answered: set[UUID] = set()
        while True:
            await self._p.wait_until(
                lambda: any(c.id not in answered for c in self._p.cases.values()), math.inf
            )
            for case in list(self._p.cases.values()):
                if case.id not in answered:
                    answered.add(case.id)
                    await self._p.clock.sleep(delay_s)
                    if case.answer_message_id is None:
                        self._p.post_message(case.id, text)


class MemoryChannelSide:
    """The platform's channel side (`MemoryPlatform` takes it): broadcasts to the open
    subscriptions, and the faults a test injects on the connection."""

    @property
    def joined_channels(self: RealtimeHost) -> int:
        return sum(len(subs) for subs in self.subscriptions.values())

    def broadcast(self: RealtimeHost, case_id: UUID, event: ChannelEvent) -> None:
        if self.faults.drop_broadcasts:
            return
        for sub in list(self.subscriptions.get(case_id, ())):
            if sub.connected:
                sub.deliver(event)

    def forge_broadcast(
        self: RealtimeHost, case_id: UUID, event: str, payload: Mapping[str, Any]
    ) -> None:
        """A client's broadcast on `case:<case_id>` (an operator's token may send there): the
        twin, like the Supabase adapter, cannot prove the database sent it, so subscribers get
        only a `WakeUp`, whatever `event` and `payload` claim."""
        del event, payload  # what a client claims is never read
        self.broadcast(case_id, WakeUp(case_id))

    # -- faults on the channel

    def disconnect(self: RealtimeHost) -> None:
        """The connection drops: subscriptions stay open but receive nothing until reconnect."""
        self.realtime_connected = False
        for subs in self.subscriptions.values():
            for sub in subs:
                sub.connected = False
        self.changed()

    def reconnect(self: RealtimeHost) -> None:
        """The connection is back and every channel rejoined: each subscription is told."""
        self.realtime_connected = True
        for case_id, subs in self.subscriptions.items():
            for sub in subs:
                if not sub.connected:
                    sub.connected = True
                    sub.deliver(Reconnected(case_id=case_id))
        self.changed()

    def lose_subscriptions(self: RealtimeHost) -> None:
        """Rejoining is impossible: every open subscription fails from now on."""
        for subs in self.subscriptions.values():
            for sub in subs:
                sub.lose()
        self.changed()
