"""Operators' Realtime rights, through the devstack's Realtime (which asks realtime.messages'
policies exactly as Supabase Realtime does, lib/realtime/tenants/authorization.ex): the relay's
policies (20261206900000_hitl_realtime_policies.sql) let an operator listen on `case:<id>` and
`operators` and track presence on `operators`, and send no broadcast anywhere. Realtime's write
check sees only the topic and the extension, so a broadcast right for `typing` would also be a
right to forge `message` or `case_opened`."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from devstack_clients import Operator
from realtime import RealtimeSubscribeStates

from hitl_devstack.server import Devstack


async def rest_broadcast(stack: Devstack, token: str, topic: str, payload: dict[str, Any]) -> int:
    """Realtime's REST broadcast (what `http_send` uses) of a `case_opened`-named event: 202,
    and private messages the token may not write are skipped."""
    message = {"topic": topic, "event": "case_opened", "payload": payload, "private": True}
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{stack.url}/realtime/v1/api/broadcast",
            json={"messages": [message]},
            headers={"apikey": stack.keys.anon_key, "Authorization": f"Bearer {token}"},
        )
    return r.status_code


async def test_an_operator_listens_and_tracks_presence_but_broadcasts_nowhere(
    devstack: Devstack,
) -> None:
    case_topic = f"case:{uuid.uuid4()}"
    service = devstack.keys.service_role_key
    async with Operator(devstack) as op:
        await op.go_online()  # joins `operators` with presence and tracks: allowed
        assert op.client is not None
        on_case: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        channel = op.client.channel(case_topic, {"config": {"private": True}})
        channel.on_broadcast("case_opened", lambda m: on_case.put_nowait(m["payload"]))
        states: asyncio.Queue[RealtimeSubscribeStates] = asyncio.Queue()
        await channel.subscribe(lambda state, _error: states.put_nowait(state))
        assert await asyncio.wait_for(states.get(), 5) == RealtimeSubscribeStates.SUBSCRIBED

        for topic in (case_topic, "operators"):
            assert await rest_broadcast(devstack, op.token, topic, {"forged": True}) == 202
            assert await rest_broadcast(devstack, service, topic, {"marker": True}) == 202

        # the operator's broadcasts were skipped: the first to arrive is the service role's
        assert await asyncio.wait_for(on_case.get(), 5) == {"marker": True}
        assert await op.next_case_opened(within_s=5) == {"marker": True}
