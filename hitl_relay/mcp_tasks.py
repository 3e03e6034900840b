"""MCP tasks for `ask_human`: a durable handle a client polls instead of holding a tool call open.

A client that opts in (2025-11-25: `params.task` on `tools/call`, with the server's `tasks`
capability and the tool's `execution.taskSupport: "optional"`) gets a `CreateTaskResult` at once;
the relay that accepted it waits for the operator through Realtime as a blocking call does and
writes the final tool result into the task row (`hil_tasks`, beside the case). Polls
(`tasks/get`, `tasks/result`, `tasks/list`, `tasks/cancel`) are answered by any replica from
Postgres: one RPC that reads the task by primary key and, while it is not terminal, the case's
reply by case id, so a poll never waits on the replica that created the task, which may be gone.

Status, from the row and the reply (`effective_status`):
- `working` until the operator answers;
- `completed` with the same tool result as a blocking call (answered, unclear_answer, timeout);
- `input_required` when the operator asked back (`needs_info`): 2025-11-25 sends the question as
  an elicitation on the `tasks/result` stream (the spec's "call tasks/result to receive the
  receiver's requests"), 2026-07-28 as `inputRequests` on `tasks/get`; the caller's reply
  continues the case. A 2025-11-25 client that cannot or will not answer it gets the blocking
  call's `needs_info` result (`completed`);
- `failed` when the tool result is an error (invalid arguments: the spec's rule that a tool
  result with `isError` makes the task `failed`);
- `cancelled` after `tasks/cancel`: the session closes `cancelled`, the case stays open.

Task ids are 256 random bits; a task is stored with the SHA-256 of the API key that created it
and every read filters on it, so another key sees "task not found" (-32602), the same answer as
for an id that never existed. Specification: modelcontextprotocol/modelcontextprotocol
`docs/specification/2025-11-25/basic/utilities/tasks.mdx`; wire types: `mcp_types` (mcp 2.3).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import mcp_types as types
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult
from mcp.shared.exceptions import MCPError
from mcp_types import SERVER_INFO_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from hitl_relay.errors import HitlError, InvalidRequest
from hitl_relay.mcp_task_input import TaskInput
from hitl_relay.mcp_task_wire import (
    DEFAULT_TTL_MS,
    IMMEDIATE_TEXT,
    LIST_PAGE,
    MAX_TTL_MS,
    MIN_RETENTION_AFTER_WAIT_MS,
    MODEL_IMMEDIATE_RESPONSE,
    MODERN,
    RELATED_TASK,
    TASK_TOOLS,
    TASKS_CAPABILITY,
    TASKS_VERSION,
    Context,
    UpdateTaskParams,
    clarification_key,
    decode_cursor,
    dump,
    effective_status,
    encode_cursor,
    input_requests,
    legacy_only,
    not_found,
    opted_in,
    owner_of,
    task_json,
    task_json_modern,
    unavailable,
)
from hitl_relay.models import AskResult, parse_ask_request
from hitl_relay.ports import Clarification
from hitl_relay.relay import Relay
from hitl_relay.security.middleware import key_of
from hitl_relay.task_store import TERMINAL, Era, NewTask, TaskRecord


class TaskService(TaskInput):
    """Serves the tasks methods for one relay; owns the waits of the tasks it accepted."""

    # ------------------------------------------------------------------ registration

    def install(self, server: Any) -> None:
        """Register the tasks methods and the task-augmented tools/call on the SDK's Server."""
        self._server = server
        server.add_request_handler("tasks/get", types.GetTaskRequestParams, self._on_get)
        server.add_request_handler(
            "tasks/result", types.GetTaskPayloadRequestParams, self._on_result
        )
        server.add_request_handler("tasks/list", types.PaginatedRequestParams, self._on_list)
        server.add_request_handler("tasks/cancel", types.CancelTaskRequestParams, self._on_cancel)
        server.add_request_handler("tasks/update", UpdateTaskParams, self._on_update)
        server.middleware.append(self._middleware)

    async def _middleware(self, ctx: Context, call_next: CallNext) -> HandlerResult:
        modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        if ctx.method == "initialize" and self.available:
            result = await call_next(ctx)
            # Tasks exist from 2025-11-25 on; an older negotiated version gets no capability.
            if (
                isinstance(result, dict)
                and result.get("protocolVersion") == TASKS_VERSION
                and isinstance(result.get("capabilities"), dict)
            ):
                result["capabilities"]["tasks"] = TASKS_CAPABILITY
            return result
        params = ctx.params or {}
        if ctx.method == "tools/call" and self.available:
            # Answered here, before the SDK's handler layer: it sieves tools/call results to
            # CallToolResult, and a CreateTaskResult is this module's shape to own.
            try:
                legacy_tasks = ctx.protocol_version == TASKS_VERSION
                if legacy_tasks and params.get("task") is not None:
                    return await self._create(ctx, params, "2025-11-25")
                if modern and opted_in(params) and params.get("name") in TASK_TOOLS:
                    # SEP-2663: the server decides per request; ask_human always becomes a
                    # task for a client that lists the extension on this request.
                    created = await self._create(ctx, params, MODERN)
                    created["_meta"] = {SERVER_INFO_META_KEY: self._server.server_info_stamp}
                    return created
            except HitlError as e:
                # The task could not be recorded: nothing was accepted, the client may retry.
                raise unavailable(e) from None
        return await call_next(ctx)

    # ------------------------------------------------------------------ creation

    async def _create(self, ctx: Context, params: Mapping[str, Any], era: Era) -> dict[str, Any]:
        store = self._store()
        name = params.get("name")
        if name not in TASK_TOOLS:
            # Spec: a tool whose taskSupport is absent or "forbidden" answers -32601.
            raise MCPError(
                code=types.METHOD_NOT_FOUND, message=f"Tool {name!r} does not support tasks"
            )
        task_meta = params.get("task")
        requested_ttl = task_meta.get("ttl") if isinstance(task_meta, Mapping) else None
        if requested_ttl is not None and (
            not isinstance(requested_ttl, int) or isinstance(requested_ttl, bool)
        ):
            raise MCPError(code=types.INVALID_PARAMS, message="task.ttl: must be an integer")
        task_id = secrets.token_urlsafe(32)
        owner = owner_of(ctx)
        s = self._relay().options
        new_task = partial(
            NewTask,
            id=task_id,
            owner=owner,
            tool=str(name),
            era=era,
            # counting this one: the interval its polls will be told (see `advised`)
            poll_interval_ms=s.task_poll_interval(self.live_tasks() + 1),
        )
        try:
            request = parse_ask_request(params.get("arguments") or {})
            timeout = s.time_limit(request.timeout_seconds, default=s.max_timeout_s)
        except InvalidRequest as e:
            # 2025-11-25: a tool result with isError makes the task `failed`; 2026-07-28:
            # `completed` (failed is for JSON-RPC errors only). Either way the result says why.
            record = await store.create_task(
                new_task(
                    case_id=uuid4(),
                    call={},
                    timeout_seconds=0,
                    ttl_ms=self._ttl(requested_ttl, 0),
                    status="failed" if era != MODERN else "completed",
                    status_message="Invalid arguments.",
                    result=dump(self._rendering.render_invalid(e)),
                )
            )
            return self._created(record, era)
        request = request.model_copy(update={"timeout_seconds": timeout})
        case_id = UUID(request.case_id) if request.case_id else uuid4()
        record = await store.create_task(
            new_task(
                case_id=case_id,
                call={
                    "call_id": request.call_id,
                    "session_id": request.session_id,
                    "agent_id": request.agent_id,
                },
                timeout_seconds=timeout,
                ttl_ms=self._ttl(requested_ttl, timeout),
            )
        )
        connection = getattr(ctx.session, "_connection", None)  # no public accessor (SDK 2.3)
        if (
            era != MODERN
            and isinstance(connection, Connection)
            and connection.has_standalone_channel
        ):
            self.follow(record.id, connection, owner)
        self._start_wait(record, request, case_id, key_of(ctx))
        return self._created(record, era)

    def _created(self, record: TaskRecord, era: Era) -> dict[str, Any]:
        if era == MODERN:
            return {"resultType": "task", **task_json_modern(record)}
        return {"task": task_json(record), "_meta": {MODEL_IMMEDIATE_RESPONSE: IMMEDIATE_TEXT}}

    def _ttl(self, requested: int | None, timeout_s: float) -> int:
        floor = int(timeout_s * 1000) + MIN_RETENTION_AFTER_WAIT_MS
        return max(floor, min(requested or DEFAULT_TTL_MS, MAX_TTL_MS))

    # ------------------------------------------------------------------ polls

    async def _read(self, ctx: Context, task_id: str) -> TaskRecord:
        try:
            found = await self._store().get_task(task_id, owner_of(ctx))
        except HitlError as e:
            raise unavailable(e) from None
        if found is None:
            raise not_found()
        return self.advised(found)

    async def _on_get(self, ctx: Context, params: types.GetTaskRequestParams) -> dict[str, Any]:
        task = await self._read(ctx, params.task_id)
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            return task_json(task)
        # SEP-2663 DetailedTask: the result when completed, the input requests when the
        # operator asked back.
        body: dict[str, Any] = {"resultType": "complete", **task_json_modern(task)}
        status = body["status"]
        if status == "completed":
            body["result"] = await self._result_of(task)
        elif status == "input_required" and isinstance(task.reply, Clarification):
            body["inputRequests"] = input_requests(task.reply)
        return body

    async def _on_result(
        self, ctx: Context, params: types.GetTaskPayloadRequestParams
    ) -> dict[str, Any]:
        """The task's tool result; blocks (re-reading at the poll interval, at once when this
        replica sees the change) until it has one.

        Meanwhile, on this request's stream: the operator's question as an elicitation
        (`input_required`: the spec's "call tasks/result to receive the receiver's requests"),
        and `notifications/tasks/status` whenever the status changes."""
        legacy_only(ctx)
        task = await self._read(ctx, params.task_id)
        reported = effective_status(task)
        asked: set[str] = set()
        while (status := effective_status(task)) not in TERMINAL:
            if status != reported:
                reported = status
                await self._notify_status(ctx, task)
            if status == "input_required" and isinstance(task.reply, Clarification):
                key = clarification_key(task.reply)
                if key not in asked:
                    asked.add(key)
                    await self._ask_for_input(ctx, task, task.reply)
            await self._next_change(task.id, task.poll_interval_ms / 1000)
            task = await self._read(ctx, params.task_id)
        if status != reported:
            await self._notify_status(ctx, task)
        result = await self._result_of(task)
        # `resultType` is 2026-07-28 vocabulary: not on a 2025-11-25 wire.
        result.pop("resultType", None)
        meta = dict(result.get("_meta") or {})
        meta[RELATED_TASK] = {"taskId": task.id}
        return {**result, "_meta": meta}

    async def _result_of(self, task: TaskRecord) -> dict[str, Any]:
        if task.result is not None:
            return dict(task.result)
        if task.status == "cancelled":
            raise MCPError(
                code=types.INVALID_PARAMS, message="Task was cancelled: it has no result"
            )
        relay: Relay = self._relay()
        if task.reply is not None:
            # The creating relay is gone or has not written it yet: the answer as
            # get_human_answer renders it (one more read, this once).
            return dump(self._rendering.render(await relay.get_answer(str(task.case_id))))
        timed_out = AskResult(
            status="timeout",
            case_id=str(task.case_id),
            waited_ms=max(0, round((task.deadline_at - task.created_at).total_seconds() * 1000)),
            deadline_s=round((task.deadline_at - task.created_at).total_seconds()),
            message=relay.options.fallbacks.timeout,
        )
        return dump(self._rendering.render(timed_out))

    async def _on_list(self, ctx: Context, params: types.PaginatedRequestParams) -> dict[str, Any]:
        legacy_only(ctx)  # SEP-2663 removed tasks/list
        after = decode_cursor(params.cursor) if params.cursor else None
        try:
            found = await self._store().list_tasks(owner_of(ctx), after, LIST_PAGE + 1)
        except HitlError as e:
            raise unavailable(e) from None
        page = found[:LIST_PAGE]
        body: dict[str, Any] = {"tasks": [task_json(self.advised(t)) for t in page]}
        if len(found) > LIST_PAGE:
            body["nextCursor"] = encode_cursor(page[-1])
        return body

    async def _on_cancel(
        self, ctx: Context, params: types.CancelTaskRequestParams
    ) -> dict[str, Any]:
        modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        try:
            outcome = await self._store().cancel_task(params.task_id, owner_of(ctx))
        except HitlError as e:
            raise unavailable(e) from None
        if outcome is not None and not outcome.was_terminal:
            scope = self._waits.get(params.task_id)
            if scope is not None:
                scope.cancel()  # this replica waits: relay.ask closes the session `cancelled`
        if modern:
            # SEP-2663: an empty acknowledgement, even for an unknown (or another key's) task.
            return {"resultType": "complete"}
        if outcome is None:
            raise not_found()
        if outcome.was_terminal:
            # Spec: cancelling a task already in a terminal status is -32602.
            raise MCPError(
                code=types.INVALID_PARAMS,
                message="Cannot cancel task: already in terminal status "
                f"{effective_status(outcome.task)!r}",
            )
        return task_json(self.advised(outcome.task))
