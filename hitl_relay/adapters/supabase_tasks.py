"""`TaskStore` over PostgREST RPC, through the case store's client (one road to the platform).

Each method is one RPC (`hitl_task_create`, `hitl_task_get`, `hitl_task_finish`,
`hitl_task_cancel`, `hitl_task_list`), errors translated by `SupabaseCaseStore` like every other
RPC. A reply that does not have the contract's shape becomes `PlatformUnavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import StrictBool, TypeAdapter

from hitl_relay.adapters.supabase_shapes import (
    AnswerReply,
    ClarificationReply,
    Reply,
    ShapeError,
    Time,
    validate,
)
from hitl_relay.adapters.supabase_store import SupabaseCaseStore
from hitl_relay.errors import PlatformUnavailable
from hitl_relay.ports import Answer, Clarification
from hitl_relay.task_store import Cancelled, Era, NewTask, TaskRecord, TaskStatus


class CaseReplyReply(Reply):
    """`hitl_case_reply`'s {answer, clarification}: an answer always wins."""

    answer: AnswerReply | None = None
    clarification: ClarificationReply | None = None

    def port(self) -> Answer | Clarification | None:
        if self.answer is not None:
            return self.answer.port()
        return self.clarification.port() if self.clarification is not None else None


class TaskReply(Reply):
    """A task row as the task functions return it."""

    id: str
    case_id: UUID
    tool: str
    call: dict[str, Any] | None = None
    era: Era
    status: TaskStatus
    status_message: str | None = None
    result: dict[str, Any] | None = None
    created_at: Time
    last_updated_at: Time
    deadline_at: Time
    ttl_ms: int
    poll_interval_ms: int
    now: Time  # the database's clock at the read
    reply: CaseReplyReply | None = None

    def port(self) -> TaskRecord:
        return TaskRecord(
            id=self.id,
            case_id=self.case_id,
            tool=self.tool,
            call=self.call or {},
            era=self.era,
            status=self.status,
            status_message=self.status_message,
            result=self.result,
            created_at=self.created_at,
            last_updated_at=self.last_updated_at,
            deadline_at=self.deadline_at,
            ttl_ms=self.ttl_ms,
            poll_interval_ms=self.poll_interval_ms,
            now=self.now,
            reply=self.reply.port() if self.reply is not None else None,
        )


class CancelReply(Reply):
    """`hitl_task_cancel`'s {terminal, task}."""

    terminal: StrictBool
    task: TaskReply


_TASK = TypeAdapter(TaskReply)
_TASKS = TypeAdapter(list[TaskReply])
_CANCEL = TypeAdapter(CancelReply)


def parse_task(data: Any) -> TaskRecord:
    return validate(_TASK, data).port()


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
            cancel = validate(_CANCEL, data)
            return Cancelled(task=cancel.task.port(), was_terminal=cancel.terminal)
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
            return [task.port() for task in validate(_TASKS, data)]
        except ShapeError as e:
            raise PlatformUnavailable(f"{fn} returned an unexpected reply: {e}") from None


def task_store_for(store: object) -> SupabaseTaskStore | None:
    """The task store beside a backend's case store, when that store is Postgres-backed."""
    return SupabaseTaskStore(store) if isinstance(store, SupabaseCaseStore) else None
