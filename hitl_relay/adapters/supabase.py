"""The production adapter: the relay's ports over supabase-py's `AsyncClient` and realtime-py.

- `SupabaseCaseStore` (`supabase_store.py`): `hitl_open_case`, `hitl_case_reply`,
  `hitl_close_session` and the rest through PostgREST as the service role; P0001 →
  `InvalidRequest(field, rule)`, everything else → `PlatformUnavailable`.
- `SupabaseServices` (`supabase_services.py`): the audit trail, shared rate limits and the
  callback outbox on the same client.
- `SupabaseCaseChannel` (`supabase_channel.py`): private `case:<id>` channels on a pool of
  Realtime sockets (never more than `channels_per_socket` per socket), rejoined after any
  reconnect and reported as `Reconnected` so the core does a catch-up read.
- `SupabasePresence` (`supabase_channel.py`): one long-lived join of the private `operators`
  channel, counting the operators present (cached ≤ the configured TTL); unknown while not
  joined.

`SupabasePlatform.readiness()` is the readiness probe (`/readyz`): one bounded RPC to
`hitl_schema_version()` for the database, and what the socket pool and presence know for realtime.

`build_platform(options)` connects all three and returns a `SupabasePlatform` (close it with
`aclose()`); `supabase_backend(options)` is the same as an async context manager yielding the
`Backend`. Nothing here knows about the devstack: pointed at a real project, it works the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import stamina
from loguru import logger
from postgrest.exceptions import APIError
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from hitl_relay.adapters.platform_options import PlatformOptions
from hitl_relay.adapters.realtime_pool import SocketPool
from hitl_relay.adapters.realtime_tuning import RealtimeTuning
from hitl_relay.adapters.signed_events import EventKey
from hitl_relay.adapters.supabase_channel import (
    SupabaseCaseChannel,
    SupabasePresence,
    SupabaseSubscription,
)
from hitl_relay.adapters.supabase_services import SupabaseServices
from hitl_relay.adapters.supabase_store import (
    INSTANCE_HEADER,
    MAX_IN_FLIGHT,
    TRANSPORT_ERRORS,
    SupabaseCaseStore,
)
from hitl_relay.errors import ConfigError
from hitl_relay.ports import Backend, Check, PlatformReadiness

# PostgREST's "function not found" (PGRST202; the devstack answers with Postgres' 42883), and
# "permission denied" (42501): Postgres answered, the schema is what is wrong.
SCHEMA_PROBLEM_CODES = ("PGRST202", "42883", "42501")

__all__ = [
    "PlatformOptions",
    "RealtimeTuning",
    "SupabaseCaseChannel",
    "SupabaseCaseStore",
    "SupabasePlatform",
    "SupabasePresence",
    "SupabaseSubscription",
    "build_platform",
    "supabase_backend",
]


@dataclass
class SupabasePlatform:
    """The three ports over one service-role connection to a Supabase project."""

    client: AsyncClient
    http: httpx.AsyncClient
    pool: SocketPool
    store: SupabaseCaseStore
    channel: SupabaseCaseChannel
    presence: SupabasePresence
    services: SupabaseServices

    def backend(self) -> Backend:
        return Backend.of(self)

    async def readiness(self, timeout_s: float) -> PlatformReadiness:
        """The readiness probe: the database through one RPC, realtime from the pool's state."""
        database, version, schema_error = await self._database_check(timeout_s)
        return PlatformReadiness(
            database=database,
            realtime=self.realtime_check(),
            schema_version=version,
            schema_error=schema_error,
        )

    async def _database_check(self, timeout_s: float) -> tuple[Check, str | None, str | None]:
        """`hitl_schema_version()` as the service role: reached, and the version it returned."""
        started = time.perf_counter()

        def ms() -> float:
            return (time.perf_counter() - started) * 1000

        try:
            async with asyncio.timeout(timeout_s):
                response = await self.client.rpc("hitl_schema_version", {}).execute()
        except APIError as e:
            problem = f"{e.code or '?'} {e.message or ''}".rstrip()
            if e.code in SCHEMA_PROBLEM_CODES:
                return Check(ok=True, latency_ms=ms()), None, problem
            return (
                Check(ok=False, latency_ms=ms(), reason=f"hitl_schema_version: {problem}"),
                None,
                None,
            )
        except TRANSPORT_ERRORS as e:
            detail = str(e) or f"no reply within {timeout_s:g} s"
            reason = f"hitl_schema_version: {type(e).__name__}: {detail}"
            return Check(ok=False, latency_ms=ms(), reason=reason), None, None
        data = response.data
        if not isinstance(data, str):
            return Check(ok=True, latency_ms=ms()), None, f"unexpected reply {data!r}"
        return Check(ok=True, latency_ms=ms()), data, None

    def realtime_counts(self) -> tuple[int, int]:
        """(sockets open, channels joined): counted when /metrics is scraped, since counting on
        every change costs O(channels) each time (quadratic while a thousand channels join)."""
        return len(self.pool.sockets), self.pool.joined_channels()

    def realtime_check(self) -> Check:
        """A socket of the pool is connected and presence on `operators` is joined."""
        started = time.perf_counter()
        sockets = self.pool.sockets
        connected = any(s.connected.is_set() for s in sockets)
        reason = None
        if not connected:
            errors = [s.last_error for s in sockets if s.last_error]
            last = f" (last error: {errors[-1]})" if errors else ""
            reason = f"no realtime socket connected{last}"
        elif not self.presence.joined:
            reason = "presence on the operators channel is not joined"
        return Check(
            ok=reason is None, latency_ms=(time.perf_counter() - started) * 1000, reason=reason
        )

    async def aclose(self) -> None:
        """Leave every channel, close every socket and the HTTP connections."""
        try:
            await self.pool.aclose()
        finally:
            await self.http.aclose()


