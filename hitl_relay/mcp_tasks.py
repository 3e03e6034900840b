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
  also for `needs_info`: in 2025-11-25 `input_required` means "call tasks/result to receive the
  receiver's requests" (elicitation/sampling with related-task metadata), and the operator's
  question is not such a request: it is a result the agent acts on (ask the caller, then call
  ask_human again with case_id, as a new task or a blocking call);
- `failed` when the tool result is an error (invalid arguments: the spec's rule that a tool
  result with `isError` makes the task `failed`);
- `cancelled` after `tasks/cancel`: the session closes `cancelled`, the case stays open.

Task ids are 256 random bits; a task is stored with the SHA-256 of the API key that created it
and every read filters on it, so another key sees "task not found" (-32602), the same answer as
for an id that never existed. Specification: modelcontextprotocol/modelcontextprotocol
`docs/specification/2025-11-25/basic/utilities/tasks.mdx`; wire types: `mcp_types` (mcp 2.3).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import anyio
import anyio.abc
import mcp_types as types
from loguru import logger
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from hitl_relay.errors import HitlError, InvalidRequest
from hitl_relay.models import AskHumanRequest, AskResult, parse_ask_request
from hitl_relay.ports import Answer, Clarification
from hitl_relay.relay import Relay
from hitl_relay.task_store import TERMINAL, NewTask, TaskRecord, TaskStatus, TaskStore

RELATED_TASK = "io.modelcontextprotocol/related-task"
MODEL_IMMEDIATE_RESPONSE = "io.modelcontextprotocol/model-immediate-response"
# The `tasks` server capability (2025-11-25): list, cancel, task-augmented tools/call.
TASKS_CAPABILITY: dict[str, Any] = {
    "list": {},
    "cancel": {},
    "requests": {"tools": {"call": {}}},
}
TASK_TOOLS = frozenset({"ask_human"})
DEFAULT_POLL_INTERVAL_MS = 1000
DEFAULT_TTL_MS = 60 * 60 * 1000  # an hour: time to come back for an answer
MAX_TTL_MS = 24 * 60 * 60 * 1000
# A task outlives its wait by at least this long, so the result is there to fetch.
MIN_RETENTION_AFTER_WAIT_MS = 5 * 60 * 1000
# After the deadline the creating relay writes the timeout result; when it is gone, a poll this
# long after the deadline reports the timeout itself.
ORPHAN_GRACE = timedelta(seconds=10)
LIST_PAGE = 50
IMMEDIATE_TEXT = (
    "Your question is with a human colleague. The answer will be the result of this task; "
    "carry on meanwhile."
)

Context = ServerRequestContext[Any, Any]


def owner_of(ctx: Context) -> str:
    """SHA-256 (hex) of the caller's bearer key: the only identity that may see its tasks.

    Over HTTP the key has been checked by the /mcp gate before the request got here; over stdio
    there is no key, and the one local client owns its tasks."""
    request = ctx.request
    headers = getattr(request, "headers", None)
    authorization = headers.get("authorization") if headers is not None else None
    token = "stdio"
    if isinstance(authorization, str):
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and presented.strip():
            token = presented.strip()
    return hashlib.sha256(token.encode()).hexdigest()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def effective_status(task: TaskRecord) -> TaskStatus:
    """The status a poll reports: the row's, or what the case's reply says when the creating
    relay has not written the result yet (it may be gone)."""
    if task.status in TERMINAL or task.result is not None:
        return task.status
    if task.reply is not None:
        return "completed"
    if task.now > task.deadline_at + ORPHAN_GRACE:
        return "completed"
    return task.status


def status_message(task: TaskRecord, status: TaskStatus) -> str:
    if task.status_message and status == task.status:
        return task.status_message
    if status == "working":
        return "Waiting for a human colleague's answer."
    if isinstance(task.reply, Clarification):
        return "The colleague asked a question back (needs_info)."
    if isinstance(task.reply, Answer):
        return "The colleague answered."
    if status == "cancelled":
        return "The task was cancelled by request."
    return "No answer within the time limit."


def task_json(task: TaskRecord) -> dict[str, Any]:
    """The `Task` object (2025-11-25 schema): every field the spec requires, `ttl` never absent."""
    status = effective_status(task)
    return {
        "taskId": task.id,
        "status": status,
        "statusMessage": status_message(task, status),
        "createdAt": iso(task.created_at),
        "lastUpdatedAt": iso(task.last_updated_at if status == task.status else task.now),
        "ttl": task.ttl_ms,
        "pollInterval": task.poll_interval_ms,
    }


