"""`TaskStore` over PostgREST RPC, through the case store's client (one road to the platform).

Each method is one RPC (`hitl_task_create`, `hitl_task_get`, `hitl_task_finish`,
`hitl_task_cancel`, `hitl_task_list`), errors translated by `SupabaseCaseStore` like every other
RPC. A reply that does not have the contract's shape becomes `PlatformUnavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast, get_args
from uuid import UUID

from hitl_relay.adapters.supabase_store import (
    ShapeError,
    SupabaseCaseStore,
    optional_str,
    parse_answer,
    parse_clarification,
    parse_time,
    parse_uuid,
)
from hitl_relay.errors import PlatformUnavailable
from hitl_relay.ports import Answer, Clarification
from hitl_relay.task_store import Cancelled, Era, NewTask, TaskRecord, TaskStatus

_STATUSES = frozenset(get_args(TaskStatus))
_ERAS = frozenset(get_args(Era))


def parse_task(data: Any) -> TaskRecord:
    if not isinstance(data, Mapping):
        raise ShapeError(f"expected an object, got {data!r}")
    try:
        status, era = data["status"], data["era"]
        if status not in _STATUSES:
            raise ShapeError(f"unknown task status {status!r}")
        if era not in _ERAS:
            raise ShapeError(f"unknown era {era!r}")
        result, call = data.get("result"), data.get("call") or {}
        if not isinstance(call, Mapping):
            raise ShapeError(f"call: expected an object, got {call!r}")
        if result is not None and not isinstance(result, Mapping):
            raise ShapeError(f"result: expected an object or null, got {result!r}")
        return TaskRecord(
            id=str(data["id"]),
            case_id=parse_uuid(data["case_id"]),
            tool=str(data["tool"]),
            call=call,
            era=cast(Era, era),
            status=cast(TaskStatus, status),
            status_message=optional_str(data.get("status_message")),
            result=result,
            created_at=parse_time(data["created_at"]),
            last_updated_at=parse_time(data["last_updated_at"]),
            deadline_at=parse_time(data["deadline_at"]),
            ttl_ms=int(data["ttl_ms"]),
            poll_interval_ms=int(data["poll_interval_ms"]),
            now=parse_time(data["now"]),
            reply=_reply(data.get("reply")),
        )
    except KeyError as e:
        raise ShapeError(f"missing key {e}") from None


def _reply(data: Any) -> Answer | Clarification | None:
    """`hitl_case_reply`'s {answer, clarification} (an answer always wins), or null."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ShapeError(f"reply: expected an object or null, got {data!r}")
    answer, clarification = data.get("answer"), data.get("clarification")
    if isinstance(answer, Mapping):
        return parse_answer(answer)
    if isinstance(clarification, Mapping):
        return parse_clarification(clarification)
    return None


class SupabaseTaskStore:
    """The task functions over the service-role client of a `SupabaseCaseStore`."""

    def __init__(self, cases: SupabaseCaseStore) -> None:
        self._cases = cases

    async def _call(self, fn: str, params: Mapping[str, Any], urgent: bool = False) -> Any:
        return await self._cases.rpc(fn, params, urgent)

    def _task_or_none(self, fn: str, data: Any) -> TaskRecord | None:
        # SQL null: PostgREST renders `null`; supabase-py turns an empty body into [].
        if data is None or data == []:
            return None
        try:
            return parse_task(data)
        except ShapeError as e:
            raise PlatformUnavailable(f"{fn} returned an unexpected reply: {e}") from None

    async def create_task(self, task: NewTask) -> TaskRecord:
        fn = "hitl_task_create"
        # The client waits for the handle (spec: returned "as soon as possible"): this RPC does
        # not queue behind the polls and the case openings of the tasks already accepted.
        data = await self._call(fn, {"p": task.as_rpc_params()}, urgent=True)
        found = self._task_or_none(fn, data)
        if found is None:
            raise PlatformUnavailable(f"{fn} returned no task")
        return found

    async def get_task(self, task_id: str, owner: str) -> TaskRecord | None:
        fn = "hitl_task_get"
        return self._task_or_none(fn, await self._call(fn, {"p_id": task_id, "p_owner": owner}))

    async def finish_task(
        self,
        task_id: str,
        status: TaskStatus,
        status_message: str | None,
        result: Mapping[str, Any],
        case_id: UUID | None,
    ) -> TaskRecord | None:
        fn = "hitl_task_finish"
        params = {
            "p_id": task_id,
            "p_status": status,
            "p_status_message": status_message,
            "p_result": dict(result),
            "p_case_id": str(case_id) if case_id is not None else None,
        }
        return self._task_or_none(fn, await self._call(fn, params))

    async def cancel_task(self, task_id: str, owner: str) -> Cancelled | None:
        fn = "hitl_task_cancel"
        data = await self._call(fn, {"p_id": task_id, "p_owner": owner})
        if data is None or data == []:
            return None
        try:
            if not isinstance(data, Mapping) or not isinstance(data.get("terminal"), bool):
                raise ShapeError(f"expected {{terminal, task}}, got {data!r}")
            return Cancelled(task=parse_task(data.get("task")), was_terminal=data["terminal"])
        except ShapeError as e:
            raise PlatformUnavailable(f"{fn} returned an unexpected reply: {e}") from None

    async def resume_task(
        self, task_id: str, owner: str, timeout_seconds: float
    ) -> TaskRecord | None:
        fn = "hitl_task_resume"
        params = {"p_id": task_id, "p_owner": owner, "p_timeout_seconds": timeout_seconds}
        return self._task_or_none(fn, await self._call(fn, params))

    async def list_tasks(
        self, owner: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[TaskRecord]:
        fn = "hitl_task_list"
        params = {
            "p_owner": owner,
            "p_after_created": after[0].isoformat() if after else None,
            "p_after_id": after[1] if after else None,
            "p_limit": limit,
        }
        data = await self._call(fn, params)
        try:
            if not isinstance(data, list):
                raise ShapeError(f"expected an array, got {data!r}")
            return [parse_task(item) for item in data]
        except ShapeError as e:
            raise PlatformUnavailable(f"{fn} returned an unexpected reply: {e}") from None


def task_store_for(store: object) -> SupabaseTaskStore | None:
    """The task store beside a backend's case store, when that store is Postgres-backed."""
    return SupabaseTaskStore(store) if isinstance(store, SupabaseCaseStore) else None
