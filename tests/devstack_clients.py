"""Clients of the devstack as the operators' web app uses Supabase: supabase-py with an operator
access token (so RLS applies), and the service role for what operators may not write."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

from realtime import AsyncRealtimeChannel, RealtimeChannelOptions, RealtimeSubscribeStates
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from hitl_devstack.server import Devstack

# The relay's own policies deny operators any write on `case:` topics (the console only listens;
# supabase/tests/60_rls.sql and tests/db/test_realtime_rights.py check that). An operators' app
# may add policies for its own channels (typing indicators, say), and Realtime's write check sees
# only topic and extension, so such a policy lets an operator broadcast any event there. Tests
# that need a client allowed to write on `case:` topics (Realtime's protocol, or the relay's
# refusal of forged events) add this one, through the SQL-editor path a hosted project would use.
APP_CASE_TOPIC_WRITES = """
create policy app_operators_write_case_topics on realtime.messages
  for insert to authenticated with check (
    public.hitl_is_operator() and realtime.topic() like 'case:%'
    and realtime.messages.extension in ('broadcast', 'presence'));
create policy app_operators_presence_case_topics on realtime.messages
  for select to authenticated using (
    public.hitl_is_operator() and realtime.topic() like 'case:%'
    and realtime.messages.extension = 'presence');
"""


class Operator:
    """An operator of the operators' web app: supabase-py with an operator access token."""

    def __init__(self, devstack: Devstack, operator_id: UUID | str | None = None) -> None:
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

    async def answer(
        self, case_id: UUID, content: str, kind: str = "answer", option_index: int | None = None
    ) -> UUID:
        assert self.client is not None
        row: dict[str, Any] = {
            "case_id": str(case_id),
            "sender_type": "human",
            "sender_id": str(self.id),
            "content": content,
            "kind": kind,
        }
        if option_index is not None:
            row["option_index"] = option_index
        response = await self.client.table("messages").insert(row).execute()
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
