"""The port for durable MCP tasks (`hitl_relay.mcp_tasks`): task rows kept beside their case.

A `TaskRecord` is what one read of a task returns: the row and, while the task is not terminal
and its creating relay has not written a result, the case's reply (the answer or a pending
clarification), so that any replica can tell a finished task from a waiting one in one round
trip. Implemented over PostgREST RPC by `hitl_relay.adapters.supabase_tasks` (the functions of
`supabase/migrations/20261206400000_hitl_tasks.sql`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol
from uuid import UUID

from hitl_relay.ports import Answer, Clarification

TaskStatus = Literal["working", "input_required", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
Era = Literal["2025-11-25", "2026-07-28"]


@dataclass(frozen=True)
class NewTask:
    """What the relay writes when it accepts a task-augmented call."""

    id: str
    owner: str  # SHA-256 (hex) of the API key
    case_id: UUID
    tool: str
    era: Era
    timeout_seconds: float
    # call_id, session_id, agent_id: what a follow-up on another replica needs.
    call: Mapping[str, Any]
    ttl_ms: int
    poll_interval_ms: int
    # A task that ends at once (invalid arguments) is created terminal, with its result.
    status: TaskStatus = "working"
    status_message: str | None = None
    result: Mapping[str, Any] | None = None

    def as_rpc_params(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "case_id": str(self.case_id),
            "tool": self.tool,
            "call": dict(self.call),
            "era": self.era,
            "timeout_seconds": self.timeout_seconds,
            "ttl_ms": self.ttl_ms,
            "poll_interval_ms": self.poll_interval_ms,
            "status": self.status,
            "status_message": self.status_message,
            "result": dict(self.result) if self.result is not None else None,
        }


@dataclass(frozen=True)
class TaskRecord:
    id: str
    case_id: UUID
    tool: str
    call: Mapping[str, Any]
    era: Era
    status: TaskStatus  # as stored; `mcp_task_wire.effective_status` adds what the reply says
    status_message: str | None
    result: Mapping[str, Any] | None
    created_at: datetime
    last_updated_at: datetime
    deadline_at: datetime
    ttl_ms: int
    poll_interval_ms: int
    now: datetime  # the database's clock at the read
    reply: Answer | Clarification | None


@dataclass(frozen=True)
class Cancelled:
    """The outcome of a cancel: the task now, and whether it had already ended (not cancelled)."""

    task: TaskRecord
    was_terminal: bool


class TaskStore(Protocol):
    async def create_task(self, task: NewTask) -> TaskRecord: ...

    async def get_task(self, task_id: str, owner: str) -> TaskRecord | None: ...

    async def finish_task(
        self,
        task_id: str,
        status: TaskStatus,
        status_message: str | None,
        result: Mapping[str, Any],
        case_id: UUID | None,
    ) -> TaskRecord | None: ...

    async def cancel_task(self, task_id: str, owner: str) -> Cancelled | None: ...

    async def resume_task(
        self, task_id: str, owner: str, timeout_seconds: float
    ) -> TaskRecord | None: ...

    async def list_tasks(
        self, owner: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[TaskRecord]: ...
