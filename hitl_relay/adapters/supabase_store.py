"""`CaseStore` over PostgREST RPC (supabase-py `AsyncClient`), as the service role.

Each method is one RPC, one transaction on the platform (`hitl_open_case`,
`hitl_open_case_no_operator`, `hitl_case_reply` and its batch `hitl_case_replies`,
`hitl_case_status`, `hitl_close_session`, and for the clarification loop `hitl_continue_case`
and `hitl_call_history`). Errors are translated once, here:

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
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import httpx
from postgrest.exceptions import APIError
from supabase import AsyncClient

from hitl_relay.adapters.supabase_shapes import (
    ShapeError,
    parse_answer,
    parse_clarification,
    parse_opened,
    parse_session_status,
    parse_success_metrics,
    parse_thread_entry,
    parse_time,
    parse_uuid,
)
from hitl_relay.errors import InvalidRequest, NotFound, PlatformUnavailable, SchemaBehind
from hitl_relay.ports import (
    Answer,
    Clarification,
    ContinueCase,
    JobHealth,
    Notification,
    OpenCase,
    OpenedCase,
    RecoveredSessions,
    SessionOutcome,
    SessionStatus,
    SuccessMetrics,
    ThreadEntry,
)

# The request header naming the relay instance (HITL_INSTANCE_ID) that sends it: a session that
# starts waiting records it (`hil_sessions.instance_id`, read from PostgREST's `request.headers`).
INSTANCE_HEADER = "x-hitl-instance"

# What httpx/h2 raise for connect, read, write, pool and protocol problems, plus our bound.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, OSError, TimeoutError)


# PostgREST's "function not found" (PGRST202); the devstack answers with Postgres' 42883.
MISSING_FUNCTION_CODES = ("PGRST202", "42883")


def api_error(fn: str, e: APIError) -> InvalidRequest | NotFound | PlatformUnavailable:
    """PostgREST's error body → the relay's error tree (see the module docstring)."""
    if e.code == "P0001":
        field = e.details if isinstance(e.details, str) and e.details else "request"
        rule = e.hint if isinstance(e.hint, str) and e.hint else (e.message or "is invalid")
        if field == "p_session_id" and rule == "no such session":
            return NotFound("session")
        return InvalidRequest(field, rule)
    detail = f"{fn}: {e.code or '?'} {e.message or ''}".rstrip()
    if e.code in MISSING_FUNCTION_CODES:
        return SchemaBehind(detail)
    return PlatformUnavailable(detail)


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
            return _reply(data)
        except ShapeError as e:
            raise PlatformUnavailable(
                f"hitl_case_reply returned an unexpected reply: {e}"
            ) from None

    async def replies(self, case_ids: Sequence[UUID]) -> dict[UUID, Answer | Clarification]:
        ids = [str(case_id) for case_id in case_ids]
        data = await self._rpc("hitl_case_replies", {"p_case_ids": ids})
        try:
            if not isinstance(data, list):
                raise ShapeError(f"expected an array, got {data!r}")
            found: dict[UUID, Answer | Clarification] = {}
            for entry in data:
                if not isinstance(entry, Mapping):
                    raise ShapeError(f"expected an object per case, got {entry!r}")
                reply = _reply(entry)
                if reply is None:
                    raise ShapeError(f"an entry with neither answer nor clarification: {entry!r}")
                found[parse_uuid(entry.get("case_id"))] = reply
            return found
        except ShapeError as e:
            raise PlatformUnavailable(
                f"hitl_case_replies returned an unexpected reply: {e}"
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


def _opened(fn: str, data: Any) -> OpenedCase:
    try:
        return parse_opened(data)
    except ShapeError as e:
        raise PlatformUnavailable(f"{fn} returned an unexpected reply: {e}") from None


def _reply(data: Any) -> Answer | Clarification | None:
    """One `hitl_case_reply` object: the answer if there is one, else the clarification."""
    if not isinstance(data, Mapping):
        raise ShapeError(f"expected an object, got {data!r}")
    answer, clarification = data.get("answer"), data.get("clarification")
    if answer is not None:
        if not isinstance(answer, Mapping):
            raise ShapeError(f"answer: expected an object or null, got {answer!r}")
        return parse_answer(answer)
    if clarification is not None:
        if not isinstance(clarification, Mapping):
            raise ShapeError(f"clarification: expected an object or null, got {clarification!r}")
        return parse_clarification(clarification)
    return None