def tuning_for(options: PlatformOptions) -> RealtimeTuning:
    return RealtimeTuning(
        channels_per_socket=options.channels_per_socket,
        join_timeout_s=options.timeout_s,
        connect_timeout_s=options.timeout_s,
        joins_per_second=options.joins_per_second,
    )


async def build_platform(
    options: PlatformOptions, *, tuning: RealtimeTuning | None = None, presence: bool = True
) -> SupabasePlatform:
    """Connect to `SUPABASE_URL` as the service role; start presence on `operators`.

    Returns at once: sockets connect and channels join on first use (presence in the
    background), so a platform that is down at start does not keep the relay from serving
    fallbacks. `tuning` overrides the socket pool's behaviour (tests make it quick).
    """
    if not options.url or not options.service_role_key:
        raise ConfigError(
            ["SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are required for the supabase backend"]
        )
    url = options.url.rstrip("/")
    key = options.service_role_key
    tuning = tuning or tuning_for(options)
    timeout_s = options.timeout_s
    # Our own HTTP client: its timeouts bound every RPC, and supabase-py then builds no
    # client of its own (whose `timeout` argument it deprecates).
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT),
        http2=url.startswith("https://"),
        follow_redirects=True,
    )
    try:
        client = await acreate_client(
            url,
            key,
            options=AsyncClientOptions(
                httpx_client=http,
                auto_refresh_token=False,
                # Sessions this relay waits on record its instance (session recovery).
                headers={**AsyncClientOptions().headers, INSTANCE_HEADER: options.instance_id},
            ),
        )
    except BaseException:
        await http.aclose()
        raise
    pool = SocketPool(f"{url}/realtime/v1", key, tuning)
    store = SupabaseCaseStore(client, timeout_s)
    platform = SupabasePlatform(
        client=client,
        http=http,
        pool=pool,
        store=store,
        services=SupabaseServices(client, store),
        channel=SupabaseCaseChannel(pool),
        presence=SupabasePresence(pool, options.presence_cache_ttl_s),
    )
    if presence:
        platform.presence.start()
    pool.spawn(load_event_key(client, pool.event_key, timeout_s), "event key")
    return platform


async def load_event_key(
    client: AsyncClient, event_key: EventKey, timeout_s: float, *, max_delay_s: float = 30.0
) -> None:
    """Read the database's event key (`hitl_event_key()`, service role only), retrying with
    backoff while the platform is unreachable. Until it is read every channel event is only a
    wake-up (one read each): slower, never wrong. A schema without the function is reported
    once and left at that."""
    async for attempt in stamina.retry_context(
        on=(APIError, *TRANSPORT_ERRORS),
        attempts=None,
        timeout=None,
        wait_initial=0.5,
        wait_max=max_delay_s,
        wait_jitter=0.0,
    ):
        with attempt:
            try:
                async with asyncio.timeout(timeout_s):
                    response = await client.rpc("hitl_event_key", {}).execute()
            except APIError as e:
                if e.code in SCHEMA_PROBLEM_CODES:
                    logger.warning(
                        "hitl_event_key() is missing ({}): every channel event costs a read; "
                        "apply the migrations",
                        e.code,
                    )
                    event_key.unavailable()
                    return
                logger.warning("reading the event key failed: {} {}", e.code, e.message)
                raise
            except TRANSPORT_ERRORS as e:
                logger.warning("reading the event key failed: {}: {}", type(e).__name__, e)
                raise
            data = response.data
            try:
                if not isinstance(data, str):
                    raise ValueError(f"unexpected reply {data!r}")
                event_key.set_hex(data)
            except ValueError as e:
                logger.error("the database's event key is unusable: {}", e)
                event_key.unavailable()
                return
            logger.debug("event key loaded: channel events are verified")
            return


@asynccontextmanager
async def supabase_backend(
    options: PlatformOptions, *, tuning: RealtimeTuning | None = None
) -> AsyncIterator[Backend]:
    """`build_platform` as a context manager yielding the ports; closed on exit."""
    platform = await build_platform(options, tuning=tuning)
    try:
        yield platform.backend()
    finally:
        await platform.aclose()
