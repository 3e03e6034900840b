"""One topic joined on one socket of the pool: its join, leave and state, and the broadcasts it
hands to its listeners. A channel sees its socket and pool through the protocols below, so this
module does not import the pool that creates its channels."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Literal, Protocol

from loguru import logger
from realtime import (
    AsyncRealtimeChannel,
    AsyncRealtimeClient,
    BroadcastPayload,
    RealtimeSubscribeStates,
)

from hitl_relay.adapters import hop_stamps, realtime_internals
from hitl_relay.adapters.realtime_events import parse_message, parse_session
from hitl_relay.adapters.realtime_pacing import JoinPacer
from hitl_relay.adapters.realtime_tuning import (
    CONNECT_ERRORS,
    PERMANENT_REFUSALS,
    RATE_LIMIT_REFUSALS,
    Changed,
    ChannelKind,
    Listener,
    RealtimeTuning,
    channel_options,
    refusal_reason,
)
from hitl_relay.adapters.signed_events import EventKey
from hitl_relay.adapters.supabase_shapes import (
    ShapeError,
    parse_uuid,
)
from hitl_relay.errors import PlatformUnavailable
from hitl_relay.ports import (
    HumanMessage,
    Reconnected,
    SessionEvent,
    WakeUp,
)
from hitl_relay.result_first import result_written


class ChannelSocket(Protocol):
    """What a channel uses of the socket it is joined on (`realtime_pool.RealtimeSocket`)."""

    @property
    def client(self) -> AsyncRealtimeClient: ...

    connected: asyncio.Event
    last_error: str
    leaving: dict[str, RealtimeChannel]

    def down_for(self) -> float: ...

    def forget(self, channel: RealtimeChannel) -> None: ...

    def left(self, channel: RealtimeChannel) -> None: ...

    def poke(self) -> None: ...


class ChannelPool(Protocol):
    """What a channel uses of its pool (`realtime_pool.SocketPool`)."""

    tuning: RealtimeTuning
    event_key: EventKey
    pacer: JoinPacer
    changed: Changed
    rate_limited: int

    @property
    def closing(self) -> bool: ...

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None: ...

    def update_gauges(self) -> None: ...


def pace_joins(rt: AsyncRealtimeChannel, pool: ChannelPool) -> None:
    """Send every join of `rt` (subscribe(), its rejoin timer, the rejoins after a reconnect)
    once the pool's pacer allows it, from a pool task."""

    async def send_when_allowed(send: Callable[[], Awaitable[None]]) -> None:
        await pool.pacer.acquire()
        # Not for a channel left (or replaced) meanwhile: its slot on the server is gone.
        current = rt.socket.channels.get(rt.topic) is rt
        if current and not rt.is_leaving and rt.socket.is_connected:
            await send()

    realtime_internals.send_joins_through(
        rt, lambda send: pool.spawn(send_when_allowed(send), f"join {rt.topic}")
    )


ChannelState = Literal["joining", "joined", "interrupted", "lost", "leaving"]


