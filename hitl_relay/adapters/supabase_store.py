"""`CaseStore` over PostgREST RPC (supabase-py `AsyncClient`), as the service role.

Each method is one RPC, one transaction on the platform (`hitl_open_case`,
`hitl_open_case_no_operator`, `hitl_case_reply`, `hitl_case_status`, `hitl_close_session`, and
for the clarification loop `hitl_continue_case` and `hitl_call_history`). Errors are translated
once, here:

- PostgREST `P0001` (our functions' `RAISE ... USING DETAIL = field, HINT = rule`) →
  `InvalidRequest(field, rule)`; the one exception is `p_session_id` / "no such session" →
  `NotFound`.
- Anything else the platform answers with (other SQLSTATEs, PostgREST's own `PGRST*` codes,
  a proxy's HTML error page) and every transport problem (connect, read, timeout) →
  `PlatformUnavailable`, with a detail for the logs.
- A success response whose shape is not the contract's → `PlatformUnavailable` (a platform
  running other SQL than ours is not usable).

Every request is bounded by `timeout_s`; the core's own deadline (a cancel scope) may end it
sooner, and that cancellation passes through untouched.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID

import httpx
from postgrest.exceptions import APIError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationError,
)
from supabase import AsyncClient

from hitl_relay.errors import InvalidRequest, NotFound, PlatformUnavailable
from hitl_relay.ports import (
    Answer,
    Clarification,
    ContinueCase,
    JobHealth,
    MessageKind,
    Notification,
    OpenCase,
    OpenedCase,
    RecoveredSessions,
    SenderType,
    SessionOutcome,
    SessionStatus,
    SuccessMetrics,
    ThreadEntry,
    ThreadMessage,
)

# The request header naming the relay instance (HITL_INSTANCE_ID) that sends it: a session that
# starts waiting records it (`hil_sessions.instance_id`, read from PostgREST's `request.headers`).
INSTANCE_HEADER = "x-hitl-instance"

# What httpx/h2 raise for connect, read, write, pool and protocol problems, plus our bound.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, OSError, TimeoutError)


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


def api_error(fn: str, e: APIError) -> InvalidRequest | NotFound | PlatformUnavailable:
    """PostgREST's error body → the relay's error tree (see the module docstring)."""
    if e.code == "P0001":
        field = e.details if isinstance(e.details, str) and e.details else "request"
        rule = e.hint if isinstance(e.hint, str) and e.hint else (e.message or "is invalid")
        if field == "p_session_id" and rule == "no such session":
            return NotFound("session")
        return InvalidRequest(field, rule)
    return PlatformUnavailable(f"{fn}: {e.code or '?'} {e.message or ''}".rstrip())


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


# RPCs in flight at once (and the HTTP client's connection limit: `build_platform`).
MAX_IN_FLIGHT = 64


class Places:
    """At most `size` RPCs in flight; the rest wait in arrival order, except that an urgent one
    (a client's request blocked on it: an MCP task's handle) takes the next free place before
    every ordinary one (background case openings, reads, sweeps, polls)."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._ordinary: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def place(self, urgent: bool = False) -> AsyncIterator[None]:
        if self._free > 0 and not self._urgent and (urgent or not self._ordinary):
            self._free -= 1
        else:
            line = self._urgent if urgent else self._ordinary
            waiter = asyncio.get_running_loop().create_future()
            line.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # handed a place as the wait was cancelled: pass it on
                elif waiter in line:
                    line.remove(waiter)
                raise
        try:
            yield
        finally:
            self._release()

    @property
    def waiting(self) -> int:
        return sum(not w.done() for w in (*self._urgent, *self._ordinary))

    def _release(self) -> None:
        for line in (self._urgent, self._ordinary):
            while line:
                waiter = line.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._free += 1


