"""An in-memory twin of the platform: cases, sessions, messages, case channels and presence.

It implements the ports exactly as the Supabase adapter does (the contract suite in
`tests/contract/` runs against both), mirrors the SQL functions' rules (idempotency key,
exactly-one answer, which sessions a close may move), and lets tests inject the faults that
matter: joins held back or refused, a dropped connection and its reconnect, a channel lost for
good, RPCs failing. The channels, presence and the operators' side (`MemoryOperator`) are in
`memory_realtime.py`, the store's upkeep in `memory_upkeep.py`, claims in `memory_claims.py`.

Call threads and the clarification loop follow `20261125000700_hitl_threads.sql`: a new case of
a call carries the call's earlier cases in `metadata["thread"]` (JSON-shaped, as the
`hitl_attach_thread` trigger stores it), `continue_case` adds the caller's reply as an `ai`
note and a new waiting session, `reply` and `call_history` read like their SQL twins. Messages
with equal timestamps keep insertion order (SQL breaks such ties by id).

For tests and demos only (`HITL_BACKEND=memory`): nothing is persisted.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import anyio

from hitl_relay.adapters.memory_claims import MemoryClaims
from hitl_relay.adapters.memory_realtime import (
    MemoryCaseChannel,
    MemoryChannelSide,
    MemoryOperator,
    MemoryPresence,
    MemorySubscription,
)
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
    text_rule,
)
from hitl_relay.adapters.memory_upkeep import MemoryCaseUpkeep, call_thread, expire_sessions
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
    CATCH_UP_BATCH_MAX,
    EXPECTED_SCHEMA_VERSION,
    Answer,
    Backend,
    Check,
    Clarification,
    Clock,
    ContinueCase,
    HumanMessage,
    MessageKind,
    OpenCase,
    OpenedCase,
    PlatformReadiness,
    SenderType,
    SessionEvent,
    SessionOutcome,
    SessionStatus,
    ThreadEntry,
)


class MemoryPlatform(MemoryChannelSide):
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
        self.batches_read: list[list[UUID]] = []  # the cases of each `replies` read, in order
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
        """What the cron job does (`hitl_expire_sessions`); how many rows changed."""
        return expire_sessions(self)

    def thread(self, call_id: str) -> list[ThreadEntry]:
        """`hitl_call_history`: every case a session of this call belongs to, by first ask."""
        return call_thread(self.cases, self.sessions, self.messages, call_id)


def _ask_key(request: OpenCase, question: str) -> str:
    """`hitl_open_case`'s idempotency key: the caller's, or the call and the question's hash."""
    return request.idempotency_key or (
        f"{request.retell_call_id}:{hashlib.sha256(question.encode()).hexdigest()}"
    )


def _opened(session: MemSession, *, existed: bool) -> OpenedCase:
    """What `hitl_open_case` and `hitl_continue_case` return for `session`."""
    return OpenedCase(
        case_id=session.case_id,
        session_id=session.id,
        expires_at=session.expires_at,
        existed=existed,
        status=session.status,
    )


class MemoryCaseStore(MemoryCaseUpkeep):
    """`CaseStore` over the platform's dicts; the rules of `hitl_open_case` and friends."""

    _p: MemoryPlatform  # the whole platform; the upkeep half sees it as an `UpkeepHost`

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
        key = _ask_key(request, question)
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
            return _opened(session, existed=True)
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
        p.cases[case.id] = case
        session = self._new_session(case.id, key, request, now, deadline)
        p.changed()
        opened = _opened(session, existed=False)  # what the RPC returned, before a slow reply
        if p.faults.open_reply_gate is not None:
            await p.faults.open_reply_gate.wait()
        return opened

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
        key = _ask_key(request, question)
        before = p._by_key.get(key)
        waited_on = before is not None and p.sessions[before].status == "waiting"
        opened = await self.open_case(request)
        session = p.sessions[opened.session_id]
        case = p.cases[opened.case_id]
        if session.status != "waiting" or waited_on or case.answer_message_id is not None:
            return opened
        session.detail = {"outcome": "no_operator"}
        p.set_session_status(session, "no_operator")
        return dataclasses.replace(opened, status="no_operator")

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

    async def replies(self, case_ids: Sequence[UUID]) -> dict[UUID, Answer | Clarification]:
        await anyio.lowlevel.checkpoint()
        self._p._rpc("replies")
        if len(case_ids) > CATCH_UP_BATCH_MAX:
            raise InvalidRequest("p_case_ids", f"must hold at most {CATCH_UP_BATCH_MAX} case ids")
        self._p.batches_read.append(list(case_ids))
        found: dict[UUID, Answer | Clarification] = {}
        for case_id in case_ids:
            reply = self._answer_of(case_id) or self._pending_of(case_id)
            if reply is not None:
                found[case_id] = reply
        return found

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
        # The newest question back names which question the reply answers (20261206800300).
        question = next(
            (
                m.message_id
                for m in reversed(p.messages)
                if m.case_id == case.id and m.sender_type == "human" and m.kind == "clarification"
            ),
            None,
        )
        key = (
            f"{request.retell_call_id}:{request.case_id}:{question or '-'}:"
            f"{hashlib.sha256(reply.encode()).hexdigest()}"
        )
        existing = p._by_key.get(key)
        if existing is not None:
            session = p.sessions[existing]
            return _opened(session, existed=True)
        p.post_message(case.id, reply, kind="note", sender_type="ai", sender_id=None)
        for earlier in [s for s in p.sessions.values() if s.case_id == case.id]:
            if earlier.status == "waiting":
                earlier.detail = {"reason": "needs_info"}
                p.set_session_status(earlier, "needs_info")
        now = p.clock.now()
        deadline = now + timedelta(seconds=request.timeout_seconds)
        session = self._new_session(case.id, key, request, now, deadline, follow_up=True)
        case.metadata["deadline_at"] = session.expires_at
        p.changed()
        return _opened(session, existed=False)

    def _new_session(
        self,
        case_id: UUID,
        key: str,
        request: OpenCase | ContinueCase,
        created_at: datetime,
        expires_at: datetime,
        *,
        follow_up: bool = False,
    ) -> MemSession:
        """A waiting session of `case_id` under idempotency `key`, held by this relay."""
        p = self._p
        session = MemSession(
            id=uuid4(),
            case_id=case_id,
            idempotency_key=key,
            mcp_session_id=request.mcp_session_id,
            retell_call_id=request.retell_call_id,
            status="waiting",
            expires_at=expires_at,
            created_at=created_at,
            follow_up=follow_up,
            instance_id=self.instance_id,
        )
        p.sessions[session.id] = session
        p._by_key[key] = session.id
        return session

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
