"""Types shared by the contract suite's harnesses and tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol
from uuid import UUID

from hitl_relay.adapters.memory import MemoryCaseStore, MemoryPlatform
from hitl_relay.ports import (
    CaseChannel,
    CaseStore,
    EscalationStore,
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


class ClaimsSide(Protocol):
    """Operators claiming, routed and escalated, each named by the test (`name`): the console's
    calls as that operator (heartbeat, claim and release by row update, the routing queue, an
    answer), plus what an administrator sets (skills) and a clock moved for one case (`age`)."""

    def operator_id(self, name: str) -> str:
        """The id the platform records for this operator (an answer's sender_id)."""
        ...

    async def set_skills(self, name: str, skills: Sequence[str]) -> None: ...

    async def heartbeat(self, name: str, status: str = "available") -> None: ...

    async def claim(self, name: str, case_id: UUID) -> bool:
        """True if the operator holds the case now; False if the row was not theirs to update."""
        ...

    async def release(self, name: str, case_id: UUID) -> bool: ...

    async def release_all(self, name: str) -> int: ...

    async def queue(self, name: str) -> list[UUID]: ...

    async def holder(self, case_id: UUID) -> str | None:
        """The operator id in the case's claim (a lapsed one until it is released)."""
        ...

    async def answer(self, name: str, case_id: UUID, content: str) -> UUID: ...

    async def age(self, case_id: UUID, seconds: float) -> None:
        """Make the case `seconds` older (its creation and last escalation moved back)."""
        ...

    async def priority(self, case_id: UUID) -> int:
        """The case's priority now (escalation raises it)."""
        ...

    async def vanish(self, name: str) -> None:
        """The operator's last heartbeat is long past (the tab was closed minutes ago)."""
        ...


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
    # Escalation (hitl_escalate and its outbox) and the operators' claims and routing.
    escalation: EscalationStore
    claims: ClaimsSide


class MemoryClaimsSide:
    """`ClaimsSide` on the twin: `MemoryPlatform.claims`, operators named as they are."""

    def __init__(self, platform: MemoryPlatform) -> None:
        self._p = platform

    def operator_id(self, name: str) -> str:
        return name

    async def set_skills(self, name: str, skills: Sequence[str]) -> None:
        self._p.claims.set_skills(name, skills)

    async def heartbeat(self, name: str, status: str = "available") -> None:
        self._p.claims.heartbeat(name, status)

    async def claim(self, name: str, case_id: UUID) -> bool:
        return self._p.claims.claim(name, case_id)

    async def release(self, name: str, case_id: UUID) -> bool:
        return self._p.claims.release(name, case_id)

    async def release_all(self, name: str) -> int:
        return self._p.claims.release_all(name)

    async def queue(self, name: str) -> list[UUID]:
        return self._p.claims.queue(name)

    async def holder(self, case_id: UUID) -> str | None:
        claim = self._p.claims.held.get(case_id)
        return None if claim is None else claim.holder

    async def answer(self, name: str, case_id: UUID, content: str) -> UUID:
        return self._p.post_message(case_id, content, sender_id=name).message_id

    async def age(self, case_id: UUID, seconds: float) -> None:
        case = self._p.cases[case_id]
        case.created_at -= timedelta(seconds=seconds)
        if case.escalated_at is not None:
            case.escalated_at -= timedelta(seconds=seconds)

    async def priority(self, case_id: UUID) -> int:
        return self._p.cases[case_id].priority

    async def vanish(self, name: str) -> None:
        status, seen = self._p.claims.activity[name]
        self._p.claims.activity[name] = (status, seen - timedelta(hours=1))


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
        escalation=platform.store,
        claims=MemoryClaimsSide(platform),
    )
