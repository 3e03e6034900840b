"""An in-memory twin of the platform: cases, sessions, messages, case channels and presence.

It implements the ports exactly as the Supabase adapter does (the contract suite in
`tests/contract/` runs against both), mirrors the SQL functions' rules (idempotency key,
exactly-one answer, which sessions a close may move), and lets tests inject the faults that
matter: joins held back or refused, a dropped connection and its reconnect, a channel lost for
good, RPCs failing. `MemoryOperator` is the operators' side: it answers, asks back
(clarification) and shows presence.

Call threads and the clarification loop follow `20261125000700_hitl_threads.sql`: a new case of
a call carries the call's earlier cases in `metadata["thread"]` (JSON-shaped, as the
`hitl_attach_thread` trigger stores it), `continue_case` adds the caller's reply as an `ai`
note and a new waiting session, `reply` and `call_history` read like their SQL twins. Messages
with equal timestamps keep insertion order (SQL breaks such ties by id).

For tests and demos only (`HITL_BACKEND=memory`): nothing is persisted.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from hitl_relay.adapters.memory_claims import MemoryClaims
from hitl_relay.adapters.memory_services import CallbackCase, MemoryServices
from hitl_relay.adapters.memory_state import (
    CLOSE_STATUSES,
    DEFAULT_CASE_TTL_S,
    Faults,
    MemCase,
    MemNotification,
    MemSession,
    as_postgres_would_store,
    id_rule,
    int_rule,
    success_figures,
    text_rule,
)
from hitl_relay.clock import SystemClock
from hitl_relay.errors import InvalidRequest, NotFound, PlatformUnavailable
from hitl_relay.models import (
    CONTEXT_MAX,
    HISTORY_MAX_TURNS,
    ID_MAX,
    QUESTION_MAX,
    TIMEOUT_MAX,
    TIMEOUT_MIN,
    option_rule,
)
from hitl_relay.ports import (
    EXPECTED_SCHEMA_VERSION,
    Answer,
    Backend,
    ChannelEvent,
    Check,
    Clarification,
    Clock,
    ContinueCase,
    HumanMessage,
    JobHealth,
    MessageKind,
    Notification,
    OpenCase,
    OpenedCase,
    PlatformReadiness,
    Reconnected,
    RecoveredSessions,
    SenderType,
    SessionEvent,
    SessionOutcome,
    SessionStatus,
    Subscription,
    SuccessMetrics,
    ThreadEntry,
    ThreadMessage,
    WakeUp,
)


class _Lost:
    """Sentinel put on a subscription's queue when it is lost for good."""


class MemorySubscription:
    """A confirmed subscription to one case; events queue until read."""

    def __init__(self, case_id: UUID) -> None:
        self._case_id = case_id
        self._send: MemoryObjectSendStream[ChannelEvent | _Lost]
        self._recv: MemoryObjectReceiveStream[ChannelEvent | _Lost]
        self._send, self._recv = anyio.create_memory_object_stream[ChannelEvent | _Lost](
            max_buffer_size=math.inf
        )
        self.connected = True
        self._lost = False

    @property
    def case_id(self) -> UUID:
        return self._case_id

    def deliver(self, event: ChannelEvent | _Lost) -> None:
        with contextlib.suppress(anyio.ClosedResourceError):  # left already: nobody listens
            self._send.send_nowait(event)

    async def receive(self) -> ChannelEvent:
        if self._lost:
            raise PlatformUnavailable(f"subscription to case:{self._case_id} is lost")
        try:
            item = await self._recv.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._lost = True
            raise PlatformUnavailable(f"subscription to case:{self._case_id} is closed") from None
        if isinstance(item, _Lost):
            self._lost = True
            raise PlatformUnavailable(f"subscription to case:{self._case_id} is lost")
        return item

    def __aiter__(self) -> MemorySubscription:
        return self

    async def __anext__(self) -> ChannelEvent:
        return await self.receive()

    def close(self) -> None:
        self._send.close()
        self._recv.close()


