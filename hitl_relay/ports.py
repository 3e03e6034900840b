"""The ports: what the relay core needs from the platform, as `typing.Protocol`s.

The core (`relay.py` and its parts) reaches the platform only through this module.
`adapters/supabase.py` (production: PostgREST RPC + Realtime) and `adapters/memory.py` (an
in-memory twin for tests) implement it, and one contract test suite (`tests/contract/`) runs
against both.

How the core uses the ports, in the order that loses nothing (design.md):

    async with channel.subscribe(case_id) as sub:   ─┐ concurrently: neither waits
    opened = await store.open_case(OpenCase(...))    ─┘ for the other
    found = await store.reply(opened.case_id)         catch-up read (anything sent before the
                                                      join was confirmed, or a retried call)
    async for event in sub:                           HumanMessage / SessionEvent / Reconnected
        Reconnected → store.reply(...) again          (the gap while not listening)
        WakeUp → store.reply(...) again               (an event nobody proved: read, not believe)
    await store.close_session(opened.session_id, outcome, detail)

An operator may reply with a question instead of an answer (a human message of kind
`clarification`): the catch-up read returns it when there is no answer, and the wait ends with
`needs_info`. The agent asks the caller and the follow-up runs `continue_case` (instead of
`open_case`) on the same case and channel. Every relay case of one call belongs to the call's
thread (`call_history`), which the platform attaches to each new case of the call.

Every adapter method raises only `hitl_relay.errors` types: `InvalidRequest` for input the
platform refuses (never retried), `PlatformUnavailable` for anything transport- or server-side
(counted by the circuit breaker, retried when the call is idempotent). Nothing else escapes,
except `anyio`/`asyncio` cancellation, which every method must let through untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

import anyio

from hitl_relay.case_values import (
    Answer,
    ChannelEvent,
    Clarification,
    ContinueCase,
    HumanMessage,
    MessageKind,
    OpenCase,
    OpenedCase,
    Reconnected,
    SenderType,
    SessionEvent,
    SessionOutcome,
    SessionStatus,
    ThreadEntry,
    ThreadMessage,
    Urgency,
    WakeUp,
)
from hitl_relay.ops_ports import (
    Check,
    EscalationStore,
    JobHealth,
    JobHealthSource,
    Notification,
    Notifier,
    PlatformReadiness,
    ReadinessProbe,
    RealtimeCounts,
    RecoveredSessions,
    SessionRecovery,
    SuccessMetrics,
    SuccessMetricsSource,
)
from hitl_relay.service_ports import AuditStore, CallbackOutbox, RateLimitStore

# The values and the operations ports live in their own modules; re-exported here, the one
# import path the core, the adapters and the tests use.
__all__ = [
    "CATCH_UP_BATCH_MAX",
    "EXPECTED_SCHEMA_VERSION",
    "Answer",
    "Backend",
    "CaseChannel",
    "CaseStore",
    "ChannelEvent",
    "Check",
    "Clarification",
    "Clock",
    "ContinueCase",
    "EscalationStore",
    "HumanMessage",
    "JobHealth",
    "JobHealthSource",
    "MessageKind",
    "Notification",
    "Notifier",
    "OpenCase",
    "OpenedCase",
    "OperatorPresence",
    "Platform",
    "PlatformReadiness",
    "ReadinessProbe",
    "RealtimeCounts",
    "Reconnected",
    "RecoveredSessions",
    "SenderType",
    "SessionEvent",
    "SessionOutcome",
    "SessionRecovery",
    "SessionStatus",
    "Subscription",
    "SuccessMetrics",
    "SuccessMetricsSource",
    "ThreadEntry",
    "ThreadMessage",
    "Urgency",
    "WakeUp",
]

# The version of the newest migration this relay works with: `public.hitl_schema_version()`
# must return it. A migration that changes the contract redefines the function with its own
# version and bumps this constant (tests/db/test_schema_version.py enforces both); the readiness
# probe (`hitl_relay.readiness`) compares against it.
EXPECTED_SCHEMA_VERSION = "20261206900000"

# The most case ids one batched catch-up read (`CaseStore.replies`) takes; `hitl_case_replies`
# refuses more (the contract tests hold both stores to it).
CATCH_UP_BATCH_MAX = 500


@runtime_checkable
class Subscription(Protocol):
    """A confirmed-joined subscription to `case:<case_id>`, delivering events in arrival order.

    Iterate it (`async for event in sub`) or call `receive()`. Only events of its own case are
    delivered. Events are buffered from the moment the join was confirmed until read (no
    loss while the core is busy, e.g. doing the catch-up read).
    """

    @property
    def case_id(self) -> UUID: ...

    async def receive(self) -> ChannelEvent:
        """The next event; blocks until one arrives.

        When the transport drops, the adapter rejoins on its own (with backoff) and delivers
        `Reconnected` once the rejoin is confirmed. Raises `PlatformUnavailable` only when the
        subscription is lost for good (rejoining refused or impossible); after that, every call
        raises it again. Cancellation passes through and leaves the subscription usable.
        """
        ...

    def __aiter__(self) -> Subscription: ...

    async def __anext__(self) -> ChannelEvent: ...


@runtime_checkable
class CaseStore(Protocol):
    """Durable case state, through the platform's RPCs. Every method is one transaction."""

    async def open_case(self, request: OpenCase) -> OpenedCase:
        """`hitl_open_case`: create the case and its `waiting` session, or join the existing one.

        Idempotent on `request.idempotency_key` (default call id + sha256 of the question):
        calling it twice, concurrently or later, yields one case and one session; the second
        call returns `existed=True` and the first call's `case_id` and `session_id`. A retry
        after that session timed out (or was cancelled / failed) re-opens it as `waiting` with a
        new deadline. Safe to retry on `PlatformUnavailable`.

        Raises `InvalidRequest(field, rule)` when the platform refuses the input (nothing is
        written), `PlatformUnavailable` otherwise.
        """
        ...

    async def open_case_no_operator(self, request: OpenCase) -> OpenedCase:
        """`hitl_open_case_no_operator`: nobody is on duty, so record the question all the same.

        In one transaction: what `open_case` does (same validation, same idempotency, the case
        open in the operators' queue), then the session is closed as `no_operator` (nobody
        waits on it), and the result's `status` is `no_operator`. The session is left as
        `open_case` left it, and `status` says so, when the case already has an answer (a
        retry: `waiting`, the relay reads the answer) or another relay is waiting on it
        (`waiting`). Safe to retry on `PlatformUnavailable`.

        Raises what `open_case` raises.
        """
        ...

    async def case_status(self, case_id: UUID) -> str | None:
        """`hitl_case_status`: the case's status (`open`, `answered`, `expired`, ...), or None
        for a case id that does not exist (`get_human_answer` then names `case_id`).

        Read-only, so safe to retry. Raises `PlatformUnavailable`.
        """
        ...

    async def close_session(
        self, session_id: UUID, status: SessionOutcome, detail: Mapping[str, Any] | None = None
    ) -> bool:
        """`hitl_close_session`: move a `waiting` session to `status`; `detail` goes to the audit.

        Returns True if this call changed it, False if it was no longer `waiting` (someone else
        closed it, or the cron job expired it): closing twice is harmless. Raises
        `NotFound("session <id>")` for an unknown session, `PlatformUnavailable` otherwise.
        """
        ...

    async def continue_case(self, request: ContinueCase) -> OpenedCase:
        """`hitl_continue_case`: the follow-up of a `needs_info` result, on the same case.

        In one transaction: adds the caller's reply (`request.question`) to the case as an `ai`
        message of kind `note` (which makes any earlier clarification no longer pending), moves
        any still `waiting` session of the case to `needs_info` (superseded), and opens a new
        `waiting` session with deadline now + `timeout_seconds`. Returns the same shape as
        `open_case` with `case_id == request.case_id`, `existed=False`.

        Idempotent on call id + case id + sha256 of the reply: a retry writes nothing and
        returns the first call's session (`existed=True`, its status as it is now, which may
        already be `answered` or closed). A case that already has an answer may be continued:
        the reply is recorded and the caller's catch-up read then finds the answer at once.

        Raises `InvalidRequest("case_id", rule)` with rule `no such case`, `belongs to another
        call` (the case's `retell_call_id` differs) or `is <status> and can no longer be
        continued` (status expired, cancelled or closed), `InvalidRequest(field, rule)` for a bad
        reply / id / timeout (nothing is written), `PlatformUnavailable` otherwise (safe to retry).
        """
        ...

    async def reply(self, case_id: UUID) -> Answer | Clarification | None:
        """`hitl_case_reply`: the case's decided answer (the first human answer) if there is one,
        else its pending clarification (the newest human `clarification` message with no `ai`
        message after it), else None (also for an unknown case); one read, the relay's
        catch-up. An answer always wins over a clarification.

        Read-only, so safe to retry. Raises `PlatformUnavailable`.
        """
        ...

    async def replies(self, case_ids: Sequence[UUID]) -> dict[UUID, Answer | Clarification]:
        """`hitl_case_replies`: `reply` for several cases in one read, keyed by case id; only the
        cases that have an answer or a pending clarification are in it (the relay's periodic
        catch-up for broadcasts Realtime dropped). At most `CATCH_UP_BATCH_MAX` ids.

        Read-only, so safe to retry. Raises `InvalidRequest("p_case_ids", rule)` over the
        bound, `PlatformUnavailable` otherwise.
        """
        ...

    async def session_status(self, session_id: UUID) -> SessionStatus | None:
        """`hitl_session_status`: the session's committed status, None for an unknown session.

        Read-only, so safe to retry. Raises `PlatformUnavailable`.
        """
        ...

    async def owned(self, case_id: UUID, owner: str) -> bool:
        """`hitl_case_owned`: whether `case_id` was opened for `owner` (an API key's
        fingerprint): some session of it has an idempotency key starting with `owner + ':'`.
        False for an unknown case too, so a foreign case looks exactly like an unknown one.

        Read-only, so safe to retry. Raises `PlatformUnavailable`.
        """
        ...

    async def call_history(self, call_id: str) -> list[ThreadEntry]:
        """`hitl_call_history`: the call's thread, one entry per relay case that any session
        with this `retell_call_id` belongs to, ordered by when it was first asked; each entry's
        `exchanges` are all messages of the case, oldest first. Empty for an unknown call.

        Read-only, so safe to retry. Raises `PlatformUnavailable`.
        """
        ...