class RealtimeChannel:
    """One topic joined on one socket, shared by the listeners attached to it."""

    def __init__(
        self, pool: ChannelPool, sock: ChannelSocket, topic: str, kind: ChannelKind
    ) -> None:
        self.pool = pool
        self.sock = sock
        self.topic = topic
        self.kind = kind
        self.case_id = parse_uuid(topic.removeprefix("case:")) if kind == "case" else None
        self.listeners: set[Listener] = set()
        self.state: ChannelState = "joining"
        self.lost_reason = ""
        self.rt: AsyncRealtimeChannel | None = None
        self.join_task: asyncio.Task[None] | None = None
        self.changed = Changed()

    # ---- join / leave ---------------------------------------------------------------------

    async def join(self) -> None:
        """Join once (run as a pool task); the outcome is the state: joined or lost."""
        tuning = self.pool.tuning
        try:
            async with asyncio.timeout(tuning.join_timeout_s):
                while not self.sock.connected.is_set():
                    down_for = self.sock.down_for()
                    if down_for >= tuning.fail_joins_after_down_s:
                        self.lose(
                            f"join {self.topic}: realtime unreachable for {down_for:.1f} s "
                            f"({self.sock.last_error})"
                        )
                        return
                    changed = self.pool.changed.wait()
                    try:
                        async with asyncio.timeout(tuning.fail_joins_after_down_s - down_for):
                            await changed
                    except TimeoutError:
                        pass
                rt = self.sock.client.channel(self.topic, channel_options(self.kind))
                if not rt.is_closed:  # realtime-py handed back a join of this topic still alive
                    self.lose(f"{self.topic} is still joined on this socket")
                    return
                if self.kind == "case":
                    rt.on_broadcast("message", self._on_message)
                    rt.on_broadcast("session", self._on_session)
                else:
                    rt.on_presence_sync(self._on_presence_sync)
                pace_joins(rt, self.pool)
                self.rt = rt
                await rt.subscribe(self._on_state)
                while self.state == "joining":
                    await self.changed.wait()
        except TimeoutError:
            self.lose(f"join {self.topic}: not confirmed within {tuning.join_timeout_s:g} s")
        except CONNECT_ERRORS as e:
            self.lose(f"join {self.topic}: cannot connect: {type(e).__name__}: {e}")

    async def wait_joined(self, timeout_s: float) -> None:
        """Until the channel is joined (confirmed); PlatformUnavailable if lost or too slow."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.state != "joined":
                    if self.state in ("lost", "leaving"):
                        raise PlatformUnavailable(self.lost_reason or f"{self.topic} was left")
                    await self.changed.wait()
        except TimeoutError:
            raise PlatformUnavailable(
                f"join {self.topic}: not confirmed within {timeout_s:g} s"
            ) from None

    def leave(self) -> None:
        """The last listener left: leave the topic now; the slot frees on the server's reply.

        Synchronous, so a cancelled caller cannot interrupt it half-way: the phx_leave itself
        is sent by a pool task (realtime-py buffers it while disconnected), and the server's
        reply, or realtime-py's push timeout, reports CLOSED. The task sends it once the result
        of the call that left is written (`result_first`): the topic is out of the socket's
        channels already, so nothing reaches the call meanwhile.
        """
        if self.state in ("lost", "leaving"):
            return
        self.state = "leaving"
        self.sock.forget(self)
        if self.join_task is not None and self.join_task is not asyncio.current_task():
            self.join_task.cancel()
        self.changed.notify()
        if self.rt is not None:
            self.sock.leaving[self.topic] = self
            self.pool.spawn(self._send_leave(self.rt, after_result=True), f"leave {self.topic}")
        self.pool.update_gauges()

    async def _send_leave(self, rt: AsyncRealtimeChannel, *, after_result: bool = False) -> None:
        if after_result:
            await result_written()
        try:
            async with asyncio.timeout(self.pool.tuning.join_timeout_s):
                await rt.unsubscribe()
        except TimeoutError:
            # The socket is stalled; realtime-py's push timeout still reports CLOSED.
            logger.bind(topic=self.topic).info("leave not sent in time (stalled socket)")

    def lose(self, reason: str, *, server_closed: bool = False) -> None:
        """Gone for good: every listener is told; a join still pending on the server is left."""
        if self.state in ("lost", "leaving"):
            return
        self.state = "lost"
        self.lost_reason = reason
        self.sock.forget(self)
        log = logger.bind(topic=self.topic)
        (log.debug if self.pool.closing else log.warning)("realtime channel lost: {}", reason)
        for listener in list(self.listeners):
            listener.on_lost(reason)
        self.changed.notify()
        if self.join_task is not None and self.join_task is not asyncio.current_task():
            self.join_task.cancel()
        if self.rt is not None and not server_closed:
            # Stops realtime-py's rejoin timer and tells the server; CLOSED frees the slot.
            self.sock.leaving[self.topic] = self
            self.pool.spawn(self._send_leave(self.rt), f"leave {self.topic}")
        self.pool.update_gauges()

    # ---- realtime-py callbacks (run synchronously in its listener task) ------------------

    def _on_state(self, state: RealtimeSubscribeStates, error: Exception | None) -> None:
        self.sock.poke()
        if state == RealtimeSubscribeStates.CLOSED:
            if self.sock.leaving.get(self.topic) is self:
                self.sock.left(self)
            elif self.state not in ("lost", "leaving"):
                self.lose(f"{self.topic} closed by the server", server_closed=True)
            return
        if self.state in ("lost", "leaving"):
            return
        if state == RealtimeSubscribeStates.SUBSCRIBED:
            was = self.state
            self.state = "joined"
            if was == "interrupted":
                logger.bind(topic=self.topic).debug("realtime channel rejoined")
                if self.case_id is not None:
                    for listener in list(self.listeners):
                        listener.on_event(Reconnected(case_id=self.case_id))
                else:
                    for listener in list(self.listeners):
                        listener.on_interrupted()  # presence: wait for the new presence_state
            self.pool.update_gauges()
            self.changed.notify()
            return
        # CHANNEL_ERROR or TIMED_OUT: realtime-py rejoins by itself (timer, or on reconnect).
        reason = refusal_reason(error)
        if reason is not None and reason.startswith(PERMANENT_REFUSALS):
            self.lose(f"join {self.topic} refused: {reason}")
            return
        if reason is not None and reason.startswith(RATE_LIMIT_REFUSALS) and self.rt is not None:
            # Instead of realtime-py's 30 s: every join pauses, then this one is sent again
            # (the server also drops the socket; a reconnect rejoins it, paced, even sooner).
            base = self.pool.tuning.rate_limited_rejoin_s
            delay = base / 2 + random.uniform(0.0, base / 2)
            self.pool.pacer.pause(delay)
            realtime_internals.rejoin_in(self.rt, delay)
            self.pool.rate_limited += 1
            self.pool.changed.notify()
            logger.bind(topic=self.topic).warning(
                "realtime join refused ({}); joining again in {:.1f} s", reason, delay
            )
        if reason is not None and reason.startswith("ChannelRateLimitReached"):
            # The server allows fewer channels per socket than configured: say so plainly.
            self.lose(
                f"join {self.topic} refused: {reason} (lower channels_per_socket to the "
                "platform's limit)"
            )
            return
        if self.state == "joined":
            self.state = "interrupted"
            detail = reason or (f"{type(error).__name__}: {error}" if error else state.value)
            logger.bind(topic=self.topic).debug("realtime channel interrupted: {}", detail)
            for listener in list(self.listeners):
                listener.on_interrupted()
            self.pool.update_gauges()
            self.changed.notify()

    def _on_message(self, message: BroadcastPayload) -> None:
        self._on_broadcast("message", message, parse_message)

    def _on_session(self, message: BroadcastPayload) -> None:
        self._on_broadcast("session", message, parse_session)

    def _on_broadcast(
        self,
        name: str,
        message: BroadcastPayload,
        parse: Callable[[Mapping[str, Any]], HumanMessage | SessionEvent],
    ) -> None:
        """Deliver the event when its signature proves the database sent it; anything else on
        the topic (a client's broadcast, an unsigned or unreadable event) is only a wake-up."""
        if self.case_id is None:
            return
        payload = message.get("payload")
        event: HumanMessage | SessionEvent | WakeUp = WakeUp(self.case_id)
        if isinstance(payload, Mapping) and self.pool.event_key.verify(name, payload):
            try:
                event = parse(payload)
            except (ShapeError, KeyError, TypeError) as e:
                logger.bind(topic=self.topic).warning("unreadable {} broadcast: {}", name, e)
                return
        if event.case_id == self.case_id:
            if isinstance(event, HumanMessage):
                hop_stamps.answer_frame(str(event.case_id))
            for listener in list(self.listeners):
                listener.on_event(event)

    def _on_presence_sync(self) -> None:
        for listener in list(self.listeners):
            listener.on_presence_sync()
