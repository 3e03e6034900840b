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
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

import websockets
from loguru import logger

from hitl_relay.adapters import realtime_internals
from hitl_relay.adapters.realtime_channel import RealtimeChannel
from hitl_relay.adapters.realtime_pacing import JoinPacer
from hitl_relay.adapters.realtime_tuning import (
    CONNECT_ERRORS,
    Changed,
    ChannelKind,
    Listener,
    RealtimeTuning,
)
from hitl_relay.adapters.signed_events import EventKey
from hitl_relay.errors import PlatformUnavailable


class RealtimeSocket:
    """One realtime-py client and the supervisor task that keeps it connected."""

    def __init__(self, pool: SocketPool, number: int) -> None:
        self.pool = pool
        self.number = number
        tuning = pool.tuning
        self.client = realtime_internals.StampedRealtimeClient(
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
        self.changed = Changed()

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
