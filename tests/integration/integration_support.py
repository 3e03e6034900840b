"""Helpers for the Supabase adapter's integration tests: settings for a devstack, the operators'
side through supabase-py (operator JWT, so RLS applies), and waits on events with timeouts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from uuid import UUID

from realtime import AsyncRealtimeChannel, RealtimeChannelOptions, RealtimeSubscribeStates
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from hitl_relay.adapters.supabase import (
    RealtimeTuning,
    SupabasePlatform,
    SupabasePresence,
    build_platform,
)
from hitl_relay.config import Settings, load_settings
from hitl_relay.devstack.server import Devstack
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
        settings_for(url, service_role_key), tuning=tuning, presence=presence
    )
    try:
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


class Operator:
    """An operator of the operators' web app: supabase-py with an operator access token."""

    def __init__(self, devstack: Devstack, operator_id: UUID | None = None) -> None:
        self.devstack = devstack
        self.id = operator_id or uuid.uuid4()
        self.token = devstack.keys.user_token(str(self.id), operator=True)
        self.client: AsyncClient | None = None
        self.presence_channel: AsyncRealtimeChannel | None = None
        self.cases_opened: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def __aenter__(self) -> Operator:
        options = AsyncClientOptions(headers={"Authorization": f"Bearer {self.token}"})
        self.client = await acreate_client(
            self.devstack.url, self.devstack.keys.anon_key, options=options
        )
        await self.client.realtime.set_auth(self.token)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.client is not None:
            await self.client.realtime.close()
            await self.client.postgrest.aclose()

    async def answer(self, case_id: UUID, content: str, kind: str = "answer") -> UUID:
        assert self.client is not None
        response = (
            await self.client.table("messages")
            .insert(
                {
                    "case_id": str(case_id),
                    "sender_type": "human",
                    "sender_id": str(self.id),
                    "content": content,
                    "kind": kind,
                }
            )
            .execute()
        )
        return UUID(response.data[0]["id"])

    async def go_online(self) -> None:
        """Join `operators` with presence and track {operator_id, status}, as the console does."""
        assert self.client is not None
        options: RealtimeChannelOptions = {
            "config": {
                "broadcast": {"ack": False, "self": False},
                "presence": {"key": str(self.id), "enabled": True},
                "private": True,
            }
        }
        channel = self.client.channel("operators", options)
        channel.on_broadcast("case_opened", lambda m: self.cases_opened.put_nowait(m["payload"]))
        states: asyncio.Queue[RealtimeSubscribeStates] = asyncio.Queue()
        await channel.subscribe(lambda state, _error: states.put_nowait(state))
        assert await asyncio.wait_for(states.get(), 5) == RealtimeSubscribeStates.SUBSCRIBED
        await channel.track({"operator_id": str(self.id), "status": "available"})
        self.presence_channel = channel

    async def next_case_opened(self, within_s: float = 10.0) -> dict[str, Any]:
        """The next `case_opened` broadcast on `operators` (after `go_online`)."""
        return await asyncio.wait_for(self.cases_opened.get(), within_s)

    async def go_offline(self) -> None:
        assert self.client is not None
        assert self.presence_channel is not None
        await self.client.remove_channel(self.presence_channel)
        self.presence_channel = None


@asynccontextmanager
async def service_client(devstack: Devstack) -> AsyncIterator[AsyncClient]:
    """supabase-py as the service role (writes what operators may not: ai/system messages)."""
    client = await acreate_client(devstack.url, devstack.keys.service_role_key)
    try:
        yield client
    finally:
        await client.postgrest.aclose()


async def insert_message(
    client: AsyncClient, case_id: UUID, sender_type: str, content: str, kind: str = "note"
) -> UUID:
    response = (
        await client.table("messages")
        .insert(
            {"case_id": str(case_id), "sender_type": sender_type, "content": content, "kind": kind}
        )
        .execute()
    )
    return UUID(response.data[0]["id"])
