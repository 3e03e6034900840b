"""The operations ports beside the case flow: session recovery at start, the success figures,
the health of the database's jobs, escalation notices and their notifiers, and the platform's
readiness checks. `ports` re-exports them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from uuid import UUID


@dataclass(frozen=True, slots=True)
class RecoveredSessions:
    """What `SessionRecovery.recover_sessions` closed: sessions past their deadline `expired`,
    the others `cancelled` (reason "relay restarted")."""

    expired: int
    cancelled: int


@runtime_checkable
class SessionRecovery(Protocol):
    """Session recovery after a relay restart, implemented by the case stores.

    Each relay process has an instance id (`HITL_INSTANCE_ID`); a session records the instance
    waiting on it when it starts (or starts again) waiting. A process that dies takes its
    waiting MCP calls with it; when it starts again it closes those sessions here.
    """

    async def recover_sessions(self, instance_id: str) -> RecoveredSessions:
        """`hitl_recover_sessions`: close every `waiting` session of `instance_id`, past its
        deadline as `expired`, the rest as `cancelled`, detail {"reason": "relay restarted"}.

        Cases stay open and answerable (`get_human_answer`), and a retried call (same
        idempotency key) re-opens its session as `waiting` on the same case. Sessions of other
        instances, or of none, are untouched. Raises `InvalidRequest("p_instance_id", rule)`
        for an empty or over-long id, `PlatformUnavailable` otherwise (safe to retry).
        """
        ...


@dataclass(frozen=True, slots=True)
class SuccessMetrics:
    """The integration plan's success figures over a window (`hitl_success_metrics`).

    Relay cases created in the window, each counted by its last session; a figure is None when
    the window has nothing to compute it from (no finished case, no operator availability).
    Rates and utilisation are fractions (0.95, not 95), rounded as the SQL rounds them.
    A session closed by "cannot answer" is not a success: answered + cannot_answer + timed_out +
    other = finished (other: failed, cancelled, no operator, a question back left unanswered).
    """

    cases: int
    finished: int
    answered: int
    cannot_answer: int
    timed_out: int
    other: int
    avg_response_s: float | None
    success_rate: float | None
    cannot_answer_rate: float | None
    timeout_rate: float | None
    operator_utilisation: float | None
    # Utilisation = handled_s / available_s (merged availability intervals, clipped).
    handled_s: float
    available_s: float


@runtime_checkable
class SuccessMetricsSource(Protocol):
    """The plan's success figures, read from the platform, by the case stores."""

    async def success_metrics(self, start: datetime, end: datetime) -> SuccessMetrics:
        """`hitl_success_metrics(start, end)`: the figures over [start, end).

        Read-only, so safe to retry. Raises `PlatformUnavailable`.
        """
        ...


@dataclass(frozen=True, slots=True)
class JobHealth:
    """The expiry job (`hitl-expire-sessions`, pg_cron) as the platform sees it: whether it is
    scheduled in this database, and when its newest succeeded run ended (None: none yet)."""

    scheduled: bool
    last_success: datetime | None


@runtime_checkable
class JobHealthSource(Protocol):
    """Whether the expiry job runs (`hitl_expiry_job`), for the "expiry job stale" alert;
    implemented by the case stores."""

    async def expiry_job(self) -> JobHealth:
        """Read-only, so safe to retry. Raises `PlatformUnavailable`."""
        ...


@dataclass(frozen=True, slots=True)
class Notification:
    """An escalation to announce (a row of `hil_notifications`, taken by
    `hitl_pending_notifications`): `reason` is `unclaimed` or `deadline`; `payload` carries
    the case id, question, new priority and deadline."""

    id: int
    case_id: UUID | None
    reason: str
    payload: Mapping[str, Any]
    attempts: int


@runtime_checkable
class EscalationStore(Protocol):
    """Escalation on the platform (`hitl_escalate` and its notification outbox)."""

    async def escalate(self) -> int:
        """Run `hitl_escalate()` once: the number of cases escalated now. Safe to call from
        every replica and pg_cron at once. Raises `PlatformUnavailable`."""
        ...

    async def pending_notifications(self, limit: int) -> list[Notification]:
        """Take up to `limit` unsent notifications (each take counts an attempt)."""
        ...

    async def notification_done(self, notification_id: int, error: str | None) -> None:
        """Mark a notification sent (`error` None) or failed for now (it is taken again)."""
        ...


@runtime_checkable
class Notifier(Protocol):
    """One notification channel (a Slack-compatible webhook, e-mail): `send` delivers once or
    raises `DeliveryFailed`; retrying is the caller's business."""

    name: str

    async def send(self, notification: Notification) -> None: ...


@dataclass(frozen=True, slots=True)
class Check:
    """One readiness check: passed or not, why not, and how long it took."""

    ok: bool
    latency_ms: float
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": self.ok, "latency_ms": round(self.latency_ms, 1)}
        if self.reason is not None:
            body["reason"] = self.reason
        return body


@dataclass(frozen=True, slots=True)
class PlatformReadiness:
    """What the platform adapter knows of its own health (`/readyz`, `hitl-relay doctor`).

    `database`: one RPC through the platform reached Postgres; `realtime`: a socket is
    connected and presence on `operators` is joined; `schema_version`: what
    `hitl_schema_version()` returned (None when the database check failed, or the function is
    missing: migrations not applied); `schema_error`: why it could not be read although the
    database answered.
    """

    database: Check
    realtime: Check
    schema_version: str | None
    schema_error: str | None = None


@runtime_checkable
class ReadinessProbe(Protocol):
    """Optional: an adapter that can say whether it is ready to serve calls."""

    async def readiness(self, timeout_s: float) -> PlatformReadiness:
        """Check the database and realtime, each bounded by `timeout_s`. Never raises for
        platform problems (a failed check says why); cancellation passes through."""
        ...


@runtime_checkable
class RealtimeCounts(Protocol):
    """Optional: an adapter that can count its Realtime sockets and joined channels."""

    def realtime_counts(self) -> tuple[int, int]:
        """(sockets open, channels joined) now; cheap enough for every metrics scrape."""
        ...
