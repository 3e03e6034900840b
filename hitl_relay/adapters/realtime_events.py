"""The signed broadcasts a case channel carries (`message`, `session`), read into the ports'
events."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter

from hitl_relay.adapters.supabase_shapes import (
    OptionIndex,
    Reply,
    Time,
    validate,
)
from hitl_relay.ports import (
    HumanMessage,
    MessageKind,
    SenderType,
    SessionEvent,
    SessionStatus,
)


class MessageBroadcast(Reply):
    """A `message` broadcast (the messages trigger's `realtime.send` payload)."""

    id: UUID
    case_id: UUID
    sender_type: SenderType
    sender_id: str | None = None
    content: str | None = None
    kind: MessageKind = "answer"
    created_at: Time
    option_index: OptionIndex | None = None
    option: str | None = None


class SessionBroadcast(Reply):
    """A `session` broadcast (a session's status changed)."""

    session_id: UUID
    case_id: UUID
    status: SessionStatus
    expires_at: Time | None = None


_MESSAGE = TypeAdapter(MessageBroadcast)
_SESSION = TypeAdapter(SessionBroadcast)


def parse_message(payload: Mapping[str, Any]) -> HumanMessage:
    m = validate(_MESSAGE, payload)
    # `is_answer` is the platform's verdict: only a JSON true makes the message the answer.
    return HumanMessage(
        message_id=m.id,
        case_id=m.case_id,
        sender_type=m.sender_type,
        sender_id=m.sender_id,
        content=m.content or "",
        kind=m.kind,
        created_at=m.created_at,
        is_answer=payload.get("is_answer") is True,
        option_index=m.option_index,
        option=m.option if m.option_index is not None else None,
    )


def parse_session(payload: Mapping[str, Any]) -> SessionEvent:
    s = validate(_SESSION, payload)
    return SessionEvent(
        session_id=s.session_id, case_id=s.case_id, status=s.status, expires_at=s.expires_at
    )
