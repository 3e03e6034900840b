"""The serving relay runs the escalation round on its own timer (pg_cron's finest schedule is a
minute): once at start, then every `HITL_ESCALATION_INTERVAL_SECONDS`; 0 turns it off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from relay_support import make_settings

from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.clock import FakeClock
from hitl_relay.http_app import create_app, running
from hitl_relay.ports import Backend


@asynccontextmanager
async def serving(
    platform: MemoryPlatform, clock: FakeClock, **settings: Any
) -> AsyncIterator[str]:
    @asynccontextmanager
    async def backend(_settings: Any) -> AsyncIterator[Backend]:
        yield platform.backend()

    config = make_settings(api_keys="key-one-0123456789", success_refresh_seconds=3600, **settings)
    async with running(create_app(config, backend=backend, clock=clock)) as url:
        yield url


async def test_the_relay_escalates_every_interval_on_its_own_timer() -> None:
    platform = MemoryPlatform()
    clock = FakeClock()
    async with serving(platform, clock, escalation_interval_seconds=5):
        await platform.wait_until(lambda: platform.rpc_calls.count("escalate") == 1)
        await clock.wait_for_sleepers(2)  # the success refresher and the escalator
        assert clock.next_wake() == 5
        clock.advance(5)
        await platform.wait_until(lambda: platform.rpc_calls.count("escalate") == 2)


async def test_an_interval_of_zero_leaves_escalation_to_pg_cron() -> None:
    platform = MemoryPlatform()
    clock = FakeClock()
    async with serving(platform, clock, escalation_interval_seconds=0):
        await clock.wait_for_sleepers(1)  # the success refresher only
        assert clock.next_wake() == 3600
    assert "escalate" not in platform.rpc_calls