class MemoryPlatform:
    """The platform's state and the three ports over it, plus fault injection for tests."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        operators: int | None = None,
        presence_ttl_s: float = 0.5,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.cases: dict[UUID, MemCase] = {}
        self.sessions: dict[UUID, MemSession] = {}
        self._by_key: dict[str, UUID] = {}
        self.messages: list[HumanMessage] = []
        self.notifications: list[MemNotification] = []
        self.subscriptions: dict[UUID, set[MemorySubscription]] = {}
        self.faults = Faults()
        # None: presence unknown (not joined yet); a set: the operators present.
        self.present: set[str] | None = (
            None if operators is None else {f"operator-{i}" for i in range(operators)}
        )
        self.joins_requested = 0
        self.joins_confirmed = 0
        self.leaves = 0
        self.rpc_calls: list[str] = []
        self.replies_read: list[UUID] = []  # the case of each `reply` read, in order
        # `operator_activity` rows with status available: (operator id, started_at, last_seen_at).
        self.availability: list[tuple[str, datetime, datetime]] = []
        self.case_secrets: dict[UUID, str] = {}
        self.services = MemoryServices(self.clock, self._callback_case)
        self.store = MemoryCaseStore(self)
        self.channel = MemoryCaseChannel(self)
        self.presence = MemoryPresence(self, ttl_s=presence_ttl_s)
        self.operator = MemoryOperator(self)
        self.claims = MemoryClaims(self)  # claims, routing, escalation (memory_claims.py)
        self._changed: anyio.Event | None = None
        # Readiness: the twin is at the relay's schema unless a test says otherwise, and its
        # "realtime" is down between `disconnect()` and `reconnect()`.
        self.schema_version: str | None = EXPECTED_SCHEMA_VERSION
        self.realtime_connected = True
        # The expiry job (`hitl_expiry_job`): scheduled here, and when `expire_sessions` (what
        # the job runs) last ran.
        self.expiry_scheduled = True
        self.expiry_last_run: datetime | None = None

    def backend(self) -> Backend:
        return Backend.of(self)

    def _callback_case(self, case_id: UUID) -> CallbackCase | None:
        case = self.cases.get(case_id)
        if case is None:
            return None
        answer = next((m for m in self.messages if m.message_id == case.answer_message_id), None)
        return CallbackCase(
            callback_url=case.metadata.get("callback_url"),
            webhook_secret=self.case_secrets.get(case_id),
            call_id=case.metadata.get("retell_call_id"),
            answer=answer,
            answered_at=case.answered_at,
        )

    async def readiness(self, timeout_s: float) -> PlatformReadiness:
        """The readiness probe: an injected platform outage fails the database check."""
        await anyio.lowlevel.checkpoint()
        try:
            self._rpc("schema_version")
            database = Check(ok=True, latency_ms=0.0)
        except PlatformUnavailable as e:
            database = Check(ok=False, latency_ms=0.0, reason=e.detail)
        realtime = Check(
            ok=self.realtime_connected,
            latency_ms=0.0,
            reason=None if self.realtime_connected else "no realtime socket connected",
        )
        return PlatformReadiness(
            database=database,
            realtime=realtime,
            schema_version=self.schema_version if database.ok else None,
        )

    # -- observing, for tests

    @property
    def joined_channels(self) -> int:
        return sum(len(subs) for subs in self.subscriptions.values())

    def session_of(self, case_id: UUID) -> MemSession:
        return next(s for s in self.sessions.values() if s.case_id == case_id)

    async def wait_until(self, predicate: Callable[[], bool], within_s: float = 5.0) -> None:
        """Wait (bounded) until `predicate()` holds; re-checked after every state change."""
        with anyio.fail_after(within_s):
            while not predicate():
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()

    def changed(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    # -- faults on the channel

    def disconnect(self) -> None:
        """The connection drops: subscriptions stay open but receive nothing until reconnect."""
        self.realtime_connected = False
        for subs in self.subscriptions.values():
            for sub in subs:
                sub.connected = False
        self.changed()

    def reconnect(self) -> None:
        """The connection is back and every channel rejoined: each subscription is told."""
        self.realtime_connected = True
        for case_id, subs in self.subscriptions.items():
            for sub in subs:
                if not sub.connected:
                    sub.connected = True
                    sub.deliver(Reconnected(case_id=case_id))
        self.changed()

    def lose_subscriptions(self) -> None:
        """Rejoining is impossible: every open subscription fails from now on."""
        for subs in self.subscriptions.values():
            for sub in subs:
                sub.deliver(_Lost())
        self.changed()

    # -- the platform's behaviour

    def _rpc(self, name: str) -> None:
        self.rpc_calls.append(name)
        self.changed()
        if self.faults.rpc_down:
            raise PlatformUnavailable(f"{name}: platform down (injected)")
        left = self.faults.rpc_failures.get(name, 0)
        if left > 0:
            self.faults.rpc_failures[name] = left - 1
            raise PlatformUnavailable(f"{name}: failed (injected)")

    def broadcast(self, case_id: UUID, event: ChannelEvent) -> None:
        if self.faults.drop_broadcasts:
            return
        for sub in list(self.subscriptions.get(case_id, ())):
            if sub.connected:
                sub.deliver(event)

    def forge_broadcast(self, case_id: UUID, event: str, payload: Mapping[str, Any]) -> None:
        """A client's broadcast on `case:<case_id>` (an operator's token may send there): the
        twin, like the Supabase adapter, cannot prove the database sent it, so subscribers get
        only a `WakeUp`, whatever `event` and `payload` claim."""
        del event, payload  # what a client claims is never read
        self.broadcast(case_id, WakeUp(case_id))

    def post_message(
        self,
        case_id: UUID,
        content: str,
        *,
        kind: MessageKind = "answer",
        sender_type: SenderType = "human",
        sender_id: str | None = "operator-0",
        option_index: int | None = None,
    ) -> HumanMessage:
        """Insert a message into a case, as the `messages` insert trigger does it."""
        case = self.cases.get(case_id)
        if case is None:
            raise NotFound(f"case {case_id}")
        option: str | None = None
        if option_index is not None:
            # hitl_before_message: the option must be the case's; its text is the content.
            if sender_type != "human" or kind != "answer":
                raise InvalidRequest("option_index", "only a human answer may choose an option")
            if case.options is None or not 0 <= option_index < len(case.options):
                top = len(case.options or ()) - 1
                raise InvalidRequest(
                    "option_index", f"must be one of the case's options (0 to {top})"
                )
            option = case.options[option_index]
            if not content.strip():
                content = option
            elif content.strip() != option:
                raise InvalidRequest("content", "must be the chosen option's text (or empty)")
        self.claims.check_message(case, sender_type, sender_id)
        is_answer = (
            sender_type == "human"
            and kind in ("answer", "cannot_answer")
            and case.answer_message_id is None
        )
        message = HumanMessage(
            message_id=uuid4(),
            case_id=case_id,
            sender_type=sender_type,
            sender_id=sender_id,
            content=content,
            kind=kind,
            created_at=self.clock.now(),
            is_answer=is_answer,
            option_index=option_index,
            option=option,
        )
        if is_answer:
            case.answer_message_id = message.message_id
            case.answered_at = case.answered_at or message.created_at
            if case.status == "open":
                case.status = "answered"
        self.messages.append(message)
        if is_answer:
            self.services.queue_callback(case_id, "answer")
        self.broadcast(case_id, message)
        self.changed()
        return message

    def set_session_status(self, session: MemSession, status: SessionStatus) -> None:
        if session.status == status:
            return
        session.status = status
        if status == "timed_out":
            self.services.queue_callback(session.case_id, "timeout", session.id)
        self.broadcast(
            session.case_id,
            SessionEvent(
                session_id=session.id,
                case_id=session.case_id,
                status=status,
                expires_at=session.expires_at,
            ),
        )
        self.changed()

    def expire_sessions(self) -> int:
        """What the cron job does (`hitl_expire_sessions`): open cases past their answerable
        window become `expired`, then waiting sessions past their deadline or of an expired case
        become `expired`. Returns how many rows changed."""
        now = self.clock.now()
        cases = [c for c in self.cases.values() if c.status == "open" and c.expires_at < now]
        for case in cases:
            case.status = "expired"
        expired = [
            s
            for s in self.sessions.values()
            if s.status == "waiting"
            and (s.expires_at < now or self.cases[s.case_id].status == "expired")
        ]
        for session in expired:
            self.set_session_status(session, "expired")
        self.expiry_last_run = now
        self.changed()
        return len(expired) + len(cases)

    def thread(self, call_id: str) -> list[ThreadEntry]:
        """`hitl_call_history`: every case a session of this call belongs to, by first ask."""
        first_asked: dict[UUID, datetime] = {}
        for session in self.sessions.values():
            if session.retell_call_id == call_id:
                seen = first_asked.get(session.case_id)
                if seen is None or session.created_at < seen:
                    first_asked[session.case_id] = session.created_at
        entries = []
        for case_id, asked_at in first_asked.items():
            case = self.cases[case_id]
            messages = sorted(
                (m for m in self.messages if m.case_id == case_id), key=lambda m: m.created_at
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


class MemoryCaseStore:
    """`CaseStore` over the platform's dicts; the rules of `hitl_open_case` and friends."""

    def __init__(self, platform: MemoryPlatform, instance_id: str | None = None) -> None:
        self._p = platform
        # What the Supabase store sends as `x-hitl-instance`: None, a relay with no id.
        self.instance_id = instance_id

    async def open_case(self, request: OpenCase) -> OpenedCase:
        await anyio.lowlevel.checkpoint()
        p = self._p
        p._rpc("open_case")
        as_postgres_would_store(request.as_rpc_params())
        question = text_rule(request.question, "question", QUESTION_MAX, required=True)
        assert question is not None
        text_rule(request.context, "context", CONTEXT_MAX, required=False)
        id_rule(request.mcp_session_id, "mcp_session_id")
        id_rule(request.retell_call_id, "retell_call_id")
        id_rule(request.retell_agent_id, "retell_agent_id")
        int_rule(request.priority, "priority", 1, 5)
        int_rule(request.timeout_seconds, "timeout_seconds", TIMEOUT_MIN, TIMEOUT_MAX)
        if request.urgency not in ("low", "medium", "high"):
            raise InvalidRequest("urgency", "must be one of low, medium, high")
        if len(request.conversation_history) > HISTORY_MAX_TURNS:
            raise InvalidRequest("conversation_history", "must have at most 200 turns")
        options = None
        if request.options is not None:
            try:
                options = option_rule(list(request.options))
            except ValueError as e:
                raise InvalidRequest("options", str(e)) from None
        key = request.idempotency_key or (
            f"{request.retell_call_id}:{hashlib.sha256(question.encode()).hexdigest()}"
        )
        now = p.clock.now()
        deadline = now + timedelta(seconds=request.timeout_seconds)
        existing = p._by_key.get(key)
        if existing is not None:
            session = p.sessions[existing]
            if session.status not in ("waiting", "answered"):
                session.expires_at = deadline
                session.instance_id = self.instance_id
                p.set_session_status(session, "waiting")
            p.changed()
            return OpenedCase(
                case_id=session.case_id,
                session_id=session.id,
                expires_at=session.expires_at,
                existed=True,
                status=session.status,
            )
        ttl = request.case_ttl_seconds or DEFAULT_CASE_TTL_S
        # The `hitl_attach_thread` trigger: the call's earlier cases, before this one exists.
        thread = p.thread(request.retell_call_id)
        case = MemCase(
            id=request.case_id,
            question=question,
            priority=request.priority,
            urgency=request.urgency,
            status="open",
            metadata={
                "context": request.context,
                "mcp_session_id": request.mcp_session_id,
                "retell_call_id": request.retell_call_id,
                "retell_agent_id": request.retell_agent_id,
                "caller_info": dict(request.caller_info),
                "conversation_history": [dict(t) for t in request.conversation_history],
                "response_timeout": request.timeout_seconds,
                "deadline_at": deadline,
            },
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
            options=options,
            skills=tuple(sorted({k.lower() for k in request.skills})),
        )
        if thread:
            case.metadata["thread"] = [entry.as_json() for entry in thread]
        if request.callback_url:
            case.metadata["callback_url"] = request.callback_url
        if request.webhook_secret:
            p.case_secrets[case.id] = request.webhook_secret
        session = MemSession(
            id=uuid4(),
            case_id=case.id,
            idempotency_key=key,
            mcp_session_id=request.mcp_session_id,
            retell_call_id=request.retell_call_id,
            status="waiting",
            expires_at=deadline,
            created_at=now,
            instance_id=self.instance_id,
        )
        p.cases[case.id] = case
        p.sessions[session.id] = session
        p._by_key[key] = session.id
        p.changed()
        if p.faults.open_reply_gate is not None:
            await p.faults.open_reply_gate.wait()
        return OpenedCase(
            case_id=case.id,
            session_id=session.id,
            expires_at=deadline,
            existed=False,
            status="waiting",
        )

    async def session_status(self, session_id: UUID) -> SessionStatus | None:
        self._p._rpc("session_status")
        session = self._p.sessions.get(session_id)
        return session.status if session is not None else None

    async def owned(self, case_id: UUID, owner: str) -> bool:
        p = self._p
        p._rpc("case_owned")
        return any(
            p.sessions[session_id].case_id == case_id and key.startswith(owner + ":")
            for key, session_id in p._by_key.items()
        )

    async def open_case_no_operator(self, request: OpenCase) -> OpenedCase:
        """`open_case`, then the session closed as `no_operator` unless another relay waits on
        it or the case has an answer (`hitl_open_case_no_operator`)."""
        p = self._p
        question = request.question if isinstance(request.question, str) else ""
        key = request.idempotency_key or (
            f"{request.retell_call_id}:{hashlib.sha256(question.encode()).hexdigest()}"
        )
        before = p._by_key.get(key)
        waited_on = before is not None and p.sessions[before].status == "waiting"
        opened = await self.open_case(request)
        session = p.sessions[opened.session_id]
        case = p.cases[opened.case_id]
        if session.status != "waiting" or waited_on or case.answer_message_id is not None:
            return opened
        session.detail = {"outcome": "no_operator"}
        p.set_session_status(session, "no_operator")
        return OpenedCase(
            case_id=opened.case_id,
            session_id=opened.session_id,
            expires_at=opened.expires_at,
            existed=opened.existed,
            status="no_operator",
        )

    async def expiry_job(self) -> JobHealth:
        await anyio.lowlevel.checkpoint()
        p = self._p
        p._rpc("expiry_job")
        if not p.expiry_scheduled:
            return JobHealth(scheduled=False, last_success=None)
        return JobHealth(scheduled=True, last_success=p.expiry_last_run)

    async def case_status(self, case_id: UUID) -> str | None:
        await anyio.lowlevel.checkpoint()
        self._p._rpc("case_status")
        case = self._p.cases.get(case_id)
        return None if case is None else case.status

    def _answer_of(self, case_id: UUID) -> Answer | None:
        p = self._p
        case = p.cases.get(case_id)
        if case is None or case.answer_message_id is None:
            return None
        message = next(m for m in p.messages if m.message_id == case.answer_message_id)
        return message.as_answer()

    async def reply(self, case_id: UUID) -> Answer | Clarification | None:
        await anyio.lowlevel.checkpoint()
        self._p.replies_read.append(case_id)
        self._p._rpc("reply")
        return self._answer_of(case_id) or self._pending_of(case_id)

    async def close_session(
        self, session_id: UUID, status: SessionOutcome, detail: Mapping[str, Any] | None = None
    ) -> bool:
        await anyio.lowlevel.checkpoint()
        p = self._p
        if p.faults.close_gate is not None:
            await p.faults.close_gate.wait()
        p._rpc("close_session")
        if status not in CLOSE_STATUSES:
            raise InvalidRequest("p_status", "must be one of " + ", ".join(CLOSE_STATUSES))
        session = p.sessions.get(session_id)
        if session is None:
            raise NotFound(f"session {session_id}")
        if session.status != "waiting":
            return False
        session.detail = dict(detail or {})
        p.set_session_status(session, status)
        return True

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

    async def continue_case(self, request: ContinueCase) -> OpenedCase:
        await anyio.lowlevel.checkpoint()
        p = self._p
        p._rpc("continue_case")
        reply = text_rule(request.question, "question", QUESTION_MAX, required=True)
        assert reply is not None
        text_rule(request.mcp_session_id, "mcp_session_id", ID_MAX, required=True)
        text_rule(request.retell_call_id, "retell_call_id", ID_MAX, required=True)
        text_rule(request.retell_agent_id, "retell_agent_id", ID_MAX, required=True)
        int_rule(request.timeout_seconds, "timeout_seconds", TIMEOUT_MIN, TIMEOUT_MAX)
        case = p.cases.get(request.case_id)
        if case is None:
            raise InvalidRequest("case_id", "no such case")
        if case.metadata.get("retell_call_id") != request.retell_call_id:
            raise InvalidRequest("case_id", "belongs to another call")
        if case.status in ("expired", "cancelled", "closed"):
            raise InvalidRequest("case_id", f"is {case.status} and can no longer be continued")
        key = (
            f"{request.retell_call_id}:{request.case_id}:"
            f"{hashlib.sha256(reply.encode()).hexdigest()}"
        )
        existing = p._by_key.get(key)
        if existing is not None:
            session = p.sessions[existing]
            return OpenedCase(
                case_id=session.case_id,
                session_id=session.id,
                expires_at=session.expires_at,
                existed=True,
                status=session.status,
            )
        p.post_message(case.id, reply, kind="note", sender_type="ai", sender_id=None)
        for earlier in [s for s in p.sessions.values() if s.case_id == case.id]:
            if earlier.status == "waiting":
                earlier.detail = {"reason": "needs_info"}
                p.set_session_status(earlier, "needs_info")
        now = p.clock.now()
        session = MemSession(
            id=uuid4(),
            case_id=case.id,
            idempotency_key=key,
            mcp_session_id=request.mcp_session_id,
            retell_call_id=request.retell_call_id,
            status="waiting",
            expires_at=now + timedelta(seconds=request.timeout_seconds),
            created_at=now,
            follow_up=True,
            instance_id=self.instance_id,
        )
        p.sessions[session.id] = session
        p._by_key[key] = session.id
        case.metadata["deadline_at"] = session.expires_at
        p.changed()
        return OpenedCase(
            case_id=case.id,
            session_id=session.id,
            expires_at=session.expires_at,
            existed=False,
            status="waiting",
        )

    def _pending_of(self, case_id: UUID) -> Clarification | None:
        p = self._p
        case = p.cases.get(case_id)
        if case is None or case.answer_message_id is not None:
            return None
        pending: HumanMessage | None = None
        for message in p.messages:  # oldest first; an ai message answers every question before it
            if message.case_id != case_id:
                continue
            if message.sender_type == "human" and message.kind == "clarification":
                pending = message
            elif message.sender_type == "ai":
                pending = None
        return pending.as_clarification() if pending is not None else None

    async def call_history(self, call_id: str) -> list[ThreadEntry]:
        await anyio.lowlevel.checkpoint()
        self._p._rpc("call_history")
        return self._p.thread(call_id)


