"""The ports of the HTTP edge's services: the audit trail, shared rate-limit counters and the
callback outbox. Implemented in `adapters/` (Supabase, on the same client as the case store) and
in the memory twin; nothing else knows how the platform stores them.

Every method raises `PlatformUnavailable` when the platform does not answer or refuses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

CallbackOutcome = Literal["delivered", "failed", "retry"]


@runtime_checkable
class AuditStore(Protocol):
    async def insert_audit(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append rows (actor, action, outcome, case_id, session_id, detail) to the trail."""
        ...


@dataclass(frozen=True, slots=True)
class WindowLimit:
    """At most `limit` hits per `window_seconds`."""

    limit: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class RateVerdict:
    allowed: bool
    retry_after_s: float = 0.0


@runtime_checkable
class RateLimitStore(Protocol):
    async def rate_limit(
        self, key: str, limits: Sequence[WindowLimit], *, hit: bool
    ) -> RateVerdict:
        """Check one request against every limit for `key` (sliding-window counters shared by
        every replica); with `hit`, count it when allowed. A refused request is not counted."""
        ...


@dataclass(frozen=True, slots=True)
class QueuedCallback:
    """One claimed callback: where it goes, the secret it is signed with, what it carries."""

    id: int
    case_id: str
    event: str
    attempts: int
    callback_url: str | None
    webhook_secret: str | None
    payload: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class CallbackOutbox(Protocol):
    async def claim_callbacks(self, limit: int, lease_s: int) -> list[QueuedCallback]:
        """Claim up to `limit` due callbacks for `lease_s`; a claim not reported back in time is
        claimed again by anyone."""
        ...

    async def callback_result(
        self,
        callback_id: int,
        outcome: CallbackOutcome,
        detail: Mapping[str, Any],
        retry_in_s: int,
    ) -> bool:
        """Report one attempt (`retry`: due again in `retry_in_s`); audited by the platform.
        False when the callback was already settled."""
        ...
