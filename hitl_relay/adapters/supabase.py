"""The production adapter: the relay's ports over supabase-py's `AsyncClient` and realtime-py.

- `SupabaseCaseStore`: the RPCs (`hitl_open_case`, `hitl_answer`, `hitl_close_session`) through
  PostgREST as the service role. PostgREST's P0001 errors become `InvalidRequest(field, rule)`;
  transport and server errors become `PlatformUnavailable`.
- `SupabaseCaseChannel`: private `case:<id>` channels on a pool of Realtime sockets, never more
  than `channels_per_socket` channels on one socket (Supabase refuses the 101st). realtime-py
  reconnects a dropped socket and rejoins its channels; each confirmed rejoin reaches the core as
  `Reconnected`, so it does a catch-up read for whatever was broadcast while not joined.
- `SupabasePresence`: one long-lived join of the private `operators` channel, counting the
  operators present (cached ≤ the configured TTL); unknown (None) while not joined.

Nothing here knows about the devstack: pointed at a real project, it works the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

import httpx
from postgrest.exceptions import APIError
from realtime import (
    AsyncRealtimeChannel,
    AsyncRealtimeClient,
    RealtimeChannelOptions,
    RealtimeSubscribeStates,
)
from supabase import AsyncClient, acreate_client

from hitl_relay import metrics
from hitl_relay.errors import InvalidRequest, NotFound, PlatformUnavailable
from hitl_relay.ports import (
    Answer,
    Backend,
    ChannelEvent,
    HumanMessage,
    OpenCase,
    OpenedCase,
    Reconnected,
    SessionEvent,
    SessionOutcome,
)

if TYPE_CHECKING:
    from hitl_relay.config import Settings

log = logging.getLogger("hitl_relay.adapters.supabase")

_TRANSPORT_ERRORS = (httpx.HTTPError, OSError, asyncio.TimeoutError)


def _platform_error(what: str, e: BaseException) -> PlatformUnavailable:
    return PlatformUnavailable(f"{what}: {e.__class__.__name__}: {e}")


def _api_error(what: str, e: APIError) -> Exception:
    """P0001 from our SQL functions is bad input (DETAIL = field, HINT = rule)."""
    if e.code == "P0001":
        message = e.message or ""
        field_name = e.details if isinstance(e.details, str) and e.details else "request"
        rule = e.hint if isinstance(e.hint, str) and e.hint else message
        if field_name == "p_session_id" and "no such session" in rule:
            return NotFound(f"session ({message})")
        return InvalidRequest(field_name, rule)
    return PlatformUnavailable(f"{what}: {e.code} {e.message}")


def _parse_time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class SupabaseCaseStore:
    """CaseStore over PostgREST RPC, as the service role."""

    def __init__(self, client: AsyncClient, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s

    async def _rpc(self, fn: str, params: Mapping[str, Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.rpc(fn, dict(params)).execute()
        except APIError as e:
            raise _api_error(fn, e) from None
        except _TRANSPORT_ERRORS as e:
            raise _platform_error(fn, e) from None
        return response.data

    async def open_case(self, request: OpenCase) -> OpenedCase:
        data = await self._rpc("hitl_open_case", {"p": request.as_rpc_params()})
        return _opened(data, "hitl_open_case")

    async def answer(self, case_id: UUID) -> Answer | None:
        data = await self._rpc("hitl_answer", {"p_case_id": str(case_id)})
        if not data or not isinstance(data, dict):
            return None
        return Answer(
            message_id=UUID(str(data["message_id"])),
            case_id=UUID(str(data["case_id"])),
            content=str(data.get("content") or ""),
            kind=data.get("kind", "answer"),
            sender_id=_opt(data.get("sender_id")),
            created_at=_parse_time(data["created_at"]),
        )

    async def close_session(
        self, session_id: UUID, status: SessionOutcome, detail: Mapping[str, Any] | None = None
    ) -> bool:
        data = await self._rpc(
            "hitl_close_session",
            {"p_session_id": str(session_id), "p_status": status, "p_detail": dict(detail or {})},
        )
        if not isinstance(data, dict):
            raise PlatformUnavailable(f"hitl_close_session returned {data!r}")
        return bool(data.get("changed"))


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _opened(data: Any, fn: str) -> OpenedCase:
    if not isinstance(data, dict):
        raise PlatformUnavailable(f"{fn} returned {data!r}")
    try:
        return OpenedCase(
            case_id=UUID(str(data["case_id"])),
            session_id=UUID(str(data["session_id"])),
            expires_at=_parse_time(data["expires_at"]),
            existed=bool(data["existed"]),
            status=data["status"],
        )
    except (KeyError, ValueError) as e:
        raise PlatformUnavailable(f"{fn} returned an unexpected shape: {data!r}") from e


class _Lost:
    """Put on a subscription's queue when the channel is gone for good."""


