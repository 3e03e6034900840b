"""The contract suite's Supabase harness: the real adapter (`hitl_relay.adapters.supabase`) on a
devstack, reached through a TCP fault proxy so the suite can drop the relay's connection while
the operators (supabase-py with an operator JWT, straight to the devstack) keep working."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
from contract_support import ContractPorts, InstanceStore
from devstack_clients import Operator
from fault_proxy import FaultProxy
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from hitl_devstack.server import Devstack
from hitl_relay.adapters.supabase import RealtimeTuning, SupabaseCaseStore, build_platform
from hitl_relay.adapters.supabase_store import INSTANCE_HEADER
from hitl_relay.config import load_settings
from hitl_relay.ports import MessageKind, SenderType

TUNING = RealtimeTuning(
    join_timeout_s=5.0,
    connect_timeout_s=2.0,
    reconnect_initial_s=0.05,
    reconnect_max_s=0.3,
    ping_interval_s=1.0,
    ping_timeout_s=1.0,
    idle_close_s=0.3,
)


class DevstackOperators:
    """The operators' side on the devstack: human messages as an operator (RLS applies), other
    senders as the service role; presence through one supabase-py client per operator id."""

    def __init__(self, devstack: Devstack, service: AsyncClient, answering: Operator) -> None:
        self.devstack = devstack
        self.service = service
        self.answering = answering
        self.present: dict[str, Operator] = {}

    async def answer(
        self,
        case_id: UUID,
        content: str,
        *,
        kind: MessageKind = "answer",
        sender_type: SenderType = "human",
        option_index: int | None = None,
    ) -> UUID:
        if sender_type == "human":
            return await self.answering.answer(case_id, content, kind, option_index)
        response = (
            await self.service.table("messages")
            .insert(
                {
                    "case_id": str(case_id),
                    "sender_type": sender_type,
                    "content": content,
                    "kind": kind,
                }
            )
            .execute()
        )
        return UUID(response.data[0]["id"])

    async def forge(self, case_id: UUID, event: str, payload: Mapping[str, Any]) -> None:
        """POST /realtime/v1/api/broadcast with the operator's token, as supabase-js's
        `channel.httpSend` does."""
        async with httpx.AsyncClient(base_url=self.devstack.url) as http:
            response = await http.post(
                "/realtime/v1/api/broadcast",
                headers={
                    "apikey": self.devstack.keys.anon_key,
                    "Authorization": f"Bearer {self.answering.token}",
                },
                json={
                    "messages": [
                        {
                            "topic": f"case:{case_id}",
                            "event": event,
                            "payload": dict(payload),
                            "private": True,
                        }
                    ]
                },
            )
        response.raise_for_status()

    async def go_online(self, operator_id: str = "operator-0") -> None:
        operator = Operator(self.devstack, operator_id=operator_id)
        await operator.__aenter__()
        await operator.go_online()
        self.present[operator_id] = operator

    async def go_offline(self, operator_id: str = "operator-0") -> None:
        operator = self.present.pop(operator_id)
        await operator.go_offline()
        await operator.__aexit__()

    async def aclose(self) -> None:
        for operator in self.present.values():
            await operator.__aexit__()
        self.present.clear()


class DevstackClaims:
    """`ClaimsSide` on the devstack: each named operator is supabase-py with its own operator
    JWT (skills in app_metadata.hitl_skills), doing what the console does under RLS; the
    service role only moves a case's creation back (`age`) and reads the claim (`holder`)."""

    def __init__(self, devstack: Devstack, service: AsyncClient) -> None:
        self.devstack = devstack
        self.service = service
        self.ids: dict[str, UUID] = {}
        self.skills: dict[str, list[str]] = {}
        self.clients: dict[str, AsyncClient] = {}

    def operator_id(self, name: str) -> str:
        return str(self.ids.setdefault(name, uuid4()))

    async def _client(self, name: str) -> AsyncClient:
        if name not in self.clients:
            token = self.devstack.keys.user_token(
                self.operator_id(name), operator=True, skills=self.skills.get(name, [])
            )
            options = AsyncClientOptions(headers={"Authorization": f"Bearer {token}"})
            self.clients[name] = await acreate_client(
                self.devstack.url, self.devstack.keys.anon_key, options=options
            )
        return self.clients[name]

    async def set_skills(self, name: str, skills: Sequence[str]) -> None:
        # skills live in the token: the operator signs in again with the new one
        self.skills[name] = list(skills)
        old = self.clients.pop(name, None)
        if old is not None:
            await old.postgrest.aclose()

    async def heartbeat(self, name: str, status: str = "available") -> None:
        client = await self._client(name)
        await client.rpc("hitl_operator_heartbeat", {"p_status": status}).execute()

    async def _set_claim(self, name: str, case_id: UUID, holder: str | None) -> bool:
        client = await self._client(name)
        update = client.table("cases").update({"claimed_by": holder}).eq("id", str(case_id))
        return bool((await update.execute()).data)

    async def claim(self, name: str, case_id: UUID) -> bool:
        return await self._set_claim(name, case_id, self.operator_id(name))

    async def release(self, name: str, case_id: UUID) -> bool:
        return await self._set_claim(name, case_id, None)

    async def release_all(self, name: str) -> int:
        client = await self._client(name)
        return int((await client.rpc("hitl_release_claims").execute()).data)

    async def queue(self, name: str) -> list[UUID]:
        client = await self._client(name)
        rows = (await client.rpc("hitl_operator_queue").execute()).data or []
        return [UUID(r["case_id"]) for r in rows]

    async def holder(self, case_id: UUID) -> str | None:
        rows = (
            await self.service.table("cases").select("claimed_by").eq("id", str(case_id)).execute()
        ).data
        return None if not rows or rows[0]["claimed_by"] is None else str(rows[0]["claimed_by"])

    async def answer(self, name: str, case_id: UUID, content: str) -> UUID:
        client = await self._client(name)
        row = {
            "case_id": str(case_id),
            "sender_type": "human",
            "sender_id": self.operator_id(name),
            "content": content,
            "kind": "answer",
        }
        return UUID((await client.table("messages").insert(row).execute()).data[0]["id"])

    async def age(self, case_id: UUID, seconds: float) -> None:
        read = self.service.table("cases").select("created_at,escalated_at").eq("id", str(case_id))
        row = (await read.execute()).data[0]
        moved = {
            key: (datetime.fromisoformat(row[key]) - timedelta(seconds=seconds)).isoformat()
            for key in ("created_at", "escalated_at")
            if row[key] is not None
        }
        await self.service.table("cases").update(moved).eq("id", str(case_id)).execute()

    async def priority(self, case_id: UUID) -> int:
        read = self.service.table("cases").select("priority").eq("id", str(case_id))
        return int((await read.execute()).data[0]["priority"])

    async def vanish(self, name: str) -> None:
        at = "2000-01-01T00:00:00+00:00"
        long_ago = {"started_at": at, "last_seen_at": at}
        await (
            self.service.table("operator_activity")
            .update(long_ago)
            .eq("operator_id", self.operator_id(name))
            .execute()
        )

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.postgrest.aclose()
        self.clients.clear()