def encode_cursor(task: TaskRecord) -> str:
    raw = json.dumps([task.created_at.isoformat(), task.id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, task_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), str(task_id)
    except (ValueError, TypeError) as e:
        raise MCPError(code=types.INVALID_PARAMS, message="Invalid cursor") from e


def unavailable(error: HitlError) -> MCPError:
    logger.warning("task store unavailable: {}", error)
    return MCPError(code=types.INTERNAL_ERROR, message="Task store unavailable; try again")


def not_found() -> MCPError:
    # The same answer for an unknown id, an expired task and another key's task.
    return MCPError(code=types.INVALID_PARAMS, message="Failed to retrieve task: Task not found")


@dataclass(frozen=True)
class Rendering:
    """How the MCP face renders results (`mcp_server.render` / `render_invalid`)."""

    render: Callable[[AskResult], types.CallToolResult]
    render_invalid: Callable[[InvalidRequest], types.CallToolResult]


class TaskService:
    """Serves the tasks methods for one relay; owns the waits of the tasks it accepted."""

    def __init__(
        self,
        relay: Callable[[], Relay],
        rendering: Rendering,
        *,
        poll_interval_ms: int = DEFAULT_POLL_INTERVAL_MS,
    ) -> None:
        self._relay = relay
        self._rendering = rendering
        self.poll_interval_ms = poll_interval_ms
        self.store: TaskStore | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self._waits: dict[str, anyio.CancelScope] = {}

    @property
    def available(self) -> bool:
        return self.store is not None

    @asynccontextmanager
    async def running(self, store: TaskStore | None) -> AsyncIterator[TaskService]:
        """Serve tasks over `store` (None: this backend keeps no durable state, no tasks)."""
        self.store = store
        try:
            async with anyio.create_task_group() as tg:
                self._group = tg
                try:
                    yield self
                finally:
                    self._group = None
                    # Shutting down: the waits end, the tasks stay `working` in Postgres and any
                    # other replica answers their polls from the case.
                    tg.cancel_scope.cancel()
        finally:
            self.store = None

    def _store(self) -> TaskStore:
        if self.store is None:
            raise MCPError(code=types.METHOD_NOT_FOUND, message="Method not found")
        return self.store

    # ------------------------------------------------------------------ registration

    def install(self, server: Any) -> None:
        """Register the tasks methods and the task-augmented tools/call on the SDK's Server."""
        server.add_request_handler("tasks/get", types.GetTaskRequestParams, self._on_get)
        server.add_request_handler(
            "tasks/result", types.GetTaskPayloadRequestParams, self._on_result
        )
        server.add_request_handler("tasks/list", types.PaginatedRequestParams, self._on_list)
        server.add_request_handler("tasks/cancel", types.CancelTaskRequestParams, self._on_cancel)
        server.middleware.append(self._middleware)

    async def _middleware(self, ctx: Context, call_next: CallNext) -> HandlerResult:
        legacy = ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS
        if ctx.method == "initialize" and self.available:
            result = await call_next(ctx)
            if isinstance(result, dict) and isinstance(result.get("capabilities"), dict):
                result["capabilities"]["tasks"] = TASKS_CAPABILITY
            return result
        params = ctx.params or {}
        if ctx.method == "tools/call" and legacy and params.get("task") is not None:
            # The SDK sieves tools/call results to CallToolResult: a CreateTaskResult is
            # answered here, before that (its shape is this module's to own).
            return await self._create(ctx, params)
        return await call_next(ctx)

    # ------------------------------------------------------------------ creation

    async def _create(self, ctx: Context, params: Mapping[str, Any]) -> dict[str, Any]:
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
        s = self._relay().settings
        try:
            request = parse_ask_request(params.get("arguments") or {})
            timeout = request.timeout_seconds or s.max_timeout_seconds
            if not s.min_timeout_seconds <= timeout <= s.max_timeout_seconds:
                raise InvalidRequest(
                    "timeout_seconds",
                    f"must be between {s.min_timeout_seconds} and {s.max_timeout_seconds}",
                )
        except InvalidRequest as e:
            failed = self._rendering.render_invalid(e)
            record = await store.create_task(
                NewTask(
                    id=task_id,
                    owner=owner,
                    case_id=uuid4(),
                    tool=str(name),
                    era="2025-11-25",
                    timeout_seconds=0,
                    ttl_ms=self._ttl(requested_ttl, 0),
                    poll_interval_ms=self.poll_interval_ms,
                    status="failed",
                    status_message="Invalid arguments.",
                    result=dump(failed),
                )
            )
            return self._created(record)
        request = request.model_copy(update={"timeout_seconds": timeout})
        case_id = UUID(request.case_id) if request.case_id else uuid4()
        record = await store.create_task(
            NewTask(
                id=task_id,
                owner=owner,
                case_id=case_id,
                tool=str(name),
                era="2025-11-25",
                timeout_seconds=timeout,
                ttl_ms=self._ttl(requested_ttl, timeout),
                poll_interval_ms=self.poll_interval_ms,
            )
        )
        if self._group is None:
            raise MCPError(code=types.INTERNAL_ERROR, message="The relay is not serving tasks")
        scope = anyio.CancelScope()
        self._waits[task_id] = scope
        self._group.start_soon(self._wait, task_id, request, case_id, scope)
        return self._created(record)

    def _ttl(self, requested: int | None, timeout_s: float) -> int:
        floor = int(timeout_s * 1000) + MIN_RETENTION_AFTER_WAIT_MS
        return max(floor, min(requested or DEFAULT_TTL_MS, MAX_TTL_MS))

    def _created(self, record: TaskRecord) -> dict[str, Any]:
        return {"task": task_json(record), "_meta": {MODEL_IMMEDIATE_RESPONSE: IMMEDIATE_TEXT}}

    async def _wait(
        self, task_id: str, request: AskHumanRequest, case_id: UUID, scope: anyio.CancelScope
    ) -> None:
        """The accepting relay's wait: the blocking path, then the result into the task row."""
        relay: Relay = self._relay()
        try:
            with scope:
                result: AskResult = await relay.ask(request, None, case_id=case_id)
                if relay.draining:
                    # Shutting down: the fallback is this replica's, not the task's; leave the
                    # task working for the replicas that stay.
                    return
                rendered = self._rendering.render(result)
                status: TaskStatus = "failed" if rendered.is_error else "completed"
                store = self._store()
                with anyio.CancelScope(shield=True):
                    await store.finish_task(
                        task_id,
                        status,
                        None,
                        dump(rendered),
                        UUID(result.case_id) if result.case_id else None,
                    )
        except InvalidRequest as e:
            # A follow-up the platform refused (no such case, another call's case, expired).
            store = self._store()
            with anyio.CancelScope(shield=True):
                await store.finish_task(
                    task_id,
                    "failed",
                    "Invalid arguments.",
                    dump(self._rendering.render_invalid(e)),
                    None,
                )
        except HitlError as e:
            logger.bind(task_id=task_id).warning("task result not recorded: {}", e)
        finally:
            self._waits.pop(task_id, None)

    # ------------------------------------------------------------------ polls

    async def _read(self, ctx: Context, task_id: str) -> TaskRecord:
        try:
            found = await self._store().get_task(task_id, owner_of(ctx))
        except HitlError as e:
            raise unavailable(e) from None
        if found is None:
            raise not_found()
        return found

    async def _on_get(self, ctx: Context, params: types.GetTaskRequestParams) -> dict[str, Any]:
        return task_json(await self._read(ctx, params.task_id))

    async def _on_result(
        self, ctx: Context, params: types.GetTaskPayloadRequestParams
    ) -> dict[str, Any]:
        """The task's tool result; blocks (re-reading at the poll interval) until it has one."""
        task = await self._read(ctx, params.task_id)
        while effective_status(task) not in TERMINAL:
            await anyio.sleep(task.poll_interval_ms / 1000)
            task = await self._read(ctx, params.task_id)
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
            message=self._relay().settings.fallback_timeout,
        )
        return dump(self._rendering.render(timed_out))

    async def _on_list(self, ctx: Context, params: types.PaginatedRequestParams) -> dict[str, Any]:
        after = decode_cursor(params.cursor) if params.cursor else None
        try:
            found = await self._store().list_tasks(owner_of(ctx), after, LIST_PAGE + 1)
        except HitlError as e:
            raise unavailable(e) from None
        page = found[:LIST_PAGE]
        body: dict[str, Any] = {"tasks": [task_json(t) for t in page]}
        if len(found) > LIST_PAGE:
            body["nextCursor"] = encode_cursor(page[-1])
        return body

    async def _on_cancel(
        self, ctx: Context, params: types.CancelTaskRequestParams
    ) -> dict[str, Any]:
        try:
            outcome = await self._store().cancel_task(params.task_id, owner_of(ctx))
        except HitlError as e:
            raise unavailable(e) from None
        if outcome is None:
            raise not_found()
        if outcome.was_terminal:
            # Spec: cancelling a task already in a terminal status is -32602.
            raise MCPError(
                code=types.INVALID_PARAMS,
                message="Cannot cancel task: already in terminal status "
                f"{effective_status(outcome.task)!r}",
            )
        scope = self._waits.get(params.task_id)
        if scope is not None:
            scope.cancel()  # this replica waits for it: relay.ask closes the session `cancelled`
        return task_json(outcome.task)


def dump(result: types.CallToolResult) -> dict[str, Any]:
    return result.model_dump(by_alias=True, exclude_none=True, mode="json")
