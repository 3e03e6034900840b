"""The operators' side of supabase/migrations/20261206500000_hitl_claim_route_options.sql, kept in
one module (`MemoryClaims`, reached as `MemoryPlatform.claims`): a claim is one holder at a
time, stamped with claim_ttl_seconds and live only while its holder is present (a heartbeat
while available within claim_presence_seconds); an operator may claim and answer only cases
whose skills they all hold, and not a case someone else holds; going away ends presence and
releases the operator's claims at once; `queue` is hitl_operator_queue's list and order;
`escalate` is hitl_escalate (lapsed claims released, then the unclaimed rule, repeated until
priority 5, and the near-deadline rule, once per case: 20261206800200).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from uuid import UUID

from hitl_relay.adapters.memory_state import (
    ESCALATE_UNCLAIMED_S,
    MemCase,
    MemNotification,
    MemSession,
)
from hitl_relay.errors import InvalidRequest
from hitl_relay.ports import Clock, SenderType


class ClaimsHost(Protocol):
    """What the claims read and write of the twin's platform (`MemoryPlatform`)."""

    clock: Clock
    cases: dict[UUID, MemCase]
    sessions: dict[UUID, MemSession]
    notifications: list[MemNotification]

    def changed(self) -> None: ...


CLAIM_TTL_S = 120  # hil_settings.claim_ttl_seconds
CLAIM_PRESENCE_S = 90  # hil_settings.claim_presence_seconds
ESCALATE_BEFORE_DEADLINE_S = 10  # hil_settings.escalate_before_deadline_seconds


@dataclass
class MemClaim:
    holder: str
    claimed_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class ClaimRecord:
    """A row of `hil_audit` written by a claim or a release (actor, action, case)."""

    actor: str
    action: str  # claim | release
    case_id: UUID
    at: datetime


