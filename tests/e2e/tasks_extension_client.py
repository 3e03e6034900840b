"""The smallest honest client of the 2026-07-28 tasks extension (`io.modelcontextprotocol/tasks`,
SEP-2663) over the Python SDK's public API.

mcp 2.3 ships the types of the 2025-11-25 tasks and the extension machinery
(`mcp.client.extension.ClientExtension`, `ResultClaim`), but no tasks extension for clients:
nothing claims `resultType: "task"` or polls `tasks/get`. This one does, as SEP-2663 describes:
listed in `Client(extensions=[...])` it is advertised in every request's client capabilities;
a `CreateTaskResult` to `tools/call` is claimed and resolved by polling `tasks/get` at the
task's `pollIntervalMilliseconds` (with `Mcp-Name: <taskId>`), answering `inputRequests` through
`tasks/update`, until the task is terminal; `client.call_tool` then returns the task's
`CallToolResult` like any other call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import mcp_types as types
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.shared.exceptions import MCPError
from pydantic import TypeAdapter

IDENTIFIER = "io.modelcontextprotocol/tasks"
TERMINAL = frozenset({"completed", "failed", "cancelled"})
_ANY = TypeAdapter(dict[str, Any])


class CreateTaskResult(types.Result):
    """SEP-2663 `CreateTaskResult`: `Result & Task` with `resultType: "task"`."""

    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_seconds: int | None
    poll_interval_milliseconds: int | None = None
    # (`requestState` is a field of the core result surface the SDK types already.)


class TaskIdParams(types.RequestParams):
    task_id: str
    request_state: str | None = None


class UpdateTaskParams(TaskIdParams):
    input_responses: dict[str, Any]


class GetTaskRequest(types.Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams
    name_param = "taskId"  # SEP-2663 "Routing Headers": Mcp-Name carries the task id


class UpdateTaskRequest(types.Request[UpdateTaskParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    params: UpdateTaskParams
    name_param = "taskId"


class CancelTaskRequest(types.Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams
    name_param = "taskId"


# An input request (key, request) → the client's response (e.g. an ElicitResult as JSON).
InputHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class TasksExtension(ClientExtension):
    """Resolves task handles by polling; records what it saw for the caller to inspect."""

    on_input: InputHandler | None = None
    created: list[CreateTaskResult] = field(default_factory=list)
    polls: list[dict[str, Any]] = field(default_factory=list)
    identifier: str = IDENTIFIER

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=self._resolve)]

    async def _resolve(self, created: CreateTaskResult, ctx: ClaimContext) -> types.CallToolResult:
        self.created.append(created)
        task_id, state = created.task_id, getattr(created, "request_state", None)
        answered: set[str] = set()
        while True:
            task = await ctx.session.send_request(
                GetTaskRequest(params=TaskIdParams(task_id=task_id, request_state=state)), _ANY
            )
            self.polls.append(task)
            state = task.get("requestState")
            status = task.get("status")
            if status == "completed":
                return types.CallToolResult.model_validate(task["result"])
            if status == "failed":
                error = task.get("error") or {}
                raise MCPError(code=int(error.get("code", -32603)), message=str(error))
            if status == "cancelled":
                raise MCPError(code=-32603, message=f"task {task_id} was cancelled")
            pending = {
                key: request
                for key, request in (task.get("inputRequests") or {}).items()
                if key not in answered
            }
            if status == "input_required" and pending and self.on_input is not None:
                responses = {key: await self.on_input(key, req) for key, req in pending.items()}
                answered.update(responses)
                await ctx.session.send_request(
                    UpdateTaskRequest(
                        params=UpdateTaskParams(
                            task_id=task_id, request_state=state, input_responses=responses
                        )
                    ),
                    _ANY,
                )
            interval = task.get("pollIntervalMilliseconds") or 1000
            await anyio.sleep(interval / 1000)  # the server's poll interval, as SEP-2663 asks
