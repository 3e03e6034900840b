"""Realtime for the relay: private `case:<id>` channels and presence on `operators`, carried by a
pool of realtime-py sockets (`AsyncRealtimeClient`, service-role token).

The pool:

- Never puts more than `channels_per_socket` channels on one socket (Supabase refuses the
  101st join with `ChannelRateLimitReached`); a socket is opened when every open one is full and
  closed once it has carried nothing for `idle_close_s`. Sockets fill in creation order, so
  the newest ones are the ones that empty and close.
- Joins each topic once: subscriptions to the same case share one channel (realtime-py keeps
  one channel per topic per socket, and a second join of a topic would make the server close
  the first).
- Reconnects by itself. realtime-py's own reconnect (auto_reconnect) doubles its backoff up to
  60 s without jitter, gives up for good after `max_retries` (its listener task then dies), runs
  inside whichever task noticed the drop, and never checks that heartbeats are answered. So the
  sockets run with `auto_reconnect=False` and each has a supervisor task here: reconnect with
  capped exponential backoff and jitter, forever; a WebSocket ping every `ping_interval_s`, the
  connection aborted when no pong comes back within `ping_timeout_s` (a stalled link is
  otherwise noticed only by websockets' own 20 s + 20 s keepalive). realtime-py's `connect()`
  then re-sends the join of every channel it had marked errored; each confirmed rejoin reaches
  the subscriptions as `Reconnected`, and the core does a catch-up read.
- A leave is sent at once when the last subscription of a topic exits; the slot stays counted
  until the server's reply. The same topic is not joined again on that socket until a grace
  period after the reply (the server's `phx_close` for the old join follows its reply, and
  realtime-py would hand it to a new channel of that topic: V1 frames carry no join_ref).

- Paces its joins under the project's join rate (`joins_per_second`, set by
  HITL_REALTIME_JOINS_PER_SECOND): every join realtime-py sends (the first one, its rejoin
  timer, the rejoins after a reconnect) waits for the pacer. Supabase counts channel joins per
  project (Free: 100 a second, Pro: 500; supabase/supabase `guides/realtime/limits.mdx`);
  over the limit it refuses the join with `ClientJoinRateLimitReached` and drops the whole
  socket (supabase/realtime `realtime_channel.ex` join/3). realtime-py then waits 30 s before
  that channel's next join (`RATE_LIMITED_REJOIN_DELAY_SECONDS`); the pool instead pauses every
  join for `rate_limited_rejoin_s` and has the channel rejoin after that pause.

Verified against the devstack (tests/integration): after the server closes a socket (1001),
realtime-py marks every joined or joining channel errored (CHANNEL_ERROR with the close
exception) and, on the next successful `connect()`, re-sends their joins; the subscribe callback
then gets SUBSCRIBED again. Removing the last channel with `client.remove_channel()` closes the
whole client, so channels are left with `channel.unsubscribe()` instead.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast
from uuid import UUID

import websockets
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from loguru import logger
from pydantic import TypeAdapter
from realtime import (
    AsyncRealtimeChannel,
    BroadcastPayload,
    RealtimeChannelOptions,
    RealtimeSubscribeStates,
)

from hitl_relay.adapters import hop_stamps, realtime_internals
from hitl_relay.adapters.realtime_stamps import StampedRealtimeClient
from hitl_relay.adapters.signed_events import EventKey
from hitl_relay.adapters.supabase_store import (
    OptionIndex,
    Reply,
    ShapeError,
    Time,
    parse_uuid,
    validate,
)
from hitl_relay.errors import PlatformUnavailable
from hitl_relay.ports import (
    ChannelEvent,
    HumanMessage,
    MessageKind,
    Reconnected,
    SenderType,
    SessionEvent,
    SessionStatus,
    WakeUp,
)

# What websockets / realtime-py raise when a connection attempt fails (refused, handshake
# refused with a status such as 401 or 429, TLS, DNS, our own timeout).
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    websockets.exceptions.WebSocketException,
)

# Join refusals that retrying cannot cure (realtime_channel.ex reason codes, and the texts of
# a `system` error that precedes the server closing a channel).
PERMANENT_REFUSALS = (
    "Unauthorized",
    "InvalidJWTToken",
    "MalformedJWT",
    "JwtSignatureError",
    "PrivateOnly",
    "TopicNameRequired",
    "You no longer have permission",
    "Token has expired",
)

# Join refusals for a project-wide rate (realtime_channel.ex join/3); realtime-py waits 30 s after
# them (channel.py RATE_LIMIT_ERROR_CODES), the pool only `rate_limited_rejoin_s`.
RATE_LIMIT_REFUSALS = (
    "ClientJoinRateLimitReached",
    "ConnectionRateLimitReached",
    "DatabaseConnectionRateLimitReached",
)


@dataclass(frozen=True)
class RealtimeTuning:
    """How the socket pool behaves; the defaults suit production (voice calls of 30-60 s)."""

    channels_per_socket: int = 100
    # From asking to join until the server confirmed (includes waiting for the socket).
    join_timeout_s: float = 5.0
    connect_timeout_s: float = 5.0
    # Reconnect backoff: doubling from the first to the cap, each delay jittered over its
    # upper half, so replicas that lost the platform together do not return in lockstep.
    reconnect_initial_s: float = 0.1
    reconnect_max_s: float = 2.0
    ping_interval_s: float = 5.0
    ping_timeout_s: float = 5.0
    idle_close_s: float = 30.0
    # After the server confirmed a leave, its phx_close for that join may still be in flight.
    rejoin_grace_s: float = 1.0
    # A connection must stay up this long before a drop counts as a fresh start: a socket the
    # server keeps closing right after its rejoins (rate limits) backs off instead of looping.
    stable_after_s: float = 10.0
    # A socket that has been failing to connect for this long fails new joins at once (a call
    # must not wait out the join timeout while the platform is down); shorter blips are waited
    # out.
    fail_joins_after_down_s: float = 1.0
    # Joins sent per second at most, all sockets together (the project's limit is shared with
    # every other client: the operators' app, other relay replicas). Half of Free's 100.
    joins_per_second: float = 50.0
    # After a join refused for the project's rate: no join for about this long (jittered over
    # its upper half), then the refused channel rejoins. Realtime re-evaluates its rate every
    # 5 s (Tenants.joins_per_second_rate tick).
    rate_limited_rejoin_s: float = 5.0

    def reconnect_delay(self, attempt: int) -> float:
        """The pause before reconnect attempt `attempt` (1, 2, ...) after a failed one."""
        ceiling = min(self.reconnect_max_s, self.reconnect_initial_s * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0.0, ceiling / 2)


class Listener(Protocol):
    """What a channel tells the subscriptions attached to it (called on the event loop)."""

    def on_event(self, event: ChannelEvent) -> None: ...

    def on_interrupted(self) -> None: ...

    def on_lost(self, reason: str) -> None: ...

    def on_presence_sync(self) -> None: ...


ChannelKind = Literal["case", "presence"]


def _options(kind: ChannelKind) -> RealtimeChannelOptions:
    # The service role reads every private topic (RLS bypassed); presence is enabled on
    # `operators` to receive presence_state / presence_diff, never to track the relay itself.
    return {
        "config": {
            "broadcast": {"ack": False, "self": False},
            "presence": {"key": "", "enabled": kind == "presence"},
            "private": True,
        }
    }


def refusal_reason(error: Exception | None) -> str | None:
    """The server's reason when `error` is a refused join or a channel `system` error.

    realtime-py reports those as `Exception(json.dumps(payload))`; a transport problem comes
    as the websockets exception instead (and is never a refusal).
    """
    if error is None or type(error) is not Exception:
        return None
    try:
        payload = json.loads(str(error))
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    reason = payload.get("reason", payload.get("message"))
    return reason if isinstance(reason, str) else None


class MessageBroadcast(Reply):
    """A `message` broadcast (the messages trigger's `realtime.send` payload)."""

    id: UUID
    case_id: UUID
    sender_type: SenderType
    sender_id: str | None = None
    content: str | None = None
    kind: MessageKind = "answer"
    created_at: Time
    option_index: OptionIndex | None = None
    option: str | None = None


class SessionBroadcast(Reply):
    """A `session` broadcast (a session's status changed)."""

    session_id: UUID
    case_id: UUID
    status: SessionStatus
    expires_at: Time | None = None


_MESSAGE = TypeAdapter(MessageBroadcast)
_SESSION = TypeAdapter(SessionBroadcast)


def parse_message(payload: Mapping[str, Any]) -> HumanMessage:
    m = validate(_MESSAGE, payload)
    # `is_answer` is the platform's verdict: only a JSON true makes the message the answer.
    return HumanMessage(
        message_id=m.id,
        case_id=m.case_id,
        sender_type=m.sender_type,
        sender_id=m.sender_id,
        content=m.content or "",
        kind=m.kind,
        created_at=m.created_at,
        is_answer=payload.get("is_answer") is True,
        option_index=m.option_index,
        option=m.option if m.option_index is not None else None,
    )


def parse_session(payload: Mapping[str, Any]) -> SessionEvent:
    s = validate(_SESSION, payload)
    return SessionEvent(
        session_id=s.session_id, case_id=s.case_id, status=s.status, expires_at=s.expires_at
    )


class _Changed:
    """An edge-triggered 'something changed' for waiters (each change wakes every waiter)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def wait(self) -> Coroutine[Any, Any, Literal[True]]:
        """Wait for the next change after this call (bound now, so none is missed)."""
        return self._event.wait()


class JoinPacer:
    """At most `per_second` joins a second (a moving window, `limits`), and a pause for every
    join after the project refused one for its rate."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        if per_second >= 1:
            self.item: RateLimitItem = RateLimitItemPerSecond(int(per_second))
        else:  # fewer than one a second: one per ceil(1 / rate) seconds
            self.item = RateLimitItemPerSecond(1, math.ceil(1 / per_second))
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._clock = clock
        self.paused_until = 0.0
        self.waited = 0  # joins that had to wait (metrics for tests and benchmarks)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self._clock() + seconds)

    async def acquire(self) -> None:
        waited = False
        while True:
            pause = self.paused_until - self._clock()
            if pause <= 0 and self._limiter.hit(self.item, "joins"):
                break
            if pause <= 0:
                stats = self._limiter.get_window_stats(self.item, "joins")
                pause = max(0.001, stats.reset_time - time.time())
            waited = True
            await asyncio.sleep(min(pause, 1.0))  # pacing: the wait is the point
        if waited:
            self.waited += 1


def pace_joins(rt: AsyncRealtimeChannel, pool: SocketPool) -> None:
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
        self, pool: SocketPool, sock: RealtimeSocket, topic: str, kind: ChannelKind
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
        self.changed = _Changed()

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
                rt = self.sock.client.channel(self.topic, _options(self.kind))
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
        reply, or realtime-py's push timeout, reports CLOSED.
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
            self.pool.spawn(self._send_leave(self.rt), f"leave {self.topic}")
        self.pool.update_gauges()

    async def _send_leave(self, rt: AsyncRealtimeChannel) -> None:
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


class RealtimeSocket:
    """One realtime-py client and the supervisor task that keeps it connected."""

    def __init__(self, pool: SocketPool, number: int) -> None:
        self.pool = pool
        self.number = number
        tuning = pool.tuning
        self.client = StampedRealtimeClient(
            pool.realtime_url,
            token=pool.key,
            auto_reconnect=False,  # the supervisor reconnects (see the module docstring)
            # realtime-py's own push timeout (joins, leaves), in whole seconds.
            timeout=max(1, math.ceil(tuning.join_timeout_s)),
        )
        self.channels: dict[str, RealtimeChannel] = {}
        self.leaving: dict[str, RealtimeChannel] = {}
        self.quarantine: dict[str, float] = {}
        self.connected = asyncio.Event()
        # Since when connecting has been failing (None while connected or still trying the
        # first time), and why.
        self.down_since: float | None = None
        self.last_error = ""
        self.created_at = time.monotonic()
        self.connects = 0
        self.closing = False
        self.idle_since: float | None = time.monotonic()
        self._poke = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def down_for(self) -> float:
        return 0.0 if self.down_since is None else time.monotonic() - self.down_since

    @property
    def load(self) -> int:
        """Channels the server counts on this socket (joined, joining, or leave not confirmed)."""
        return len(self.channels) + len(self.leaving)

    def accepts(self, topic: str, now: float) -> bool:
        if self.closing or self.load >= self.pool.tuning.channels_per_socket:
            return False
        if topic in self.leaving:
            return False
        until = self.quarantine.get(topic)
        if until is not None and until <= now:
            del self.quarantine[topic]
            until = None
        return until is None

    def add(self, channel: RealtimeChannel) -> None:
        self.channels[channel.topic] = channel
        self.idle_since = None

    def forget(self, channel: RealtimeChannel) -> None:
        if self.channels.get(channel.topic) is channel:
            del self.channels[channel.topic]
        self._check_idle()

    def left(self, channel: RealtimeChannel) -> None:
        """The server confirmed the leave (or realtime-py gave up waiting for it)."""
        if self.leaving.get(channel.topic) is channel:
            del self.leaving[channel.topic]
            now = time.monotonic()
            if len(self.quarantine) >= 64:  # drop the expired ones (most topics never return)
                self.quarantine = {t: u for t, u in self.quarantine.items() if u > now}
            self.quarantine[channel.topic] = now + self.pool.tuning.rejoin_grace_s
        self._check_idle()
        self.pool.update_gauges()

    def _check_idle(self) -> None:
        if self.load == 0 and self.idle_since is None:
            self.idle_since = time.monotonic()
            self.poke()

    def poke(self) -> None:
        """Wake the supervisor: the connection or the channels changed."""
        self._poke.set()

    # ---- supervisor ------------------------------------------------------------------------

    async def run(self) -> None:
        tuning = self.pool.tuning
        failures = 0  # drives the backoff; reset only by a connection that stayed up
        failed_attempts = 0  # in this outage, for the logs
        up_since = 0.0
        log = logger.bind(socket=self.number)
        while not self.closing:
            if self._idle_expired():
                break
            if not self.client.is_connected:
                if self.connected.is_set():
                    self.connected.clear()
                    self.down_since = time.monotonic()
                    self.pool.update_gauges()
                    log.warning("realtime socket disconnected; reconnecting")
                    if self.down_since - up_since < tuning.stable_after_s:
                        # Dropped soon after connecting: back off as after a failed attempt.
                        failures += 1
                        await asyncio.sleep(tuning.reconnect_delay(failures))  # backoff
                    else:
                        failures = 0
                try:
                    async with asyncio.timeout(tuning.connect_timeout_s):
                        await self.client.connect()
                except CONNECT_ERRORS as e:
                    failures += 1
                    failed_attempts += 1
                    self.last_error = f"{type(e).__name__}: {e}"
                    if self.down_since is None:
                        self.down_since = (
                            self.created_at if self.connects == 0 else time.monotonic()
                        )
                    self.pool.update_gauges()  # wakes joins waiting for this socket
                    delay = tuning.reconnect_delay(failures)
                    (log.warning if failed_attempts == 1 else log.debug)(
                        "realtime connect failed ({}: {}); attempt {} again in {:.2f} s",
                        type(e).__name__,
                        e,
                        failed_attempts + 1,
                        delay,
                    )
                    await asyncio.sleep(delay)  # backoff between reconnect attempts
                    continue
                if not self.client.is_connected:  # closed while connecting
                    continue
                self.connects += 1
                if self.connects > 1:
                    log.info(
                        "realtime socket reconnected after {} failed attempts", failed_attempts
                    )
                    self.pool.reconnects += 1
                failed_attempts = 0
                up_since = time.monotonic()
                self.down_since = None
                self.connected.set()
                self.pool.update_gauges()
                continue
            if self._listener_died():
                break
            await self._watch()
        await self.close()
        self.pool.closed(self)

    def _idle_expired(self) -> bool:
        """Carried nothing for idle_close_s (connected or not): retire it."""
        if self.idle_since is None or not self.pool.may_close(self):
            return False
        if time.monotonic() - self.idle_since < self.pool.tuning.idle_close_s:
            return False
        return self.pool.retire(self)

    def _listener_died(self) -> bool:
        """realtime-py's listener task ended while the socket still counts as connected (an
        exception escaped it): nothing will be received or rejoined on this socket again, so
        its channels are lost (the core falls back to reading) and the socket is replaced."""
        task = realtime_internals.listener_task(self.client)
        if not self.client.is_connected or task is None or not task.done():
            return False
        error = None if task.cancelled() else task.exception()
        logger.bind(socket=self.number).error("realtime-py's listener stopped: {!r}", error)
        self.closing = True
        if self in self.pool.sockets:
            self.pool.sockets.remove(self)
        for channel in list(self.channels.values()):
            channel.lose(f"realtime-py's listener stopped: {error!r}")
        self.pool.update_gauges()
        return True

    async def _watch(self) -> None:
        """Wait for a poke, the next ping or the idle deadline (the loop then re-checks)."""
        tuning = self.pool.tuning
        self._poke.clear()
        if not self.client.is_connected:
            return
        timeout = tuning.ping_interval_s
        idle = self.idle_since is not None and self.pool.may_close(self)
        if self.idle_since is not None and idle:
            timeout = max(
                0.0, min(timeout, self.idle_since + tuning.idle_close_s - time.monotonic())
            )
        try:
            async with asyncio.timeout(timeout):
                await self._poke.wait()
            return
        except TimeoutError:
            pass
        if not idle:
            await self._ping()

    async def _ping(self) -> None:
        ws = realtime_internals.websocket(self.client)
        if ws is None:
            return
        try:
            pong = asyncio.ensure_future(await ws.ping())  # a Future already
            async with asyncio.timeout(self.pool.tuning.ping_timeout_s):
                await asyncio.shield(pong)  # a timeout must not cancel the pong waiter itself
        except TimeoutError:
            # A busy event loop runs the timeout before it reads a pong already received: give
            # the loop a few turns to read it, so local lag is not taken for a dead link.
            for _ in range(3):
                await asyncio.sleep(0)
            if pong.done() and not pong.cancelled():
                return
            logger.bind(socket=self.number).warning(
                "realtime socket: no pong within {:g} s; dropping the connection",
                self.pool.tuning.ping_timeout_s,
            )
            # realtime-py's listener sees the connection end and marks every channel errored.
            ws.transport.abort()
        except websockets.exceptions.ConnectionClosed:
            pass  # the listener has seen it too

    async def close(self) -> None:
        self.closing = True
        self.connected.clear()
        self.poke()
        for rt in list(self.client.channels.values()):
            # realtime-py's timers would otherwise outlive the socket by up to a push timeout.
            realtime_internals.stop_timers(rt)
        ws = realtime_internals.websocket(self.client)
        try:
            async with asyncio.timeout(self.pool.tuning.ping_timeout_s):
                await self.client.close()
        except TimeoutError:
            if ws is not None:  # no closing handshake from a stalled peer: just drop it
                ws.transport.abort()


class SocketPool:
    """The relay's Realtime sockets (see the module docstring)."""

    def __init__(self, realtime_url: str, key: str, tuning: RealtimeTuning) -> None:
        self.realtime_url = realtime_url
        self.key = key
        self.tuning = tuning
        # The database's key for event signatures (read after start; until then, wake-ups only).
        self.event_key = EventKey()
        self.sockets: list[RealtimeSocket] = []
        # Every socket not yet closed, including idle ones on their way out.
        self._open: set[RealtimeSocket] = set()
        self.reconnects = 0
        self.rate_limited = 0  # joins the platform refused for the project's rate
        self.pacer = JoinPacer(tuning.joins_per_second)
        self._numbers = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        # Notified on every change of sockets or channel states (readiness, tests).
        self.changed = _Changed()

    # ---- bookkeeping ---------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """A task owned by the pool (cancelled by `aclose`); none once the pool is closed."""
        if self._closed:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro, name=f"hitl-realtime: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error(
                "realtime pool task {} failed", task.get_name()
            )

    def update_gauges(self) -> None:
        self.changed.notify()

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Until `predicate()` holds, re-checked after every change; TimeoutError if not."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await self.changed.wait()

    def joined_channels(self) -> int:
        return sum(1 for s in self.sockets for c in s.channels.values() if c.state in ("joined",))

    def channel_count(self, kind: ChannelKind | None = None) -> int:
        """Live channels (joining, joined or rejoining), optionally of one kind."""
        return sum(
            1 for s in self.sockets for c in s.channels.values() if kind is None or c.kind == kind
        )

    @property
    def closing(self) -> bool:
        return self._closed

    def may_close(self, sock: RealtimeSocket) -> bool:
        return not self._closed and sock.load == 0

    def retire(self, sock: RealtimeSocket) -> bool:
        """An idle socket closes (its supervisor asks, then closes it and ends)."""
        if sock.load != 0 or sock.closing:
            return False
        sock.closing = True
        if sock in self.sockets:
            self.sockets.remove(sock)
        logger.bind(socket=sock.number).debug("realtime socket idle; closing")
        self.update_gauges()
        return True

    def closed(self, sock: RealtimeSocket) -> None:
        self._open.discard(sock)
        self.update_gauges()

    @property
    def open_sockets(self) -> int:
        """Sockets not yet closed (those taking channels and idle ones on their way out)."""
        return len(self._open)

    def _open_socket(self) -> RealtimeSocket:
        self._numbers += 1
        sock = RealtimeSocket(self, self._numbers)
        self.sockets.append(sock)
        self._open.add(sock)
        sock.task = self.spawn(sock.run(), f"socket {sock.number}")
        self.update_gauges()
        return sock

    # ---- attach / detach ------------------------------------------------------------------

    def _channel_for(self, topic: str, kind: ChannelKind) -> RealtimeChannel:
        for sock in self.sockets:
            existing = sock.channels.get(topic)
            if existing is not None and existing.state in ("joining", "joined", "interrupted"):
                return existing
        now = time.monotonic()
        room = next((s for s in self.sockets if s.accepts(topic, now)), None)
        target = room if room is not None else self._open_socket()
        channel = RealtimeChannel(self, target, topic, kind)
        target.add(channel)
        channel.join_task = self.spawn(channel.join(), f"join {topic}")
        self.update_gauges()
        return channel

    async def attach(self, topic: str, kind: ChannelKind, listener: Listener) -> RealtimeChannel:
        """Attach `listener` to `topic`, joining it if needed; returns once the join is
        confirmed. Raises PlatformUnavailable if it is refused, lost or not confirmed in time."""
        if self._closed:
            raise PlatformUnavailable("the realtime pool is closed")
        channel = self._channel_for(topic, kind)
        channel.listeners.add(listener)
        try:
            # The join task gives up at join_timeout_s; the margin only covers scheduling.
            await channel.wait_joined(self.tuning.join_timeout_s + 1.0)
        except BaseException:
            self.detach(channel, listener)
            raise
        return channel

    def detach(self, channel: RealtimeChannel, listener: Listener) -> None:
        """Detach `listener`; the last one out leaves the channel (synchronous: see leave)."""
        channel.listeners.discard(listener)
        if not channel.listeners:
            channel.leave()

    async def aclose(self) -> None:
        """Close every socket and end every pool task; attached listeners are told (lost)."""
        self._closed = True
        self.sockets = []
        sockets = list(self._open)
        for sock in sockets:
            sock.closing = True
            for channel in list(sock.channels.values()):
                channel.lose("the realtime pool is closing", server_closed=True)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        for sock in sockets:
            await sock.close()
        self._open.clear()
        self.update_gauges()


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
        self.changed = _Changed()

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
        self._cached = (now, value)
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