class MemoryClaims:
    """Claims, routing and escalation on the twin, as the SQL decides them."""

    def __init__(self, platform: ClaimsHost) -> None:
        self._p = platform
        self.held: dict[UUID, MemClaim] = {}
        self.skills: dict[str, frozenset[str]] = {}  # app_metadata.hitl_skills per operator
        # operator_activity: (status, last_seen_at) of each operator's latest heartbeat
        self.activity: dict[str, tuple[str, datetime]] = {}
        self.audit: list[ClaimRecord] = []

    # -- the operator's side (the console through PostgREST and RPC)
    def set_skills(self, operator: str, skills: Sequence[str]) -> None:
        """What an administrator writes in the operator's app_metadata.hitl_skills."""
        self.skills[operator] = frozenset(k.lower() for k in skills)

    def heartbeat(self, operator: str, status: str = "available") -> None:
        """`hitl_operator_heartbeat`: `available` records the operator as seen now; `away`
        ends their presence at once (their newest activity is `away`) and releases their
        claims (20261206800100)."""
        if status not in ("available", "away"):
            raise InvalidRequest("p_status", "must be available or away")
        self.activity[operator] = (status, self._p.clock.now())
        if status == "away":
            self.release_all(operator)

    def claim(self, operator: str, case_id: UUID) -> bool:
        """`PATCH cases {claimed_by}` under RLS: False when the row is not the operator's to
        update (claimed by someone else, skills missing, not open); refused when the operator
        is not present."""
        case = self._p.cases.get(case_id)
        if case is None or not self._may_update(operator, case):
            return False
        if not self.present(operator):
            raise InvalidRequest(
                "claimed_by", "you are not available (no heartbeat seen): go available first"
            )
        now = self._p.clock.now()
        current = self.held.get(case_id)
        if current is None or current.holder != operator or current.expires_at <= now:
            self.held[case_id] = MemClaim(operator, now, now + timedelta(seconds=CLAIM_TTL_S))
            if current is None or current.holder != operator:
                self.audit.append(ClaimRecord(operator, "claim", case_id, now))
        self._p.changed()
        return True

    def release(self, operator: str, case_id: UUID) -> bool:
        """`PATCH cases {claimed_by: null}` under RLS: False when not the operator's to update."""
        case = self._p.cases.get(case_id)
        if case is None or not self._may_update(operator, case):
            return False
        self._drop(case_id, operator)
        return True

    def release_all(self, operator: str) -> int:
        """`hitl_release_claims`: every open case this operator holds goes back."""
        mine = [
            cid
            for cid, c in self.held.items()
            if c.holder == operator and self._p.cases[cid].status == "open"
        ]
        for case_id in mine:
            self._drop(case_id, operator)
        return len(mine)

    def queue(self, operator: str) -> list[UUID]:
        """`hitl_operator_queue`: the open cases this operator can take, callers still on the
        line first, then highest priority, nearest deadline, oldest."""
        now = self._p.clock.now()
        rows = []
        for case in self._p.cases.values():
            if case.status != "open" or case.expires_at <= now:
                continue
            if not set(case.skills) <= self.skills.get(operator, frozenset()):
                continue
            claim = self.live(case.id)
            if claim is not None and claim.holder != operator:
                continue
            deadline = self.deadline(case.id)
            rows.append(
                (
                    deadline is None,
                    -case.priority,
                    deadline or datetime.max.replace(tzinfo=now.tzinfo),
                    case.created_at,
                    case.id,
                )
            )
        return [row[-1] for row in sorted(rows)]

    def holder(self, case_id: UUID) -> str | None:
        """Who holds the case's live claim, if anyone."""
        claim = self.live(case_id)
        return None if claim is None else claim.holder

    # -- the rules
    def present(self, operator: str) -> bool:
        seen = self.activity.get(operator)
        return (
            seen is not None
            and seen[0] == "available"
            and seen[1] >= self._p.clock.now() - timedelta(seconds=CLAIM_PRESENCE_S)
        )

    def live(self, case_id: UUID) -> MemClaim | None:
        """hitl_claim_live: unexpired, and its holder present."""
        claim = self.held.get(case_id)
        if claim is None or claim.expires_at <= self._p.clock.now():
            return None
        return claim if self.present(claim.holder) else None

    def deadline(self, case_id: UUID) -> datetime | None:
        """The caller's deadline: the latest waiting session's."""
        waiting = [
            s.expires_at
            for s in self._p.sessions.values()
            if s.case_id == case_id and s.status == "waiting"
        ]
        return max(waiting, default=None)

    def check_message(self, case: MemCase, sender_type: SenderType, sender: str | None) -> None:
        """hitl_before_message for an operator's message: skills, and nobody else's claim."""
        if sender_type != "human" or sender is None:
            return
        if not set(case.skills) <= self.skills.get(sender, frozenset()):
            raise InvalidRequest("case_id", "needs skills you do not have")
        claim = self.live(case.id)
        if claim is not None and claim.holder != sender:
            raise InvalidRequest("case_id", "is claimed by another operator")

    def _may_update(self, operator: str, case: MemCase) -> bool:
        """The claim policy's USING clause."""
        if case.status != "open" or not set(case.skills) <= self.skills.get(operator, frozenset()):
            return False
        claim = self.live(case.id)
        return claim is None or claim.holder == operator

    def _drop(self, case_id: UUID, actor: str) -> None:
        if self.held.pop(case_id, None) is not None:
            self.audit.append(ClaimRecord(actor, "release", case_id, self._p.clock.now()))
            self._p.changed()

    def escalate(self) -> int:
        """hitl_escalate: release lapsed claims, then escalate each waiting case: unclaimed
        past its priority's threshold since it was opened or last escalated (again and again,
        until priority 5), or claimed with its caller's deadline within
        ESCALATE_BEFORE_DEADLINE_S (once). The first escalation of each reason is notified."""
        p = self._p
        now = p.clock.now()
        for case_id, lapsed in list(self.held.items()):
            if p.cases[case_id].status == "open" and self.live(case_id) is None:
                self._drop(case_id, lapsed.holder)
        count = 0
        waiting = sorted(
            (
                c
                for c in p.cases.values()
                if c.status == "open" and c.answer_message_id is None and c.expires_at > now
            ),
            key=lambda c: (-c.priority, c.created_at),
        )
        for case in waiting:
            claim = self.live(case.id)
            deadline = self.deadline(case.id)
            threshold = ESCALATE_UNCLAIMED_S.get(case.priority)
            reason: str | None = None
            waited_since = max(case.created_at, case.escalated_at or case.created_at)
            if (
                claim is None
                and ("unclaimed" not in case.escalated_for or case.priority < 5)
                and threshold is not None
                and (now - waited_since).total_seconds() >= threshold
            ):
                reason = "unclaimed"
            elif (
                claim is not None
                and "deadline" not in case.escalated_for
                and deadline is not None
                and now < deadline <= now + timedelta(seconds=ESCALATE_BEFORE_DEADLINE_S)
            ):
                reason = "deadline"
            if reason is None:
                continue
            count += 1
            previous, case.priority = case.priority, min(5, case.priority + 1)
            case.escalated_at = now
            if reason in case.escalated_for:
                continue  # a repeat: the priority and the consoles' alert, no notification
            case.escalated_for.append(reason)
            p.notifications.append(
                MemNotification(
                    id=len(p.notifications) + 1,
                    case_id=case.id,
                    reason=reason,
                    payload={
                        "case_id": str(case.id),
                        "reason": reason,
                        "priority": case.priority,
                        "previous_priority": previous,
                        "claimed_by": None if claim is None else claim.holder,
                        "deadline_at": None if deadline is None else deadline.isoformat(),
                        "question": case.question,
                    },
                )
            )
        p.changed()
        return count
