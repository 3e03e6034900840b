"""Types shared by the contract suite's harnesses and tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol
from uuid import UUID

from hitl_relay.adapters.memory import MemoryCaseStore, MemoryPlatform
from hitl_relay.ports import (
    CaseChannel,
    CaseStore,
    MessageKind,
    OperatorPresence,
    SenderType,
    SessionRecovery,
)
from hitl_relay.service_ports import AuditStore, CallbackOutbox, RateLimitStore


class ServicePorts(AuditStore, RateLimitStore, CallbackOutbox, Protocol):
    """The edge's service ports, which one adapter object implements."""


class InstanceStore(CaseStore, SessionRecovery, Protocol):
    """A case store of one named relay instance (its sessions record that instance)."""


class OperatorSide(Protocol):
    """What the operators' app does: insert a message into a case, be present or not."""

    async def answer(
        self,
        case_id: UUID,
        content: str,
        *,
        kind: MessageKind = "answer",
        sender_type: SenderType = "human",
        option_index: int | None = None,
    ) -> UUID: ...

    async def forge(self, case_id: UUID, event: str, payload: Mapping[str, Any]) -> None:
        """Broadcast `event` on `case:<case_id>` as an operator's client (not the database)."""
        ...

    async def go_online(self, operator_id: str = "operator-0") -> None: ...

    async def go_offline(self, operator_id: str = "operator-0") -> None: ...


@dataclass
class ContractPorts:
    store: CaseStore
    channel: CaseChannel
    presence: OperatorPresence
    operator: OperatorSide
    # The relay's connection drops (subscriptions stay open, hear nothing) ...
    disconnect: Callable[[], Awaitable[None]]
    # ... and comes back: every open subscription rejoins and reports `Reconnected`.
    reconnect: Callable[[], Awaitable[None]]
    # How many case channels the adapter holds joined right now.
    joined_channels: Callable[[], int]
    # The store of another relay process, named `instance_id`, on the same platform.
    store_for: Callable[[str], Awaitable[InstanceStore]]
    # Move a session's deadline into the past (its relay died long ago), without waiting.
    pass_deadline: Callable[[UUID], Awaitable[None]]
    # The edge's service ports on the same connection as `store`.
    services: ServicePorts
    # The audit rows the platform holds for one actor, oldest first.
    audit_rows: Callable[[str], Awaitable[list[dict[str, Any]]]]


async def memory_ports() -> AsyncIterator[ContractPorts]:
    platform = MemoryPlatform(presence_ttl_s=0.1)

    async def disconnect() -> None:
        platform.disconnect()

    async def reconnect() -> None:
        platform.reconnect()

    async def store_for(instance_id: str) -> InstanceStore:
        return MemoryCaseStore(platform, instance_id)

    async def pass_deadline(session_id: UUID) -> None:
        session = platform.sessions[session_id]
        session.expires_at = platform.clock.now() - timedelta(seconds=1)

    async def audit_rows(actor: str) -> list[dict[str, Any]]:
        return [r for r in platform.services.audit_rows if r["actor"] == actor]

    yield ContractPorts(
        store=platform.store,
        channel=platform.channel,
        presence=platform.presence,
        operator=platform.operator,
        disconnect=disconnect,
        reconnect=reconnect,
        joined_channels=lambda: platform.joined_channels,
        store_for=store_for,
        pass_deadline=pass_deadline,
        services=platform.services,
        audit_rows=audit_rows,
    )