class MemoryCaseChannel:
    """`CaseChannel`: joins confirm at once unless a fault holds or refuses them."""

    def __init__(self, platform: MemoryPlatform) -> None:
        self._p = platform

    def subscribe(self, case_id: UUID) -> AbstractAsyncContextManager[Subscription]:
        return self._subscribe(case_id)

    @asynccontextmanager
    async def _subscribe(self, case_id: UUID) -> AsyncIterator[Subscription]:
        p = self._p
        p.joins_requested += 1
        p.changed()
        if p.faults.refuse_joins:
            raise PlatformUnavailable(f"join case:{case_id} refused (injected)")
        gate = p.faults.join_gate
        if gate is not None:
            await gate.wait()
        else:
            await anyio.lowlevel.checkpoint()
        sub = MemorySubscription(case_id)
        p.subscriptions.setdefault(case_id, set()).add(sub)
        p.joins_confirmed += 1
        p.changed()
        try:
            yield sub
        finally:
            subs = p.subscriptions.get(case_id, set())
            subs.discard(sub)
            if not subs:
                p.subscriptions.pop(case_id, None)
            sub.close()
            p.leaves += 1
            p.changed()


class MemoryPresence:
    """`OperatorPresence`: the count of present operators, cached for `ttl_s`."""

    def __init__(self, platform: MemoryPlatform, ttl_s: float) -> None:
        self._p = platform
        self._ttl = ttl_s
        self._cached: tuple[float, int | None] | None = None

    async def operators_online(self) -> int | None:
        await anyio.lowlevel.checkpoint()
        now = self._p.clock.monotonic()
        if self._cached is not None and now - self._cached[0] < self._ttl:
            return self._cached[1]
        present = self._p.present
        value = None if present is None else len(present)
        self._cached = (now, value)
        return value