@dataclass(eq=False)
class SupabaseSubscription:
    """A confirmed-joined `case:<id>` channel; events queue until read."""

    _case_id: UUID
    _queue: asyncio.Queue[ChannelEvent | _Lost] = field(default_factory=asyncio.Queue)
    _lost: bool = False

    @property
    def case_id(self) -> UUID:
        return self._case_id

    def deliver(self, event: ChannelEvent | _Lost) -> None:
        self._queue.put_nowait(event)

    async def receive(self) -> ChannelEvent:
        if self._lost:
            raise PlatformUnavailable(f"subscription to case:{self._case_id} is lost")
        item = await self._queue.get()
        if isinstance(item, _Lost):
            self._lost = True
            raise PlatformUnavailable(f"subscription to case:{self._case_id} is lost")
        return item

    def __aiter__(self) -> SupabaseSubscription:
        return self

    async def __anext__(self) -> ChannelEvent:
        return await self.receive()

    # ---- broadcast callbacks (realtime-py calls them on the event loop) ---------------
    def on_message(self, message: Mapping[str, Any]) -> None:
        p = message.get("payload")
        if not isinstance(p, Mapping):
            return
        try:
            event = HumanMessage(
                message_id=UUID(str(p["id"])),
                case_id=UUID(str(p["case_id"])),
                sender_type=p["sender_type"],
                sender_id=_opt(p.get("sender_id")),
                content=str(p.get("content") or ""),
                kind=p.get("kind", "answer"),
                created_at=_parse_time(p["created_at"]),
                is_answer=bool(p.get("is_answer")),
            )
        except (KeyError, ValueError) as e:
            log.warning("case:%s: unreadable message broadcast (%s): %r", self._case_id, e, p)
            return
        if event.case_id == self._case_id:
            self.deliver(event)

    def on_session(self, message: Mapping[str, Any]) -> None:
        p = message.get("payload")
        if not isinstance(p, Mapping):
            return
        try:
            event = SessionEvent(
                session_id=UUID(str(p["session_id"])),
                case_id=UUID(str(p["case_id"])),
                status=p["status"],
                expires_at=_parse_time(p["expires_at"]) if p.get("expires_at") else None,
            )
        except (KeyError, ValueError) as e:
            log.warning("case:%s: unreadable session broadcast (%s): %r", self._case_id, e, p)
            return
        if event.case_id == self._case_id:
            self.deliver(event)


@dataclass(eq=False)
class _Socket:
    client: AsyncRealtimeClient
    channels: int = 0


def _private_options(presence_key: str = "", presence: bool = False) -> RealtimeChannelOptions:
    return {
        "config": {
            "broadcast": {"ack": False, "self": False},
            "presence": {"key": presence_key, "enabled": presence},
            "private": True,
        }
    }


class SocketPool:
    """Realtime sockets, each carrying at most `per_socket` channels."""

    def __init__(
        self, realtime_url: str, key: str, per_socket: int, connect_timeout_s: float
    ) -> None:
        self._url = realtime_url
        self._key = key
        self._per_socket = per_socket
        self._connect_timeout_s = connect_timeout_s
        self._sockets: list[_Socket] = []
        self._lock = asyncio.Lock()

    def _gauges(self) -> None:
        metrics.realtime_sockets.set(len(self._sockets))
        metrics.realtime_channels.set(sum(s.channels for s in self._sockets))

    async def acquire(self) -> _Socket:
        async with self._lock:
            for sock in self._sockets:
                if sock.channels < self._per_socket:
                    sock.channels += 1
                    self._gauges()
                    return sock
            # realtime-py reconnects with doubling backoff (capped at 60 s) and rejoins channels
            client = AsyncRealtimeClient(
                self._url,
                token=self._key,
                auto_reconnect=True,
                max_retries=1_000_000,
                initial_backoff=0.2,
            )
            try:
                # realtime-py retries a refused connect by itself; bound the first one
                async with asyncio.timeout(self._connect_timeout_s):
                    await client.connect()
            except Exception as e:  # realtime-py raises bare Exception
                with contextlib.suppress(Exception):  # half-open client: discard it
                    await client.close()
                raise _platform_error("realtime connect", e) from None
            await client.set_auth(self._key)
            sock = _Socket(client, channels=1)
            self._sockets.append(sock)
            self._gauges()
            return sock

    async def release(self, sock: _Socket) -> None:
        async with self._lock:
            sock.channels -= 1
            idle = sock.channels == 0 and len(self._sockets) > 1
            if idle:
                self._sockets.remove(sock)
            self._gauges()
        if idle:
            with contextlib.suppress(Exception):  # closing an idle socket; nothing to keep
                await sock.client.close()

    @property
    def socket_count(self) -> int:
        return len(self._sockets)

    async def aclose(self) -> None:
        async with self._lock:
            sockets, self._sockets = self._sockets, []
            self._gauges()
        for sock in sockets:
            with contextlib.suppress(Exception):  # shutting down
                await sock.client.close()


