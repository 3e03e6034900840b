"""The case store's upkeep on the twin: the expiry job's health, recovery after a restart,
success metrics, escalation and its notifications, and a call's history
(`hitl_call_history`, also the thread `hitl_attach_thread` stores on a new case). `MemoryCaseStore`
takes these from `MemoryCaseUpkeep`, which reaches the platform as the small `UpkeepHost`, so this
module never imports `memory.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

import anyio

from hitl_relay.adapters.memory_claims import MemoryClaims
from hitl_relay.adapters.memory_state import (
    MemCase,
    MemNotification,
    MemSession,
    success_figures,
)
from hitl_relay.errors import InvalidRequest
from hitl_relay.ports import (
    Clock,
    HumanMessage,
    JobHealth,
    Notification,
    RecoveredSessions,
    SessionStatus,
    SuccessMetrics,
    ThreadEntry,
    ThreadMessage,
)


class UpkeepHost(Protocol):
    """What the store's upkeep reads and writes of the twin's platform (`MemoryPlatform`)."""

    clock: Clock
    cases: dict[UUID, MemCase]
    sessions: dict[UUID, MemSession]
    messages: list[HumanMessage]
    notifications: list[MemNotification]
    availability: list[tuple[str, datetime, datetime]]
    claims: MemoryClaims
    expiry_scheduled: bool
    expiry_last_run: datetime | None

    def changed(self) -> None: ...

    def _rpc(self, name: str) -> None: ...

    def set_session_status(self, session: MemSession, status: SessionStatus) -> None: ...

    def thread(self, call_id: str) -> list[ThreadEntry]: ...


class MemoryCaseUpkeep:
    """The upkeep half of `CaseStore` on the twin (`MemoryCaseStore` is the other half)."""

    _p: UpkeepHost

    async def expiry_job(self) -> JobHealth:
        await anyio.lowlevel.checkpoint()
        p = self._p
        p._rpc("expiry_job")
        if not p.expiry_scheduled:
            return JobHealth(scheduled=False, last_success=None)
        return JobHealth(scheduled=True, last_success=p.expiry_last_run)

    async def recover_sessions(self, instance_id: str) -> RecoveredSessions:
        await anyio.lowlevel.checkpoint()
        p = self._p
        p._rpc("recover_sessions")
        if not instance_id.strip() or len(instance_id) > 128:
            raise InvalidRequest(
                "p_instance_id", "must be a non-empty text of at most 128 characters"
            )
        now = p.clock.now()
        mine = [
            s for s in p.sessions.values() if s.instance_id == instance_id and s.status == "waiting"
        ]
        expired = [s for s in mine if s.expires_at <= now]
        for session in mine:
            session.detail = {"reason": "relay restarted"}
            p.set_session_status(session, "expired" if session in expired else "cancelled")
        p.changed()
        return RecoveredSessions(expired=len(expired), cancelled=len(mine) - len(expired))

    async def success_metrics(self, start: datetime, end: datetime) -> SuccessMetrics:
        await anyio.lowlevel.checkpoint()
        p = self._p
        p._rpc("success_metrics")
        return success_figures(p.cases, p.sessions, p.messages, p.availability, start, end)

    async def escalate(self) -> int:
        """`hitl_escalate` (`MemoryClaims.escalate`: claims, the unclaimed and deadline rules)."""
        await anyio.lowlevel.checkpoint()
        self._p._rpc("escalate")
        return self._p.claims.escalate()

    async def pending_notifications(self, limit: int) -> list[Notification]:
        await anyio.lowlevel.checkpoint()
        self._p._rpc("pending_notifications")
        taken = [n for n in self._p.notifications if n.sent_at is None and n.attempts < 10]
        out = []
        for n in taken[:limit]:
            n.attempts += 1
            out.append(
                Notification(
                    id=n.id,
                    case_id=n.case_id,
                    reason=n.reason,
                    payload=n.payload,
                    attempts=n.attempts,
                )
            )
        return out

    async def notification_done(self, notification_id: int, error: str | None) -> None:
        await anyio.lowlevel.checkpoint()
        self._p._rpc("notification_done")
        n = self._p.notifications[notification_id - 1]
        n.sent_at = self._p.clock.now() if error is None else None
        n.last_error = error
        self._p.changed()

    async def call_history(self, call_id: str) -> list[ThreadEntry]:
        await anyio.lowlevel.checkpoint()
        self._p._rpc("call_history")
        return self._p.thread(call_id)


def call_thread(
    cases: Mapping[UUID, MemCase],
    sessions: Mapping[UUID, MemSession],
    all_messages: Sequence[HumanMessage],
    call_id: str,
) -> list[ThreadEntry]:
    """`hitl_call_history`: every case a session of this call belongs to, by first ask."""
    first_asked: dict[UUID, datetime] = {}
    for session in sessions.values():
        if session.retell_call_id == call_id:
            seen = first_asked.get(session.case_id)
            if seen is None or session.created_at < seen:
                first_asked[session.case_id] = session.created_at
    entries = []
    for case_id, asked_at in first_asked.items():
        case = cases[case_id]
        messages = sorted(
            (m for m in all_messages if m.case_id == case_id), key=lambda m: m.created_at
        )
        answer = next((m for m in messages if m.message_id == case.answer_message_id), None)
        entries.append(
            ThreadEntry(
                case_id=case_id,
                question=case.question,
                status=case.status,
                asked_at=asked_at,
                answer=answer.content if answer else None,
                answer_kind=answer.kind if answer else None,
                answered_at=case.answered_at,
                exchanges=tuple(
                    ThreadMessage(
                        sender_type=m.sender_type,
                        kind=m.kind,
                        content=m.content,
                        created_at=m.created_at,
                    )
                    for m in messages
                ),
            )
        )
    return sorted(entries, key=lambda e: e.asked_at)


def expire_sessions(p: UpkeepHost) -> int:
    """What the cron job does (`hitl_expire_sessions`): open cases past their answerable
    window become `expired`, then waiting sessions past their deadline or of an expired case
    become `expired`. Returns how many rows changed."""
    now = p.clock.now()
    cases = [c for c in p.cases.values() if c.status == "open" and c.expires_at < now]
    for case in cases:
        case.status = "expired"
    expired = [
        s
        for s in p.sessions.values()
        if s.status == "waiting" and (s.expires_at < now or p.cases[s.case_id].status == "expired")
    ]
    for session in expired:
        p.set_session_status(session, "expired")
    p.expiry_last_run = now
    p.changed()
    return len(expired) + len(cases)
