"""The production adapter: the relay's ports over supabase-py's `AsyncClient` and realtime-py.

- `SupabaseCaseStore` (`supabase_store.py`): `hitl_open_case`, `hitl_answer`,
  `hitl_close_session` through PostgREST as the service role; P0001 → `InvalidRequest(field,
  rule)`, everything else → `PlatformUnavailable`.
- `SupabaseCaseChannel` (`supabase_channel.py`): private `case:<id>` channels on a pool of
  Realtime sockets (never more than `channels_per_socket` per socket), rejoined after any
  reconnect and reported as `Reconnected` so the core does a catch-up read.
- `SupabasePresence` (`supabase_channel.py`): one long-lived join of the private `operators`
  channel, counting the operators present (cached ≤ the configured TTL); unknown while not
  joined.

`build_platform(settings)` connects all three and returns a `SupabasePlatform` (close it with
`aclose()`); `supabase_backend(settings)` is the same as an async context manager yielding the
`Backend`. Nothing here knows about the devstack: pointed at a real project, it works the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from hitl_relay.adapters.supabase_channel import (
    RealtimeTuning,
    SocketPool,
    SupabaseCaseChannel,
    SupabasePresence,
    SupabaseSubscription,
)
from hitl_relay.adapters.supabase_store import INSTANCE_HEADER, SupabaseCaseStore
from hitl_relay.errors import ConfigError
from hitl_relay.ports import Backend

if TYPE_CHECKING:
    from hitl_relay.config import Settings

__all__ = [
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

    def backend(self) -> Backend:
        return Backend(store=self.store, channel=self.channel, presence=self.presence)

    async def aclose(self) -> None:
        """Leave every channel, close every socket and the HTTP connections."""
        try:
            await self.pool.aclose()
        finally:
            await self.http.aclose()


def tuning_from(settings: Settings) -> RealtimeTuning:
    return RealtimeTuning(
        channels_per_socket=settings.channels_per_socket,
        join_timeout_s=settings.platform_timeout_seconds,
        connect_timeout_s=settings.platform_timeout_seconds,
    )


async def build_platform(
    settings: Settings, *, tuning: RealtimeTuning | None = None, presence: bool = True
) -> SupabasePlatform:
    """Connect to `SUPABASE_URL` as the service role; start presence on `operators`.

    Returns at once: sockets connect and channels join on first use (presence in the
    background), so a platform that is down at start does not keep the relay from serving
    fallbacks. `tuning` overrides the socket pool's behaviour (tests make it quick).
    """
    if not settings.supabase_url or settings.supabase_service_role_key is None:
        raise ConfigError(
            ["SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are required for the supabase backend"]
        )
    url = settings.supabase_url.rstrip("/")
    key = settings.supabase_service_role_key.get_secret_value()
    tuning = tuning or tuning_from(settings)
    timeout_s = settings.platform_timeout_seconds
    # Our own HTTP client: its timeouts bound every RPC, and supabase-py then builds no
    # client of its own (whose `timeout` argument it deprecates).
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
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
                headers={**AsyncClientOptions().headers, INSTANCE_HEADER: settings.instance_id},
            ),
        )
    except BaseException:
        await http.aclose()
        raise
    pool = SocketPool(f"{url}/realtime/v1", key, tuning)
    platform = SupabasePlatform(
        client=client,
        http=http,
        pool=pool,
        store=SupabaseCaseStore(client, timeout_s),
        channel=SupabaseCaseChannel(pool),
        presence=SupabasePresence(pool, settings.presence_cache_ttl_seconds),
    )
    if presence:
        platform.presence.start()
    return platform


@asynccontextmanager
async def supabase_backend(
    settings: Settings, *, tuning: RealtimeTuning | None = None
) -> AsyncIterator[Backend]:
    """`build_platform` as a context manager yielding the ports; closed on exit."""
    platform = await build_platform(settings, tuning=tuning)
    try:
        yield platform.backend()
    finally:
        await platform.aclose()