@runtime_checkable
class CaseChannel(Protocol):
    """Realtime subscriptions to case channels (`case:<uuid>`, private)."""

    def subscribe(self, case_id: UUID) -> AbstractAsyncContextManager[Subscription]:
        """Join `case:<case_id>`; the context manager leaves the channel on exit.

        `__aenter__` returns only after the platform CONFIRMED the join (phx_reply ok / the
        SUBSCRIBED state): from then on every broadcast on the topic is delivered. It raises
        `PlatformUnavailable` if the join fails or is refused. The channel may be joined before
        the case row exists. Exit (normal, error or cancellation) always leaves the channel
        and frees its slot on the socket, and must finish even inside a cancelled scope (it is
        run shielded by the core). Two subscriptions to the same case are independent.

        The core enters it inside a task group and may exit it in another scope, so it must
        not hold a cancel scope or task group open between `__aenter__` and `__aexit__`
        (background work such as socket readers belongs to the adapter's own long-lived task
        group, not to the subscription).
        """
        ...


@runtime_checkable
class OperatorPresence(Protocol):
    """How many operators are present on the `operators` channel (Realtime presence)."""

    async def operators_online(self) -> int | None:
        """The number of distinct operators present, cached for at most the configured TTL
        (≤ 1 s), so it is cheap on the hot path.

        None means unknown (presence not joined yet, or lost): the core then does NOT refuse
        the call for want of operators. Never raises for transport problems (returns None).
        """
        ...