class SupabaseCaseChannel:
    """CaseChannel over the socket pool."""

    def __init__(self, pool: SocketPool, join_timeout_s: float) -> None:
        self._pool = pool
        self._join_timeout_s = join_timeout_s

    @asynccontextmanager
    async def subscribe(self, case_id: UUID) -> AsyncIterator[SupabaseSubscription]:
        sock = await self._pool.acquire()
        sub = SupabaseSubscription(case_id)
        channel: AsyncRealtimeChannel | None = None
        try:
            channel = sock.client.channel(f"case:{case_id}", _private_options())
            channel.on_broadcast("message", sub.on_message)
            channel.on_broadcast("session", sub.on_session)
            joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            interrupted = False

            def on_state(state: RealtimeSubscribeStates, error: Exception | None) -> None:
                nonlocal interrupted
                if not joined.done():
                    if state == RealtimeSubscribeStates.SUBSCRIBED:
                        joined.set_result(None)
                    else:
                        joined.set_exception(
                            PlatformUnavailable(f"join case:{case_id}: {state.value} {error or ''}")
                        )
                    return
                if state == RealtimeSubscribeStates.SUBSCRIBED:
                    if interrupted:
                        interrupted = False
                        sub.deliver(Reconnected(case_id))
                elif state == RealtimeSubscribeStates.CLOSED:
                    sub.deliver(_Lost())
                else:
                    interrupted = True  # CHANNEL_ERROR / TIMED_OUT: realtime-py rejoins

            try:
                async with asyncio.timeout(self._join_timeout_s):
                    await channel.subscribe(on_state)
                    await joined
            except TimeoutError:
                raise PlatformUnavailable(f"join case:{case_id}: no reply in time") from None
            yield sub
        finally:
            if channel is not None:
                with contextlib.suppress(Exception):  # leaving: the socket may be down
                    async with asyncio.timeout(self._join_timeout_s):
                        await sock.client.remove_channel(channel)
            await self._pool.release(sock)


class SupabasePresence:
    """How many operators are on the `operators` channel, from a long-lived presence join."""

    def __init__(self, pool: SocketPool, ttl_s: float) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._channel: AsyncRealtimeChannel | None = None
        self._socket: _Socket | None = None
        self._joined = False
        self._cached: tuple[float, int | None] = (0.0, None)

    async def start(self) -> None:
        self._socket = await self._pool.acquire()
        channel = self._socket.client.channel("operators", _private_options(presence=True))
        # A presence callback makes realtime-py apply presence_state / presence_diff.
        channel.on_presence_sync(lambda: None)

        def on_state(state: RealtimeSubscribeStates, _error: Exception | None) -> None:
            self._joined = state == RealtimeSubscribeStates.SUBSCRIBED

        try:
            async with asyncio.timeout(10):
                await channel.subscribe(on_state)
        except TimeoutError:
            log.warning("presence: the operators channel did not answer; presence unknown")
        self._channel = channel

    async def operators_online(self) -> int | None:
        now = time.monotonic()
        at, value = self._cached
        if now - at <= self._ttl_s:
            return value
        value = None
        if self._channel is not None and self._joined:
            value = len(self._channel.presence.state)
        self._cached = (now, value)
        return value

    async def aclose(self) -> None:
        if self._channel is not None and self._socket is not None:
            with contextlib.suppress(Exception):  # shutting down
                await self._socket.client.remove_channel(self._channel)
            await self._pool.release(self._socket)
        self._channel = None


@asynccontextmanager
async def supabase_backend(settings: Settings) -> AsyncIterator[Backend]:
    """Connect to the platform (`SUPABASE_URL`, service role), yield the ports, disconnect."""
    url = cast(str, settings.supabase_url)
    assert settings.supabase_service_role_key is not None  # checked by load_settings()
    key = settings.supabase_service_role_key.get_secret_value()
    timeout_s = settings.platform_timeout_seconds
    try:
        client = await acreate_client(url, key)
    except _TRANSPORT_ERRORS as e:
        raise _platform_error("supabase client", e) from None
    pool = SocketPool(
        f"{url}/realtime/v1", key, settings.channels_per_socket, connect_timeout_s=timeout_s
    )
    presence = SupabasePresence(pool, settings.presence_cache_ttl_seconds)

    async def keep_presence() -> None:
        # Presence is unknown (never a refusal) until joined; a platform that is down at start
        # must not keep the relay from serving fallbacks.
        delay = 0.5
        while True:
            try:
                await presence.start()
                return
            except PlatformUnavailable as e:
                log.warning("presence on operators not joined yet (%s); retrying", e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    presence_task = asyncio.create_task(keep_presence())
    try:
        yield Backend(
            store=SupabaseCaseStore(client, timeout_s),
            channel=SupabaseCaseChannel(pool, join_timeout_s=max(timeout_s, 10.0)),
            presence=presence,
        )
    finally:
        presence_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await presence_task
        await presence.aclose()
        await pool.aclose()
