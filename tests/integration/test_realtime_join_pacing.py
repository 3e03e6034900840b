"""The relay's socket pool under a project's join limit (Realtime's `ClientJoinRateLimitReached`).

Supabase counts joins per project and, when the average rate reaches the limit, refuses a join
with `ClientJoinRateLimitReached: Too many joins per second` and drops the whole socket
(supabase/realtime `lib/realtime_web/channels/realtime_channel.ex` join/3, `limit_joins/2`).
realtime-py 2.34 then waits 30 s before that channel's next join (`_async/channel.py`
`RATE_LIMITED_REJOIN_DELAY_SECONDS`). Here the devstack runs with a small limit and a short
rate tick (Realtime's RateCounter: 12 ticks of 5 s) so a burst of joins reaches it at once.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace

import pytest
from integration_support import FAST
from realtime import AsyncRealtimeClient
from waiting import wait_until

from hitl_devstack.keys import make_keys
from hitl_devstack.realtime import RealtimeLimits
from hitl_devstack.server import Devstack
from hitl_relay.adapters.realtime_channel import RealtimeChannel
from hitl_relay.adapters.realtime_pool import SocketPool
from hitl_relay.adapters.supabase import SupabaseSubscription

CHANNELS = 12  # per wave; two waves, one after the other
# A limit of 10 joins a second, averaged over 4 ticks of 0.5 s: 5 joins in the first tick
# reach it (Realtime's RateCounter, as the devstack counts it).
LIMITS = {
    "max_joins_per_second": 10,
    "rate_tick_s": 0.5,
    "rate_buckets": 4,
    "channel_error_backoff_s": 0.05,
    "connect_error_backoff_s": 0.05,
}
TUNING = replace(FAST, join_timeout_s=12.0, rate_limited_rejoin_s=1.0)


@pytest.fixture
async def limited(db_url: str) -> AsyncIterator[Devstack]:
    stack = Devstack(db_url, make_keys(secrets.token_urlsafe(32)), limits=RealtimeLimits(**LIMITS))
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()


async def attach_all(
    pool: SocketPool, stack: AsyncExitStack, devstack: Devstack
) -> list[RealtimeChannel]:
    """Two waves of CHANNELS case channels, each asked for at once as calls arriving together
    would: Realtime lets a first burst through and judges the average at its next tick, so the
    second wave starts once the devstack's join counter has ticked."""

    async def one() -> RealtimeChannel:
        case_id = uuid.uuid4()
        sub = SupabaseSubscription(case_id)
        channel = await pool.attach(f"case:{case_id}", "case", sub)
        stack.callback(pool.detach, channel, sub)
        return channel

    first = await asyncio.gather(*(one() for _ in range(CHANNELS)))
    joins = devstack.realtime.joins  # type: ignore[union-attr]

    async def ticked() -> bool:
        return bool(joins.current_avg() > 0)

    await wait_until(ticked, "the devstack's join counter to tick", 5.0)
    second = await asyncio.gather(*(one() for _ in range(CHANNELS)))
    return [*first, *second]


async def test_joins_paced_under_the_projects_limit_are_never_refused(
    limited: Devstack,
) -> None:
    pool = SocketPool(
        f"{limited.url}/realtime/v1",
        limited.keys.service_role_key,
        replace(TUNING, joins_per_second=4),
    )
    try:
        async with AsyncExitStack() as stack:
            channels = await attach_all(pool, stack, limited)
            assert all(c.state == "joined" for c in channels)
    finally:
        await pool.aclose()
    assert pool.rate_limited == 0  # not one join refused for the project's rate
    assert pool.pacer.waited > 0  # ... because joins waited for the pacer
    assert pool.reconnects == 0  # nor a socket dropped for it


async def test_a_join_refused_for_the_rate_rejoins_at_once_not_after_realtime_pys_30_s(
    limited: Devstack,
) -> None:
    # An unpaced pool reaches the limit; the refused joins and the socket the server drops are
    # rejoined after the pool's short pause, every call's channel within its join budget
    # (12 s, under realtime-py's 30 s).
    pool = SocketPool(
        f"{limited.url}/realtime/v1",
        limited.keys.service_role_key,
        replace(TUNING, joins_per_second=1000),
    )
    try:
        async with AsyncExitStack() as stack:
            # attach() returns once the channel is joined: every call got its channel
            channels = await attach_all(pool, stack, limited)
            # ... and later refusals (the unpaced rejoins trip the limit again) settle too
            await pool.wait_until(lambda: all(c.state == "joined" for c in channels), 12.0)
    finally:
        await pool.aclose()
    assert pool.rate_limited > 0  # the limit was reached
    assert pool.reconnects > 0  # and the server dropped the socket, as hosted does


async def test_a_join_refused_for_connections_is_sent_again_in_seconds_not_30(
    db_url: str,
) -> None:
    # `ConnectionRateLimitReached` (realtime_channel.ex limit_max_users/2) leaves the socket
    # open, so only the channel's rejoin timer brings the join back: realtime-py sets it to 30 s,
    # the pool to `rate_limited_rejoin_s` (1 s here). The join budget (12 s) is under 30 s.
    stack = Devstack(
        db_url,
        make_keys(secrets.token_urlsafe(32)),
        limits=RealtimeLimits(
            max_concurrent_users=1, channel_error_backoff_s=0.05, connect_error_backoff_s=0.05
        ),
    )
    await stack.start()
    other = AsyncRealtimeClient(f"{stack.url}/realtime/v1", token=stack.keys.anon_key)
    pool = SocketPool(f"{stack.url}/realtime/v1", stack.keys.service_role_key, TUNING)
    try:
        await other.connect()
        await other.channel("lobby", {"config": {"private": False}}).subscribe()
        case_id = uuid.uuid4()
        sub = SupabaseSubscription(case_id)
        attach = asyncio.create_task(pool.attach(f"case:{case_id}", "case", sub))
        await pool.wait_until(lambda: pool.rate_limited > 0, 5.0)  # refused: the slot is taken
        await other.close()  # the other user leaves

        channel = await attach

        assert channel.state == "joined"
        assert pool.reconnects == 0  # the same socket: the rejoin timer did it
        pool.detach(channel, sub)
    finally:
        await pool.aclose()
        await other.close()
        await stack.stop()