async def supabase_ports(devstack: Devstack) -> AsyncIterator[ContractPorts]:
    proxy = FaultProxy(devstack.port)
    await proxy.start()
    settings = load_settings(
        backend="supabase",
        supabase_url=proxy.url,
        supabase_service_role_key=devstack.keys.service_role_key,
        presence_cache_ttl_seconds=0.1,
    )
    platform = await build_platform(settings.platform_options(), tuning=TUNING)
    # Until the event key is read every channel event is a wake-up (see platform_on).
    async with asyncio.timeout(10):
        await platform.pool.event_key.wait_settled()
    service = await acreate_client(devstack.url, devstack.keys.service_role_key)
    answering = Operator(devstack, operator_id=uuid4())
    await answering.__aenter__()
    operators = DevstackOperators(devstack, service, answering)
    claims = DevstackClaims(devstack, service)

    async def disconnect() -> None:
        proxy.cut()
        # Wait until the adapter noticed (its sockets count as down), as a real drop would be.
        await platform.pool.wait_until(
            lambda: not any(s.connected.is_set() for s in platform.pool.sockets), 5
        )

    async def reconnect() -> None:
        proxy.restore()

    instance_clients: list[AsyncClient] = []

    async def store_for(instance_id: str) -> InstanceStore:
        options = AsyncClientOptions(
            headers={**AsyncClientOptions().headers, INSTANCE_HEADER: instance_id}
        )
        client = await acreate_client(devstack.url, devstack.keys.service_role_key, options)
        instance_clients.append(client)
        return SupabaseCaseStore(client, 5.0)

    async def pass_deadline(session_id: UUID) -> None:
        await (
            service.table("hil_sessions")
            .update({"expires_at": "2000-01-01T00:00:00+00:00"})
            .eq("id", str(session_id))
            .execute()
        )

    async def audit_rows(actor: str) -> list[dict[str, Any]]:
        response = await (
            service.table("hil_audit")
            .select("actor,action,outcome,case_id,session_id,detail,at")
            .eq("actor", actor)
            .order("id")
            .execute()
        )
        return list(response.data)

    try:
        yield ContractPorts(
            store=platform.store,
            channel=platform.channel,
            presence=platform.presence,
            operator=operators,
            disconnect=disconnect,
            reconnect=reconnect,
            joined_channels=lambda: platform.channel.subscriptions,
            store_for=store_for,
            pass_deadline=pass_deadline,
            services=platform.services,
            audit_rows=audit_rows,
            escalation=platform.store,
            claims=claims,
        )
    finally:
        await claims.aclose()
        await operators.aclose()
        await answering.__aexit__()
        await service.postgrest.aclose()
        for client in instance_clients:
            await client.postgrest.aclose()
        await platform.aclose()
        await proxy.stop()