class MemoryOperator:
    """The operators' side of the twin: answer a case, be present or not."""

    def __init__(self, platform: MemoryPlatform) -> None:
        self._p = platform

    async def answer(
        self,
        case_id: UUID,
        content: str,
        *,
        kind: MessageKind = "answer",
        sender_type: SenderType = "human",
        option_index: int | None = None,
    ) -> UUID:
        await anyio.lowlevel.checkpoint()
        return self._p.post_message(
            case_id, content, kind=kind, sender_type=sender_type, option_index=option_index
        ).message_id

    async def forge(self, case_id: UUID, event: str, payload: Mapping[str, Any]) -> None:
        """Broadcast on `case:<case_id>` as a client (an operator's token may send there)."""
        await anyio.lowlevel.checkpoint()
        self._p.forge_broadcast(case_id, event, payload)

    async def ask_back(self, case_id: UUID, question: str) -> UUID:
        """Reply with a question instead of an answer (a `clarification` message)."""
        return await self.answer(case_id, question, kind="clarification")

    async def go_online(self, operator_id: str = "operator-0") -> None:
        await anyio.lowlevel.checkpoint()
        if self._p.present is None:
            self._p.present = set()
        self._p.present.add(operator_id)
        self._p.changed()

    async def go_offline(self, operator_id: str = "operator-0") -> None:
        await anyio.lowlevel.checkpoint()
        if self._p.present is None:
            self._p.present = set()
        self._p.present.discard(operator_id)
        self._p.changed()

    async def wait_for_case(self, within_s: float = 5.0) -> UUID:
        """The next case without an answer, once one exists (oldest first)."""
        await self._p.wait_until(
            lambda: any(c.answer_message_id is None for c in self._p.cases.values()), within_s
        )
        return next(c.id for c in self._p.cases.values() if c.answer_message_id is None)

    async def answer_every_case(self, text: str, delay_s: float) -> None:
        """Run until cancelled: answer each new case with `text` after `delay_s` (demos)."""
        answered: set[UUID] = set()
        while True:
            await self._p.wait_until(
                lambda: any(c.id not in answered for c in self._p.cases.values()), math.inf
            )
            for case in list(self._p.cases.values()):
                if case.id not in answered:
                    answered.add(case.id)
                    await self._p.clock.sleep(delay_s)
                    if case.answer_message_id is None:
                        self._p.post_message(case.id, text)