@runtime_checkable
class Clock(Protocol):
    """Time, injectable so tests drive deadlines without waiting."""

    def monotonic(self) -> float:
        """Seconds on a monotonic scale (deadlines, durations)."""
        ...

    def now(self) -> datetime:
        """The wall-clock time, timezone-aware UTC (timestamps for logs and delivery latency)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for `seconds` of this clock's time (a fake clock wakes when advanced)."""
        ...

    def cancel_at(self, deadline: float) -> AbstractContextManager[anyio.CancelScope]:
        """A cancel scope this clock cancels at `deadline` (its `monotonic()` scale): a
        deadline without a task of its own to sleep until it."""
        ...


@dataclass(frozen=True, slots=True)
class Backend:
    """The three platform ports a running relay uses, built together by one adapter, plus
    its readiness probe and the edge's service ports (`service_ports`) when it has them, all
    on the adapter's one connection."""

    store: CaseStore
    channel: CaseChannel
    presence: OperatorPresence
    readiness: ReadinessProbe | None = None
    audit: AuditStore | None = None
    rate_limits: RateLimitStore | None = None
    outbox: CallbackOutbox | None = None

    @classmethod
    def of(cls, platform: Platform) -> Backend:
        """Every port of an adapter whose one object is also its readiness probe and whose
        `services` implement the three service ports."""
        services = platform.services
        return cls(
            store=platform.store,
            channel=platform.channel,
            presence=platform.presence,
            readiness=platform,
            audit=services,
            rate_limits=services,
            outbox=services,
        )


class _Services(AuditStore, RateLimitStore, CallbackOutbox, Protocol):
    pass


class Platform(ReadinessProbe, Protocol):
    """An adapter's platform object (`Backend.of`)."""

    @property
    def store(self) -> CaseStore: ...

    @property
    def channel(self) -> CaseChannel: ...

    @property
    def presence(self) -> OperatorPresence: ...

    @property
    def services(self) -> _Services: ...
