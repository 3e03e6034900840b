"""Database broadcasts: rows `realtime.send` writes, fanned out to the topic's subscribers.

Realtime reads them from logical replication (`lib/realtime/tenants/replication_connection.ex`);
here they arrive by NOTIFY `hitl_realtime` after commit, in commit order, and a row too large for
a notification is read back from `realtime.messages` before anything after it is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any, Protocol

import asyncpg

from hitl_devstack.hops import HopStart
from hitl_devstack.realtime.authorization import CONNECTION_ERRORS, DB_ERRORS
from hitl_devstack.realtime.channel import Channel, TopicKey
from hitl_devstack.realtime.limits import RateCounter, RealtimeLimits
from hitl_devstack.realtime.outgoing import Outgoing
from hitl_devstack.realtime.serializer import UserBroadcast, dumps

log = logging.getLogger("hitl_devstack.realtime")

NOTIFY_CHANNEL = "hitl_realtime"


class BroadcastsHost(Protocol):
    """What database broadcasts need of the Realtime service (its `BroadcastHandler` is one)."""

    ctx: Any  # the DevstackContext: its pool and db_url
    limits: RealtimeLimits
    events: RateCounter

    def fan_out(
        self,
        key: TopicKey,
        out: Outgoing,
        *,
        sender: Channel | None = None,
        message_id: str | None = None,
        since: HopStart | None = None,
    ) -> int: ...


class DatabaseBroadcasts:
    """The LISTEN connection, kept across database restarts, and the commit-order backlog."""

    def __init__(self, host: BroadcastsHost) -> None:
        self.host = host
        self._stopping = False
        self._listen_conn: asyncpg.Connection | None = None
        self._listen_lost = asyncio.Event()
        self._listen_task: asyncio.Task[None] | None = None
        self._backlog: deque[dict[str, Any]] = deque()
        self._drain: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._listen_task is not None and not self._listen_task.done()

    async def start(self) -> None:
        """LISTEN (raises if the database is unreachable), then keep listening."""
        self._stopping = False
        await self._listen()
        self._listen_task = asyncio.create_task(self._keep_listening(), name="realtime-listen")

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._listen_task, self._drain):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._listen_task = self._drain = None
        self._backlog.clear()
        if self._listen_conn is not None:
            conn, self._listen_conn = self._listen_conn, None
            with contextlib.suppress(*CONNECTION_ERRORS, asyncpg.PostgresError):
                await conn.close(timeout=2)

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self.host.ctx.db_url)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        self._listen_conn, self._listen_lost = conn, lost

    async def _keep_listening(self) -> None:
        """Re-LISTEN after the connection drops (database restart); rows committed while it
        was down are not delivered (the relay's catch-up read covers them)."""
        while not self._stopping:
            await self._listen_lost.wait()
            if self._stopping:
                return
            log.warning("realtime: lost the %s LISTEN connection; reconnecting", NOTIFY_CHANNEL)
            delay = 0.05
            while not self._stopping:
                try:
                    await self._listen()
                    log.warning("realtime: listening on %s again", NOTIFY_CHANNEL)
                    break
                except DB_ERRORS as e:
                    log.warning("realtime: LISTEN reconnect failed (%s); retrying", e)
                    await asyncio.sleep(delay)  # reconnect backoff, not test synchronisation
                    delay = min(delay * 2, 2.0)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, raw: object) -> None:
        arrived = time.perf_counter()
        try:
            msg = json.loads(str(raw))
        except ValueError:
            log.warning("realtime: unreadable %s notification: %.200r", NOTIFY_CHANNEL, raw)
            return
        if not isinstance(msg, dict):
            log.warning("realtime: %s notification is not an object: %.200r", NOTIFY_CHANNEL, raw)
            return
        at = msg.get("at")
        if isinstance(at, int | float):
            # the row's insert (inside its transaction), on this clock: the hop includes the
            # commit and the wait for this loop to read the notification
            arrived -= max(0.0, time.time() - at)
        msg["_arrived"] = arrived
        if self._backlog or msg.get("too_large"):
            # a row must be read first: later notifications wait behind it (commit order)
            self._backlog.append(msg)
            if self._drain is None or self._drain.done():
                self._drain = asyncio.create_task(self._drain_backlog())
            return
        self._deliver(msg)

    async def _drain_backlog(self) -> None:
        while self._backlog:
            msg = self._backlog[0]
            if msg.get("too_large"):
                msg["payload"] = await self._read_payload(msg.get("id"))
            self._backlog.popleft()
            self._deliver(msg)

    async def _read_payload(self, row_id: Any) -> Any:
        try:
            async with self.host.ctx.pool.acquire() as conn:
                raw = await conn.fetchval(
                    "select payload::text from realtime.messages where id = $1::uuid",
                    str(row_id),
                )
        except DB_ERRORS as e:
            log.warning("realtime: could not read realtime.messages row %s: %s", row_id, e)
            return None
        return None if raw is None else json.loads(raw)

    def _deliver(self, msg: dict[str, Any]) -> None:
        """replication_connection.ex handle_message(Insert): a UserBroadcast with metadata id."""
        topic, event, row_id = msg.get("topic"), msg.get("event"), msg.get("id")
        payload = msg.get("payload")
        if not isinstance(topic, str) or not isinstance(event, str) or payload is None:
            return
        body = dumps(payload).encode()
        if len(body) > self.host.limits.max_payload_bytes:
            log.warning("realtime: UnableToBroadcastChanges: :payload_size_exceeded (%s)", row_id)
            return
        if self.host.events.triggered:
            log.warning("realtime: UnableToBroadcastChanges: :too_many_requests (%s)", row_id)
            return
        self.host.events.add()
        private = bool(msg.get("private"))
        name = "realtime:" + topic
        user = UserBroadcast(name, event, body, True, {"id": row_id})
        arrived = msg.get("_arrived")
        self.host.fan_out(
            (topic, private),
            Outgoing(name, user=user),
            message_id=str(row_id),
            since=HopStart(arrived, event == "message") if isinstance(arrived, float) else None,
        )