class SupabaseCaseStore:
    """`CaseStore` over the service-role supabase-py client's `rpc()`."""

    def __init__(
        self, client: AsyncClient, timeout_s: float, max_in_flight: int = MAX_IN_FLIGHT
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s
        # At most as many RPCs in flight as the HTTP client has connections: the rest wait
        # here in order. httpx's pool rescans its whole queue for every request it assigns,
        # which at a thousand waiting calls costs more CPU than the requests themselves.
        self._in_flight = Places(max_in_flight)

    async def execute(self, label: str, query: Any, urgent: bool = False) -> Any:
        """One PostgREST request (a supabase-py builder) with this store's bound, in-flight
        limit and error translation; its `data`. `urgent`: ahead of the ordinary requests
        waiting for a place (see `Places`)."""
        try:
            async with asyncio.timeout(self._timeout_s), self._in_flight.place(urgent):
                response = await query.execute()
        except APIError as e:
            raise api_error(label, e) from None
        except TRANSPORT_ERRORS as e:
            detail = str(e) or "no reply in time"
            raise PlatformUnavailable(f"{label}: {type(e).__name__}: {detail}") from None
        return response.data

    async def _rpc(self, fn: str, params: Mapping[str, Any], urgent: bool = False) -> Any:
        return await self.execute(fn, self._client.rpc(fn, dict(params)), urgent)

    async def rpc(self, fn: str, params: Mapping[str, Any], urgent: bool = False) -> Any:
        """One RPC with this store's bound and error translation (for `supabase_tasks`);
        `urgent`: ahead of the ordinary RPCs waiting for a place (see `Places`)."""
        return await self._rpc(fn, params, urgent)

    async def open_case(self, request: OpenCase) -> OpenedCase:
        data = await self._rpc("hitl_open_case", {"p": request.as_rpc_params()})
        return _opened("hitl_open_case", data)

    async def open_case_no_operator(self, request: OpenCase) -> OpenedCase:
        data = await self._rpc("hitl_open_case_no_operator", {"p": request.as_rpc_params()})
        return _opened("hitl_open_case_no_operator", data)

    async def case_status(self, case_id: UUID) -> str | None:
        data = await self._rpc("hitl_case_status", {"p_case_id": str(case_id)})
        # SQL null: PostgREST renders `null`; supabase-py turns an empty body into [].
        if data is None or data == []:
            return None
        if not isinstance(data, str):
            raise PlatformUnavailable(f"hitl_case_status returned an unexpected reply: {data!r}")
        return data

    async def expiry_job(self) -> JobHealth:
        data = await self._rpc("hitl_expiry_job", {})
        try:
            if not isinstance(data, Mapping) or not isinstance(data.get("scheduled"), bool):
                raise ShapeError(f"expected {{scheduled, last_success}}, got {data!r}")
            last = data.get("last_success")
            return JobHealth(
                scheduled=data["scheduled"], last_success=None if last is None else parse_time(last)
            )
        except ShapeError as e:
            raise PlatformUnavailable(
                f"hitl_expiry_job returned an unexpected reply: {e}"
            ) from None

    async def continue_case(self, request: ContinueCase) -> OpenedCase:
        data = await self._rpc("hitl_continue_case", {"p": request.as_rpc_params()})
        return _opened("hitl_continue_case", data)

    async def reply(self, case_id: UUID) -> Answer | Clarification | None:
        data = await self._rpc("hitl_case_reply", {"p_case_id": str(case_id)})
        try:
            if not isinstance(data, Mapping):
                raise ShapeError(f"expected an object, got {data!r}")
            answer, clarification = data.get("answer"), data.get("clarification")
            if answer is not None:
                if not isinstance(answer, Mapping):
                    raise ShapeError(f"answer: expected an object or null, got {answer!r}")
                return parse_answer(answer)
            if clarification is not None:
                if not isinstance(clarification, Mapping):
                    raise ShapeError(
                        f"clarification: expected an object or null, got {clarification!r}"
                    )
                return parse_clarification(clarification)
            return None
        except ShapeError as e:
            raise PlatformUnavailable(
                f"hitl_case_reply returned an unexpected reply: {e}"
            ) from None

    async def call_history(self, call_id: str) -> list[ThreadEntry]:
        data = await self._rpc("hitl_call_history", {"p_call_id": call_id})
        try:
            if not isinstance(data, list):
                raise ShapeError(f"expected an array, got {data!r}")
            return [parse_thread_entry(entry) for entry in data]
        except ShapeError as e:
            raise PlatformUnavailable(
                f"hitl_call_history returned an unexpected reply: {e}"
            ) from None

    async def session_status(self, session_id: UUID) -> SessionStatus | None:
        data = await self._rpc("hitl_session_status", {"p_session_id": str(session_id)})
        if data is None or data == []:
            return None
        try:
            return parse_session_status(data)
        except ShapeError as e:
            raise PlatformUnavailable(
                f"hitl_session_status returned an unexpected reply: {e}"
            ) from None

    async def owned(self, case_id: UUID, owner: str) -> bool:
        data = await self._rpc("hitl_case_owned", {"p_case_id": str(case_id), "p_owner": owner})
        if not isinstance(data, bool):
            raise PlatformUnavailable(f"hitl_case_owned returned an unexpected reply: {data!r}")
        return data

    async def close_session(
        self, session_id: UUID, status: SessionOutcome, detail: Mapping[str, Any] | None = None
    ) -> bool:
        data = await self._rpc(
            "hitl_close_session",
            {"p_session_id": str(session_id), "p_status": status, "p_detail": dict(detail or {})},
        )
        changed = data.get("changed") if isinstance(data, Mapping) else None
        if not isinstance(changed, bool):
            raise PlatformUnavailable(f"hitl_close_session returned an unexpected reply: {data!r}")
        return changed

    async def recover_sessions(self, instance_id: str) -> RecoveredSessions:
        data = await self._rpc("hitl_recover_sessions", {"p_instance_id": instance_id})
        counts = data if isinstance(data, Mapping) else {}
        expired, cancelled = counts.get("expired"), counts.get("cancelled")
        if not isinstance(expired, int) or not isinstance(cancelled, int):
            raise PlatformUnavailable(
                f"hitl_recover_sessions returned an unexpected reply: {data!r}"
            )
        return RecoveredSessions(expired=expired, cancelled=cancelled)

    async def escalate(self) -> int:
        data = await self._rpc("hitl_escalate", {})
        if not isinstance(data, int) or isinstance(data, bool):
            raise PlatformUnavailable(f"hitl_escalate returned an unexpected reply: {data!r}")
        return data

    async def pending_notifications(self, limit: int) -> list[Notification]:
        data = await self._rpc("hitl_pending_notifications", {"p_limit": limit})
        try:
            if not isinstance(data, list):
                raise ShapeError(f"expected an array, got {data!r}")
            return [
                Notification(
                    id=int(row["id"]),
                    case_id=parse_uuid(row["case_id"]) if row.get("case_id") else None,
                    reason=str(row["reason"]),
                    payload=dict(row.get("payload") or {}),
                    attempts=int(row.get("attempts") or 0),
                )
                for row in data
            ]
        except (KeyError, TypeError, ValueError, ShapeError) as e:
            raise PlatformUnavailable(
                f"hitl_pending_notifications returned an unexpected reply: {e}"
            ) from None

    async def notification_done(self, notification_id: int, error: str | None) -> None:
        await self._rpc("hitl_notification_done", {"p_id": notification_id, "p_error": error})

    async def success_metrics(self, start: datetime, end: datetime) -> SuccessMetrics:
        data = await self._rpc(
            "hitl_success_metrics", {"p_from": start.isoformat(), "p_to": end.isoformat()}
        )
        try:
            return parse_success_metrics(data)
        except ShapeError as e:
            raise PlatformUnavailable(
                f"hitl_success_metrics returned an unexpected reply: {e}"
            ) from None


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
    timed_out: Count
    avg_response_s: Figure
    success_rate: Figure
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
        timed_out=reply.timed_out,
        avg_response_s=reply.avg_response_s.value,
        success_rate=reply.success_rate.value,
        timeout_rate=reply.timeout_rate.value,
        operator_utilisation=utilisation.value,
        handled_s=utilisation.handled_s or 0.0,
        available_s=utilisation.available_s or 0.0,
    )


def _opened(fn: str, data: Any) -> OpenedCase:
    try:
        return parse_opened(data)
    except ShapeError as e:
        raise PlatformUnavailable(f"{fn} returned an unexpected reply: {e}") from None
