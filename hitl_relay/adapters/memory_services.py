"""The memory twin of the edge's service ports (`hitl_relay.service_ports`): the audit trail,
the shared rate-limit counters and the callback outbox, with the rules of their SQL
(`hil_audit`, `hitl_rate_limit`, `hitl_callbacks_claim` / `hitl_callback_result` and the two
triggers that queue a callback).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import anyio

from hitl_relay.errors import InvalidRequest
from hitl_relay.ports import Clock, HumanMessage
from hitl_relay.service_ports import CallbackOutcome, QueuedCallback, RateVerdict, WindowLimit

_OUTCOMES = ("delivered", "failed", "retry")


@dataclass
class MemCallback:
    id: int
    case_id: UUID
    session_id: UUID | None
    event: str
    created_at: datetime
    next_attempt_at: datetime
    attempts: int = 0
    claimed_until: datetime | None = None
    delivered_at: datetime | None = None
    failed_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class CallbackCase:
    """What the outbox reads of a case when it hands a callback out."""

    callback_url: str | None
    webhook_secret: str | None
    call_id: str | None
    answer: HumanMessage | None
    answered_at: datetime | None


class MemoryServices:
    """`AuditStore`, `RateLimitStore` and `CallbackOutbox` over this process's memory."""

    def __init__(
        self,
        clock: Clock,
        case_of: Callable[[UUID], CallbackCase | None],
        wall: Callable[[], float] | None = None,
    ) -> None:
        self._clock = clock
        self._case_of = case_of
        # Rate-limit windows are aligned to the epoch, as in SQL (`clock_timestamp()`).
        self._wall = wall or (lambda: clock.now().timestamp())
        self.audit_rows: list[dict[str, Any]] = []
        self._hits: dict[tuple[str, int, int], int] = {}
        self.callbacks: list[MemCallback] = []

    # ------------------------------------------------------------ audit

    async def insert_audit(self, rows: Sequence[Mapping[str, Any]]) -> None:
        await anyio.lowlevel.checkpoint()
        for row in rows:
            for name in ("actor", "action"):
                if not isinstance(row.get(name), str):
                    raise InvalidRequest(name, "is required")
            self.audit_rows.append({**row, "at": self._clock.now()})

    # ------------------------------------------------------------ rate limits

    async def rate_limit(
        self, key: str, limits: Sequence[WindowLimit], *, hit: bool
    ) -> RateVerdict:
        await anyio.lowlevel.checkpoint()
        if not 1 <= len(key) <= 200:
            raise InvalidRequest("p_key", "must be 1 to 200 characters")
        if not 1 <= len(limits) <= 10:
            raise InvalidRequest(
                "p_limits", "must be an array of 1 to 10 {limit, window_seconds} objects"
            )
        if any(
            not (1 <= w.limit <= 1_000_000_000 and 1 <= w.window_seconds <= 2_678_400)
            for w in limits
        ):
            raise InvalidRequest("p_limits", "each limit must be 1 to 1e9 per 1 s to 31 days")
        now = self._wall()
        wait = 0.0
        for w in limits:
            window = w.window_seconds
            start = math.floor(now / window) * window
            elapsed = (now - start) / window
            current = self._hits.get((key, window, start), 0)
            previous = self._hits.get((key, window, start - window), 0)
            if previous * (1 - elapsed) + current + 1 > w.limit:
                if current + 1 <= w.limit:
                    item_wait = window * ((1 - elapsed) - (w.limit - 1 - current) / previous)
                else:
                    item_wait = window * (1 - elapsed) + window * max(
                        0.0, 1 - (w.limit - 1) / max(current, 1)
                    )
                wait = max(wait, item_wait, 0.001)
        if wait > 0:
            return RateVerdict(False, round(wait, 3))
        if hit:
            for w in limits:
                start = math.floor(now / w.window_seconds) * w.window_seconds
                slot = (key, w.window_seconds, start)
                self._hits[slot] = self._hits.get(slot, 0) + 1
                self._hits.pop((key, w.window_seconds, start - 2 * w.window_seconds), None)
        return RateVerdict(True, 0.0)

    # ------------------------------------------------------------ callback outbox

    def queue_callback(self, case_id: UUID, event: str, session_id: UUID | None = None) -> None:
        """What the `hitl_callback_on_answer` / `_on_timeout` triggers do: one callback per
        case and event, for a case with a callback URL."""
        case = self._case_of(case_id)
        if case is None or not case.callback_url:
            return
        if event == "timeout" and case.answer is not None:
            return
        if any(c.case_id == case_id and c.event == event for c in self.callbacks):
            return
        now = self._clock.now()
        self.callbacks.append(
            MemCallback(len(self.callbacks) + 1, case_id, session_id, event, now, now)
        )

    async def claim_callbacks(self, limit: int, lease_s: int) -> list[QueuedCallback]:
        await anyio.lowlevel.checkpoint()
        if not 1 <= limit <= 100:
            raise InvalidRequest("p_limit", "must be between 1 and 100")
        if not 5 <= lease_s <= 3600:
            raise InvalidRequest("p_lease_seconds", "must be between 5 and 3600")
        now = self._clock.now()
        due = [
            c
            for c in self.callbacks
            if c.delivered_at is None
            and c.failed_at is None
            and c.next_attempt_at <= now
            and (c.claimed_until is None or c.claimed_until < now)
        ]
        due.sort(key=lambda c: (c.next_attempt_at, c.id))
        claimed: list[QueuedCallback] = []
        for c in due[:limit]:
            c.attempts += 1
            c.claimed_until = now + timedelta(seconds=lease_s)
            claimed.append(self._handed_out(c))
        return claimed

    def _handed_out(self, c: MemCallback) -> QueuedCallback:
        case = self._case_of(c.case_id)
        answer = case.answer if case is not None and c.event == "answer" else None
        if c.event == "timeout":
            status = "timeout"
        elif answer is None or answer.kind == "cannot_answer" or not answer.content.strip():
            status = "unclear_answer"
        else:
            status = "answered"
        return QueuedCallback(
            id=c.id,
            case_id=str(c.case_id),
            event=c.event,
            attempts=c.attempts,
            callback_url=case.callback_url if case else None,
            webhook_secret=case.webhook_secret if case else None,
            payload={
                "event": c.event,
                "case_id": str(c.case_id),
                "session_id": str(c.session_id) if c.session_id else None,
                "call_id": case.call_id if case else None,
                "status": status,
                "answer": answer.content if answer else None,
                "answer_kind": answer.kind if answer else None,
                "answered_at": case.answered_at.isoformat()
                if answer and case and case.answered_at
                else None,
                "queued_at": c.created_at.isoformat(),
            },
        )

    async def callback_result(
        self,
        callback_id: int,
        outcome: CallbackOutcome,
        detail: Mapping[str, Any],
        retry_in_s: int,
    ) -> bool:
        await anyio.lowlevel.checkpoint()
        if outcome not in _OUTCOMES:
            raise InvalidRequest("p_outcome", "must be one of " + ", ".join(_OUTCOMES))
        found = [c for c in self.callbacks if c.id == callback_id]
        if not found or found[0].delivered_at is not None or found[0].failed_at is not None:
            return False
        c = found[0]
        now = self._clock.now()
        c.delivered_at = now if outcome == "delivered" else None
        c.failed_at = now if outcome == "failed" else None
        if outcome == "retry":
            c.next_attempt_at = now + timedelta(seconds=max(1, min(retry_in_s, 86_400)))
        c.claimed_until = None
        status = detail.get("status")
        c.last_status = int(status) if isinstance(status, int) else None
        error = detail.get("error")
        c.last_error = str(error)[:500] if error is not None else None
        self.audit_rows.append(
            {
                "actor": "relay",
                "action": f"callback_{c.event}",
                "case_id": str(c.case_id),
                "session_id": str(c.session_id) if c.session_id else None,
                "outcome": outcome,
                "detail": {**detail, "attempts": c.attempts},
                "at": now,
            }
        )
        return True
