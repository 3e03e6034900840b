"""The values the core and the platform ports exchange about cases: what opens or continues a
case, the operator's reply (an answer or a question back), the call's thread, and the events a
case channel delivers. Plain frozen dataclasses and literals; `ports` re-exports them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

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
