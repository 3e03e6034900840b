"""PostgREST's replies read into the ports' values: one pydantic shape per reply, checked
strictly (`validate`); a reply whose shape is not the contract's raises `ShapeError`, which the
store turns into `PlatformUnavailable`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationError,
)

from hitl_relay.ports import (
    Answer,
    Clarification,
    MessageKind,
    OpenedCase,
    SenderType,
    SessionStatus,
    SuccessMetrics,
    ThreadEntry,
    ThreadMessage,
)


class ShapeError(ValueError):
    """A platform reply that does not have the contract's shape."""


def _time_text(value: Any) -> datetime:
    """A timestamptz as PostgREST / realtime.send render it (ISO 8601, offset or `Z`)."""
    if not isinstance(value, str):
        raise ValueError("expected a timestamp")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("expected a timestamp with a time zone")
    return parsed


# The reply's field types: no coercion the platform's JSON would never need (a number is not a
# string, a boolean not a number), so another shape is refused instead of guessed at.
Time = Annotated[datetime, BeforeValidator(_time_text)]
Number = Annotated[float, Field(strict=True)]
Count = Annotated[int, Field(strict=True)]
OptionIndex = Annotated[int, Field(strict=True, ge=0)]


class Reply(BaseModel):
    """An object in a platform reply: the keys the contract names; others are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


T = TypeVar("T")


def validate(shape: TypeAdapter[T], data: Any) -> T:
    """`data` as `shape`, or a ShapeError naming the first wrong field and its rule."""
    try:
        return shape.validate_python(data)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "reply"
        raise ShapeError(f"{where}: {first['msg']}, got {first['input']!r}") from None


_TIME: TypeAdapter[datetime] = TypeAdapter(Time)
_UUID: TypeAdapter[UUID] = TypeAdapter(UUID)
_SESSION_STATUS: TypeAdapter[SessionStatus] = TypeAdapter(SessionStatus)


def parse_time(value: Any) -> datetime:
    return validate(_TIME, value)


def parse_uuid(value: Any) -> UUID:
    return validate(_UUID, value)


def parse_session_status(value: Any) -> SessionStatus:
    return validate(_SESSION_STATUS, value)


class AnswerReply(Reply):
    """An answer as `hitl_case_reply` (the catch-up read) renders it."""

    message_id: UUID
    case_id: UUID
    content: str | None = None
    kind: MessageKind = "answer"
    sender_id: str | None = None
    created_at: Time
    option_index: OptionIndex | None = None  # the chosen one-tap option, if any
    option: str | None = None

    def port(self) -> Answer:
        return Answer(
            message_id=self.message_id,
            case_id=self.case_id,
            content=self.content or "",
            kind=self.kind,
            sender_id=self.sender_id,
            created_at=self.created_at,
            option_index=self.option_index,
            option=self.option if self.option_index is not None else None,
        )


class ClarificationReply(Reply):
    """A pending clarification as `hitl_case_reply` renders it."""

    message_id: UUID
    case_id: UUID
    content: str | None = None
    sender_id: str | None = None
    created_at: Time

    def port(self) -> Clarification:
        return Clarification(
            message_id=self.message_id,
            case_id=self.case_id,
            content=self.content or "",
            sender_id=self.sender_id,
            created_at=self.created_at,
        )


class ThreadMessageReply(Reply):
    sender_type: SenderType
    kind: MessageKind
    content: str | None = None
    created_at: Time


class ThreadEntryReply(Reply):
    """One element of `hitl_call_history`'s array."""

    case_id: UUID
    question: str | None = None
    status: str
    asked_at: Time
    answer: str | None = None
    answer_kind: MessageKind | None = None
    answered_at: Time | None = None
    exchanges: list[ThreadMessageReply] | None = None

    def port(self) -> ThreadEntry:
        return ThreadEntry(
            case_id=self.case_id,
            question=self.question or "",
            status=self.status,
            asked_at=self.asked_at,
            answer=self.answer,
            answer_kind=self.answer_kind,
            answered_at=self.answered_at,
            exchanges=tuple(
                ThreadMessage(m.sender_type, m.kind, m.content or "", m.created_at)
                for m in self.exchanges or ()
            ),
        )


class OpenedReply(Reply):
    """`hitl_open_case`'s `{case_id, session_id, expires_at, existed, status}`."""

    case_id: UUID
    session_id: UUID
    expires_at: Time
    existed: StrictBool
    status: SessionStatus

    def port(self) -> OpenedCase:
        return OpenedCase(
            case_id=self.case_id,
            session_id=self.session_id,
            expires_at=self.expires_at,
            existed=self.existed,
            status=self.status,
        )


_ANSWER = TypeAdapter(AnswerReply)
_CLARIFICATION = TypeAdapter(ClarificationReply)
_THREAD_ENTRY = TypeAdapter(ThreadEntryReply)
_OPENED = TypeAdapter(OpenedReply)


def parse_answer(data: Any) -> Answer:
    return validate(_ANSWER, data).port()


def parse_clarification(data: Any) -> Clarification:
    return validate(_CLARIFICATION, data).port()


def parse_thread_entry(data: Any) -> ThreadEntry:
    return validate(_THREAD_ENTRY, data).port()


def parse_opened(data: Any) -> OpenedCase:
    return validate(_OPENED, data).port()


class Figure(Reply):
    """One of `hitl_success_metrics`' figures: {value, target, met, ...}."""

    value: Number | None


class Utilisation(Figure):
    handled_s: Number | None = None
    available_s: Number | None = None


class SuccessMetricsReply(Reply):
    """`hitl_success_metrics`' object: counts plus one figure each."""

    cases: Count
    finished: Count
    answered: Count
    cannot_answer: Count
    timed_out: Count
    other: Count
    avg_response_s: Figure
    success_rate: Figure
    cannot_answer_rate: Figure
    timeout_rate: Figure
    operator_utilisation: Utilisation


_SUCCESS_METRICS = TypeAdapter(SuccessMetricsReply)


def parse_success_metrics(data: Any) -> SuccessMetrics:
    reply = validate(_SUCCESS_METRICS, data)
    utilisation = reply.operator_utilisation
    return SuccessMetrics(
        cases=reply.cases,
        finished=reply.finished,
        answered=reply.answered,
        cannot_answer=reply.cannot_answer,
        timed_out=reply.timed_out,
        other=reply.other,
        avg_response_s=reply.avg_response_s.value,
        success_rate=reply.success_rate.value,
        cannot_answer_rate=reply.cannot_answer_rate.value,
        timeout_rate=reply.timeout_rate.value,
        operator_utilisation=utilisation.value,
        handled_s=utilisation.handled_s or 0.0,
        available_s=utilisation.available_s or 0.0,
    )
