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
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable
from uuid import UUID

from hitl_relay.service_ports import AuditStore, CallbackOutbox, RateLimitStore

# The version of the newest migration this relay works with: `public.hitl_schema_version()`
# must return it. A migration that changes the contract redefines the function with its own
# version and bumps this constant (tests/db/test_schema_version.py enforces both); the readiness
# probe (`hitl_relay.readiness`) compares against it.
EXPECTED_SCHEMA_VERSION = "20261206900000"

Urgency = Literal["low", "medium", "high"]
# The statuses `hitl_close_session` accepts (a session is `waiting` until closed);
# `needs_info`: the operator asked back (a clarification) instead of answering.
SessionOutcome = Literal["answered", "timed_out", "expired", "failed", "cancelled", "needs_info"]
# `no_operator`: nobody was on duty; the case was recorded and its session closed at once.
SessionStatus = Literal[
    "waiting",
    "answered",
    "timed_out",
    "expired",
    "failed",
    "cancelled",
    "needs_info",
    "no_operator",
]
MessageKind = Literal["answer", "clarification", "cannot_answer", "note"]
SenderType = Literal["human", "ai", "system"]


@dataclass(frozen=True, slots=True)
class OpenCase:
    """Input of `CaseStore.open_case`: one case plus its waiting session (`hitl_open_case`).

    `case_id` is made by the relay (uuid4) so the channel `case:<case_id>` can be joined before
    the row exists. Field names are the RPC's keys (see `as_rpc_params`).
    """

    case_id: UUID
    question: str
    mcp_session_id: str
    retell_call_id: str
    retell_agent_id: str
    timeout_seconds: int
    context: str | None = None
    caller_info: Mapping[str, Any] = field(default_factory=dict)
    priority: int = 3
    urgency: Urgency = "medium"
    conversation_history: Sequence[Mapping[str, str]] = ()
    callback_url: str | None = None
    webhook_secret: str | None = None
    # None: the platform derives `retell_call_id + ':' + sha256(question)`.
    idempotency_key: str | None = None
    # None: the platform's default (1 h) for how long the case stays answerable.
    case_ttl_seconds: int | None = None
    # One-tap answers offered to the operator (None: free text only).
    options: Sequence[str] | None = None
    # Skills an answering operator must hold (routing); the platform adds the agent id's own.
    skills: Sequence[str] = ()

    def as_rpc_params(self) -> dict[str, Any]:
        """The JSON object `public.hitl_open_case(p jsonb)` takes (None-valued options left out)."""
        params: dict[str, Any] = {
            "case_id": str(self.case_id),
            "question": self.question,
            "context": self.context,
            "mcp_session_id": self.mcp_session_id,
            "retell_call_id": self.retell_call_id,
            "retell_agent_id": self.retell_agent_id,
            "caller_info": dict(self.caller_info),
            "priority": self.priority,
            "urgency": self.urgency,
            "conversation_history": [dict(turn) for turn in self.conversation_history],
            "timeout_seconds": self.timeout_seconds,
        }
        optional = {
            "callback_url": self.callback_url,
            "webhook_secret": self.webhook_secret,
            "idempotency_key": self.idempotency_key,
            "case_ttl_seconds": self.case_ttl_seconds,
            "options": list(self.options) if self.options is not None else None,
            "skills": list(self.skills) if self.skills else None,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return params


@dataclass(frozen=True, slots=True)
class ContinueCase:
    """Input of `CaseStore.continue_case`: the caller's reply to an operator's question, added to
    the SAME case, plus a new `waiting` session on it (`hitl_continue_case`).

    `question` is the caller's reply (the tool's `question` argument of the follow-up call).
    Field names are the RPC's keys (see `as_rpc_params`).
    """

    case_id: UUID
    question: str
    mcp_session_id: str
    retell_call_id: str
    retell_agent_id: str
    timeout_seconds: int

    def as_rpc_params(self) -> dict[str, Any]:
        """The JSON object `public.hitl_continue_case(p jsonb)` takes."""
        return {
            "case_id": str(self.case_id),
            "question": self.question,
            "mcp_session_id": self.mcp_session_id,
            "retell_call_id": self.retell_call_id,
            "retell_agent_id": self.retell_agent_id,
            "timeout_seconds": self.timeout_seconds,
        }


@dataclass(frozen=True, slots=True)
class OpenedCase:
    """Output of `CaseStore.open_case` (the RPC's `{case_id, session_id, expires_at, existed,
    status}`).

    `case_id` may differ from the one proposed: a retry (same idempotency key) returns the
    EXISTING case (`existed=True`). `expires_at` is the session's deadline. `status` is the
    session's status after the call: `waiting`, or `answered` when a retry finds it answered.
    """

    case_id: UUID
    session_id: UUID
    expires_at: datetime
    existed: bool
    status: SessionStatus


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer of a case: the first human message of kind `answer` or `cannot_answer`.

    Decided once by the platform (`cases.answer_message_id`), so every reader sees the same one.
    `content` is verbatim (may be empty or whitespace: the core calls that unclear).
    """

    message_id: UUID
    case_id: UUID
    content: str
    kind: MessageKind
    sender_id: str | None
    created_at: datetime
    # The one-tap option the operator chose (its 0-based index and text), if any.
    option_index: int | None = None
    option: str | None = None


@dataclass(frozen=True, slots=True)
class Clarification:
    """An operator's question back (a human message of kind `clarification`) still awaiting the
    caller's reply: no `ai` message came after it and the case has no answer (what
    `hitl_case_reply` returns when there is no answer)."""

    message_id: UUID
    case_id: UUID
    content: str
    sender_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ThreadMessage:
    """One message of a case in a call's thread (operator, relay or system), oldest first."""

    sender_type: SenderType
    kind: MessageKind
    content: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ThreadEntry:
    """One case of a call's thread (`hitl_call_history`): the question, where it stands, its
    decided answer if any, and every message exchanged on it (clarifications, the caller's
    replies, the answer).

    `status` is the case's status (`open|answered|expired|cancelled|closed`); `asked_at` is when
    its first session started.
    """

    case_id: UUID
    question: str
    status: str
    asked_at: datetime
    answer: str | None
    answer_kind: MessageKind | None
    answered_at: datetime | None
    exchanges: tuple[ThreadMessage, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The entry as `hitl_call_history` renders it in JSON (what `cases.metadata.thread`
        and the `case_opened` broadcast carry)."""
        return {
            "case_id": str(self.case_id),
            "question": self.question,
            "status": self.status,
            "asked_at": self.asked_at.isoformat(),
            "answer": self.answer,
            "answer_kind": self.answer_kind,
            "answered_at": self.answered_at.isoformat() if self.answered_at else None,
            "exchanges": [
                {
                    "sender_type": m.sender_type,
                    "kind": m.kind,
                    "content": m.content,
                    "created_at": m.created_at.isoformat(),
                }
                for m in self.exchanges
            ],
        }


@dataclass(frozen=True, slots=True)
class HumanMessage:
    """A `message` broadcast on `case:<id>`: any message inserted into the case, any sender,
    delivered only when the adapter proved the database sent it (a client's broadcast of the
    same shape arrives as `WakeUp`).

    `is_answer` is the platform's verdict: true for exactly one message per case (the one
    `CaseStore.answer` returns). The core takes a message as the answer only when `is_answer`
    is true; the other kinds (`clarification`, `note`) and senders are for the console and for
    the clarification loop.
    """

    message_id: UUID
    case_id: UUID
    sender_type: SenderType
    sender_id: str | None
    content: str
    kind: MessageKind
    created_at: datetime
    is_answer: bool
    # The one-tap option chosen (index and text), as the platform's broadcast names it.
    option_index: int | None = None
    option: str | None = None

    def as_answer(self) -> Answer:
        return Answer(
            message_id=self.message_id,
            case_id=self.case_id,
            content=self.content,
            kind=self.kind,
            sender_id=self.sender_id,
            created_at=self.created_at,
            option_index=self.option_index,
            option=self.option,
        )

    def as_clarification(self) -> Clarification:
        return Clarification(
            message_id=self.message_id,
            case_id=self.case_id,
            content=self.content,
            sender_id=self.sender_id,
            created_at=self.created_at,
        )


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A `session` broadcast on `case:<id>`: a session of this case changed status.

    Several sessions may share a case (a retried call after a timeout re-opens the same one; two
    racing retries share one); the core reacts only to its own `session_id`, and reads the
    session's status before ending a wait on it (a genuine event of the session's earlier life,
    replayed after a retry re-opened it, is history). Delivered only when proved to come from
    the database, like `HumanMessage`.
    """

    session_id: UUID
    case_id: UUID
    status: SessionStatus
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Reconnected:
    """The subscription was lost and is confirmed joined again.

    Broadcasts sent while it was not joined are NOT replayed (Realtime broadcasts are not
    durable): on this event the core does a catch-up read (`CaseStore.answer`).
    """

    case_id: UUID


@dataclass(frozen=True, slots=True)
class WakeUp:
    """Something arrived on `case:<id>` that the adapter cannot prove the database sent (a
    client's broadcast, an unsigned or badly signed event, or any event before the adapter holds
    the database's event key). It carries nothing the core may believe: the core reads the case
    (`CaseStore.reply`) and takes only what the database returns."""

    case_id: UUID


ChannelEvent = HumanMessage | SessionEvent | Reconnected | WakeUp


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
    """

    cases: int
    finished: int
    answered: int
    timed_out: int
    avg_response_s: float | None
    success_rate: float | None
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
