"""Helpers for the Supabase adapter's integration tests: settings and a quick pool tuning for a
devstack, and waits on events with timeouts (the operators' side is `devstack_clients`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from hitl_relay.adapters.supabase import (
    RealtimeTuning,
    SupabasePlatform,
    SupabasePresence,
    build_platform,
)
from hitl_relay.config import Settings, load_settings
from hitl_relay.models import AskHumanRequest
from hitl_relay.ports import ChannelEvent, OpenCase, Subscription

# Quick enough for tests: reconnect attempts at most 0.3 s apart, pings every second.
FAST = RealtimeTuning(
    join_timeout_s=5.0,
    connect_timeout_s=2.0,
    reconnect_initial_s=0.05,
    reconnect_max_s=0.3,
    ping_interval_s=1.0,
    ping_timeout_s=1.0,
    idle_close_s=0.3,
)

E = TypeVar("E")


def settings_for(url: str, service_role_key: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "backend": "supabase",
        "supabase_url": url,
        "supabase_service_role_key": service_role_key,
        "presence_cache_ttl_seconds": 0.0,
        "platform_timeout_seconds": 5.0,
    }
    values.update(overrides)
    return load_settings(**values)


@asynccontextmanager
async def platform_on(
    url: str, service_role_key: str, *, tuning: RealtimeTuning = FAST, presence: bool = True
) -> AsyncIterator[SupabasePlatform]:
    platform = await build_platform(
        settings_for(url, service_role_key).platform_options(), tuning=tuning, presence=presence
    )
    try:
        # Until the event key is read, every channel event is a wake-up: tests that wait for
        # a typed event start once the database's events arrive as themselves.
        async with asyncio.timeout(10):
            await platform.pool.event_key.wait_settled()
        yield platform
    finally:
        await platform.aclose()


def open_request(**overrides: Any) -> OpenCase:
    values: dict[str, Any] = {
        "case_id": uuid.uuid4(),
        "question": f"Is the Saturday slot free? ({uuid.uuid4().hex[:8]})",
        "mcp_session_id": "session-1",
        "retell_call_id": f"call-{uuid.uuid4().hex[:8]}",
        "retell_agent_id": "agent-1",
        "timeout_seconds": 30,
    }
    values.update(overrides)
    return OpenCase(**values)


def ask_request(**overrides: Any) -> AskHumanRequest:
    """An agent's `ask_human` with its own call id, for the relay over the adapter."""
    values: dict[str, Any] = {
        "question": "Can we deliver on Saturday?",
        "session_id": "s-1",
        "call_id": f"call-{uuid.uuid4().hex[:8]}",
        "agent_id": "agent-1",
    }
    values.update(overrides)
    return AskHumanRequest(**values)


async def next_of(sub: Subscription, kind: type[E], within_s: float = 5.0) -> E:
    """The next event of type `kind`; events of other types before it are skipped."""
    async with asyncio.timeout(within_s):
        while True:
            event: ChannelEvent = await sub.receive()
            if isinstance(event, kind):
                return event


async def wait_presence(
    presence: SupabasePresence, ok: Callable[[int | None], bool], within_s: float = 5.0
) -> int | None:
    """Until `ok(operators_online())`, re-read whenever presence changes."""
    async with asyncio.timeout(within_s):
        while True:
            changed = presence.changed.wait()
            value = await presence.operators_online()
            if ok(value):
                changed.close()
                return value
            await changed
