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

import base64
import hashlib
import json
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, Protocol, cast
from uuid import UUID, uuid4

import anyio
import anyio.abc
import mcp_types as types
from loguru import logger
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import CLIENT_CAPABILITIES_META_KEY, SERVER_INFO_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from hitl_relay.errors import HitlError, InvalidRequest
from hitl_relay.models import AskHumanRequest, AskResult, parse_ask_request
from hitl_relay.ports import Answer, Clarification
from hitl_relay.relay import Relay
from hitl_relay.security.middleware import key_of
from hitl_relay.task_store import TERMINAL, Era, NewTask, TaskRecord, TaskStatus, TaskStore

RELATED_TASK = "io.modelcontextprotocol/related-task"
TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
MODERN: Final = "2026-07-28"
TASKS_VERSION: Final = "2025-11-25"  # the handshake-era version that has tasks/*
MODEL_IMMEDIATE_RESPONSE = "io.modelcontextprotocol/model-immediate-response"
# The `tasks` server capability (2025-11-25): list, cancel, task-augmented tools/call.
TASKS_CAPABILITY: dict[str, Any] = {
    "list": {},
    "cancel": {},
    "requests": {"tools": {"call": {}}},
}
TASK_TOOLS = frozenset({"ask_human"})
DEFAULT_TTL_MS = 60 * 60 * 1000  # an hour: time to come back for an answer
MAX_TTL_MS = 24 * 60 * 60 * 1000
# A task outlives its wait by at least this long, so the result is there to fetch.
MIN_RETENTION_AFTER_WAIT_MS = 5 * 60 * 1000
# After the deadline the creating relay writes the timeout result; when it is gone, a poll this
# long after the deadline reports the timeout itself.
ORPHAN_GRACE = timedelta(seconds=10)
LIST_PAGE = 50
# Pauses before recording a task's result again after a failed RPC (the platform under load).
FINISH_RETRY_PAUSES_S = (0.5, 1.0)
# Ids of the elicitations sent on a 2025-11-25 tasks/result stream (`input_request_id`).
INPUT_REQUEST_PREFIX = "hitl-task-input"
# Errors of a client that went away while we wrote to its stream (progress, a notification):
# what it was waiting for goes on regardless.
CLIENT_GONE = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream)
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
    return owner_of_authorization(authorization if isinstance(authorization, str) else None)


def owner_of_authorization(authorization: str | None) -> str:
    """`owner_of` from the request's Authorization header (None: no key, as over stdio)."""
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
    relay has not written the result yet (it may be gone). The operator's question back is
    `input_required` in both eras: 2025-11-25 carries it as an elicitation on `tasks/result`,
    2026-07-28 as `inputRequests` on `tasks/get`."""
    if task.status in TERMINAL or task.result is not None:
        return task.status
    if isinstance(task.reply, Clarification):
        return "input_required"
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
    if status == "input_required":
        if task.era == MODERN:
            return "The colleague asked a question back: answer it with tasks/update."
        return "The colleague asked a question back: call tasks/result to answer it."
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


def task_json_modern(task: TaskRecord) -> dict[str, Any]:
    """The `Task` fields of the tasks extension (SEP-2663): ttl in seconds, poll interval in ms."""
    status = effective_status(task)
    return {
        "taskId": task.id,
        "status": status,
        "statusMessage": status_message(task, status),
        "createdAt": iso(task.created_at),
        "lastUpdatedAt": iso(task.last_updated_at if status == task.status else task.now),
        "ttlSeconds": math.ceil(task.ttl_ms / 1000),
        "pollIntervalMilliseconds": task.poll_interval_ms,
    }


def clarification_key(clarification: Clarification) -> str:
    # Unique over the task's life (SEP-2663 "Task Input Requests"): one key per operator message.
    return f"clarification-{clarification.message_id}"


def input_requests(clarification: Clarification) -> dict[str, Any]:
    """The operator's question as a form elicitation the client puts to its user (the caller)."""
    return {
        clarification_key(clarification): {
            "method": "elicitation/create",
            "params": {
                "mode": "form",
                "message": clarification.content.strip(),
                "requestedSchema": {
                    "type": "object",
                    "properties": {
                        "reply": {
                            "type": "string",
                            "description": "The caller's answer to the colleague's question.",
                        }
                    },
                    "required": ["reply"],
                },
            },
        }
    }


def input_request_id(task_id: str, key: str) -> str:
    """The JSON-RPC id of the elicitation a 2025-11-25 `tasks/result` sends: it names the task
    and the question, so the client's response, POSTed to any replica, finds both."""
    return f"{INPUT_REQUEST_PREFIX}:{task_id}:{key}"


def parse_input_request_id(value: object) -> tuple[str, str] | None:
    """(task id, question key) from an `input_request_id`; None for any other id."""
    if not isinstance(value, str):
        return None
    prefix, _, rest = value.partition(":")
    task_id, _, key = rest.partition(":")
    if prefix != INPUT_REQUEST_PREFIX or not task_id or not key:
        return None
    return task_id, key


def accepted_reply(result: object) -> str | None:
    """The caller's reply from an elicitation result (`action: accept`, `content.reply`)."""
    if not isinstance(result, Mapping) or result.get("action") != "accept":
        return None
    content = result.get("content")
    reply = content.get("reply") if isinstance(content, Mapping) else None
    return reply.strip() if isinstance(reply, str) and reply.strip() else None


def opted_in(params: Mapping[str, Any]) -> bool:
    """SEP-2663: the client lists the extension in this request's own capabilities."""
    meta = params.get("_meta")
    caps = meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, Mapping) else None
    extensions = caps.get("extensions") if isinstance(caps, Mapping) else None
    return isinstance(extensions, Mapping) and TASKS_EXTENSION in extensions


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
    ) -> None:
        self._relay = relay
        self._rendering = rendering
        self.store: TaskStore | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self._waits: dict[str, anyio.CancelScope] = {}
        # Set when this replica sees a task change (its wait ended, an input response came in):
        # a `tasks/result` blocking here returns at once instead of at its next re-read.
        self._changes: dict[str, anyio.Event] = {}
        # Tasks created over a connection with a channel of its own to the client (stdio):
        # every status change this relay sees is announced on it (`_announce`).
        self._followers: dict[str, tuple[Channel, str]] = {}
        self._server: Any = None

    @property
    def available(self) -> bool:
        return self.store is not None

    @asynccontextmanager
    async def running(self, store: TaskStore | None) -> AsyncIterator[TaskService]:
        """Serve tasks over `store` (None: this backend keeps no durable state, no tasks)."""
        self.store = store
        if store is not None and self._server is not None:
            # SEP-2663: advertised in the capabilities (server/discover); empty settings.
            self._server.extensions[TASKS_EXTENSION] = {}
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
            if self._server is not None:
                self._server.extensions.pop(TASKS_EXTENSION, None)

    def _store(self) -> TaskStore:
        if self.store is None:
            raise MCPError(code=types.METHOD_NOT_FOUND, message="Method not found")
        return self.store

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
            poll_interval_ms=s.task_poll_interval_ms,
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

    def follow(self, task_id: str, channel: Channel, owner: str) -> None:
        """Announce the task's status changes on `channel` (the connection that created it)."""
        self._followers[task_id] = (channel, owner)

    async def _announce(self, task_id: str) -> None:
        """`notifications/tasks/status` to the connection that created the task, if it has a
        channel of its own (stdio; stateless HTTP has none: there a blocking `tasks/result`
        carries them). Best effort: one read of the task, and polls stay the truth."""
        follower = self._followers.get(task_id)
        if follower is None:
            return
        channel, owner = follower
        try:
            task = await self._store().get_task(task_id, owner)
        except HitlError as e:
            logger.bind(task_id=task_id).debug("status not announced: {}", e)
            return
        if task is None or effective_status(task) in TERMINAL:
            self._followers.pop(task_id, None)
        if task is not None:
            await channel.notify("notifications/tasks/status", task_json(task))

    def _start_wait(
        self, record: TaskRecord, request: AskHumanRequest, case_id: UUID, key: str | None
    ) -> None:
        """`key`: the API key's fingerprint, so the task's case belongs to the key as a blocking
        call's does (a follow-up or `get_human_answer` with another key is refused)."""
        if self._group is None:
            raise MCPError(code=types.INTERNAL_ERROR, message="The relay is not serving tasks")
        scope = anyio.CancelScope()
        self._waits[record.id] = scope
        self._group.start_soon(self._wait, record, request, case_id, key, scope)

    def _ttl(self, requested: int | None, timeout_s: float) -> int:
        floor = int(timeout_s * 1000) + MIN_RETENTION_AFTER_WAIT_MS
        return max(floor, min(requested or DEFAULT_TTL_MS, MAX_TTL_MS))

    def _created(self, record: TaskRecord, era: Era) -> dict[str, Any]:
        if era == MODERN:
            return {"resultType": "task", **task_json_modern(record)}
        return {"task": task_json(record), "_meta": {MODEL_IMMEDIATE_RESPONSE: IMMEDIATE_TEXT}}

    async def _wait(
        self,
        record: TaskRecord,
        request: AskHumanRequest,
        case_id: UUID,
        key: str | None,
        scope: anyio.CancelScope,
    ) -> None:
        """The accepting relay's wait: the blocking path, then the result into the task row."""
        relay: Relay = self._relay()
        try:
            with scope:
                result: AskResult = await relay.ask(request, None, owner=key, case_id=case_id)
                if relay.draining:
                    # Shutting down: the fallback is this replica's, not the task's; leave the
                    # task working for the replicas that stay.
                    return
                if result.status == "needs_info":
                    # input_required, read from the case by every poll; the caller's reply
                    # (2025-11-25: the elicitation's response; 2026-07-28: tasks/update)
                    # continues the case.
                    return
                rendered = self._rendering.render(result)
                status: TaskStatus = (
                    "failed" if rendered.is_error and record.era != MODERN else "completed"
                )
                with anyio.CancelScope(shield=True):
                    await self._finish(
                        record.id,
                        status,
                        None,
                        dump(rendered),
                        UUID(result.case_id) if result.case_id else None,
                    )
        except InvalidRequest as e:
            # A follow-up the platform refused (no such case, another call's case, expired).
            with anyio.CancelScope(shield=True):
                await self._finish(
                    record.id,
                    "failed" if record.era != MODERN else "completed",
                    "Invalid arguments.",
                    dump(self._rendering.render_invalid(e)),
                    None,
                )
        except HitlError as e:
            logger.bind(task_id=record.id).warning("task result not recorded: {}", e)
        finally:
            self._waits.pop(record.id, None)
            self._changed(record.id)
            if record.id in self._followers and not relay.draining:
                with anyio.CancelScope(shield=True):
                    await self._announce(record.id)

    async def _finish(
        self,
        task_id: str,
        status: TaskStatus,
        status_message: str | None,
        result: Mapping[str, Any],
        case_id: UUID | None,
    ) -> None:
        """Record the result, trying again after a failed RPC: a result that is not recorded
        leaves a task whose case never opened `working` until its deadline (there is no reply
        for a poll to derive it from). Raises the last `HitlError`."""
        for attempt, pause in enumerate((*FINISH_RETRY_PAUSES_S, None)):
            try:
                await self._store().finish_task(task_id, status, status_message, result, case_id)
                return
            except HitlError as e:
                if pause is None:
                    raise
                logger.bind(task_id=task_id).info("recording the result, again: {}", e)
                await anyio.sleep(pause * (1 + attempt))  # back-off before the next attempt

    def _changed(self, task_id: str) -> None:
        event = self._changes.pop(task_id, None)
        if event is not None:
            event.set()

    async def _next_change(self, task_id: str, timeout_s: float) -> None:
        """Until this replica sees the task change, or `timeout_s` (another replica's change is
        seen by re-reading)."""
        event = self._changes.setdefault(task_id, anyio.Event())
        try:
            with anyio.move_on_after(timeout_s):
                await event.wait()
        finally:
            # Nothing kept for a task whose change another replica saw (or none did).
            if not event.is_set() and self._changes.get(task_id) is event:
                del self._changes[task_id]

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

    async def _notify_status(self, ctx: Context, task: TaskRecord) -> None:
        """`notifications/tasks/status` (the full Task, no related-task `_meta`) on this request's
        stream: best effort, a client that went away just misses it (polls stay the truth)."""
        params = task_json(task)
        try:
            notification = types.TaskStatusNotification(
                params=types.TaskStatusNotificationParams(**params)
            )
            # The SDK's ServerNotification union (2.3) lacks the tasks notification; the
            # session serializes whatever notification model it is given.
            await ctx.session.send_notification(
                cast(Any, notification), related_request_id=ctx.request_id
            )
        except CLIENT_GONE:
            logger.bind(task_id=task.id).debug("status notification not delivered")

    async def _ask_for_input(
        self, ctx: Context, task: TaskRecord, clarification: Clarification
    ) -> None:
        """The operator's question as the spec's side-channelled `elicitation/create` (with the
        related-task `_meta`) on this `tasks/result` stream.

        Over stdio the connection carries the client's response back to this request; over
        stateless HTTP it cannot (the response is a new POST, to any replica): the request is
        written with an id naming the task and the question (`input_request_id`), and
        `mcp_http.McpRouter` hands the response to `input_response` wherever it lands."""
        elicitation = input_requests(clarification)[clarification_key(clarification)]
        params = {**elicitation["params"], "_meta": {RELATED_TASK: {"taskId": task.id}}}
        request_id = input_request_id(task.id, clarification_key(clarification))
        if ctx.session.can_send_request:
            try:
                result = await ctx.session.send_request(
                    types.ElicitRequest(params=types.ElicitRequestFormParams(**params)),
                    types.ElicitResult,
                    metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
                )
                response = {"result": result.model_dump(by_alias=True, exclude_none=True)}
            except MCPError as e:
                response = {"error": {"code": e.error.code, "message": e.error.message}}
            await self.input_response(owner_of(ctx), key_of(ctx), {"id": request_id, **response})
            return
        write = raw_writer(ctx)
        if write is None:
            logger.bind(task_id=task.id).warning("no stream to send the operator's question on")
            return
        message = types.JSONRPCRequest(
            jsonrpc="2.0", id=request_id, method="elicitation/create", params=params
        )
        try:
            await write(message, ServerMessageMetadata(related_request_id=ctx.request_id))
        except CLIENT_GONE:
            logger.bind(task_id=task.id).debug("the client left before the question was sent")

    async def input_response(self, owner: str, key: str | None, message: Mapping[str, Any]) -> bool:
        """A client's JSON-RPC response to an elicitation `_ask_for_input` sent; False when the
        message is not one (its id is not ours). Accepted with a reply: the reply continues the
        case, as `tasks/update` does at 2026-07-28 (the task goes back to `working`). Declined,
        cancelled, refused with an error (a client without elicitation), or a reply
        `ask_human` would refuse: the operator's question becomes the task's result
        (`needs_info`, as a blocking call returns it) so the agent can act on it. A response
        to a question that is not outstanding (already answered, another key's task) is
        ignored."""
        ids = parse_input_request_id(message.get("id"))
        if ids is None:
            return False
        task_id, question = ids
        store = self._store()
        task = await store.get_task(task_id, owner)
        if (
            task is None
            or effective_status(task) != "input_required"
            or not isinstance(task.reply, Clarification)
            or clarification_key(task.reply) != question
        ):
            return True
        reply = accepted_reply(message.get("result"))
        if reply is not None:
            try:
                await self._continue(task, owner, key, reply)
                return True
            except InvalidRequest as e:
                logger.bind(task_id=task.id).info("the caller's reply was refused: {}", e)
        try:
            rendered = self._rendering.render(await self._relay().get_answer(str(task.case_id)))
        except InvalidRequest as e:
            rendered = self._rendering.render_invalid(e)  # the case is gone
        await store.finish_task(
            task.id,
            "failed" if rendered.is_error else "completed",
            None,
            dump(rendered),
            task.case_id,
        )
        self._changed(task.id)
        await self._announce(task.id)
        return True

    async def _continue(self, task: TaskRecord, owner: str, key: str | None, reply: str) -> None:
        """The caller's reply to the operator's question continues the case (a follow-up, as
        `ask_human` with case_id would) and this replica waits for the answer. Raises
        `InvalidRequest` when the reply breaks a rule of ask_human's question."""
        s = self._relay().options
        follow_up = parse_ask_request(
            {
                **{k: v for k, v in task.call.items() if v is not None},
                "question": reply,
                "case_id": str(task.case_id),
                "timeout_seconds": s.max_timeout_s,
            }
        )
        resumed = await self._store().resume_task(task.id, owner, s.max_timeout_s)
        if resumed is not None and task.id not in self._waits:
            self._start_wait(resumed, follow_up, task.case_id, key)
        self._changed(task.id)

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
        body: dict[str, Any] = {"tasks": [task_json(t) for t in page]}
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
        return task_json(outcome.task)

    async def _on_update(self, ctx: Context, params: UpdateTaskParams) -> dict[str, Any]:
        """SEP-2663 tasks/update: the caller's reply to the operator's question continues the
        case (a follow-up, as `ask_human` with case_id would) on this replica. Always an empty
        acknowledgement; responses to keys that are not outstanding are ignored."""
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            raise MCPError(code=types.METHOD_NOT_FOUND, message="Method not found")
        ack = {"resultType": "complete"}
        owner = owner_of(ctx)
        try:
            task = await self._store().get_task(params.task_id, owner)
        except HitlError as e:
            raise unavailable(e) from None
        if task is None or effective_status(task) != "input_required":
            return ack
        assert isinstance(task.reply, Clarification)
        response = params.input_responses.get(clarification_key(task.reply))
        reply = accepted_reply(response)
        if reply is None:
            # decline/cancel/no reply: the task waits for a reply, a cancel or its ttl
            return ack
        try:
            await self._continue(task, owner, key_of(ctx), reply)
        except InvalidRequest as e:
            # The reply breaks a rule of ask_human's question (e.g. its length): say which.
            problems = "; ".join(
                f"inputResponses.{clarification_key(task.reply)}.content.reply: {rule}"
                for field, rule in e.problems
                if field == "question"
            )
            raise MCPError(code=types.INVALID_PARAMS, message=problems or str(e)) from None
        except HitlError as e:
            raise unavailable(e) from None
        return ack


class Channel(Protocol):
    """Where `_announce` sends: the SDK's `Connection` (its standalone channel)."""

    async def notify(self, method: str, params: Mapping[str, Any] | None) -> None: ...


class UpdateTaskParams(types.RequestParams):
    """`tasks/update` params (SEP-2663): the task and the client's responses by request key."""

    task_id: str
    input_responses: dict[str, Any] = {}
    request_state: str | None = None


def raw_writer(ctx: Context) -> Callable[[types.JSONRPCRequest, Any], Awaitable[None]] | None:
    """The dispatcher's write onto the request's own stream. The SDK (2.3) offers no public way
    to put a request on a stateless POST's stream without awaiting a response that, there,
    can never come back to it; None if its internals changed."""
    outbound = getattr(ctx.session, "_request_outbound", None)
    dispatcher = getattr(outbound, "_dispatcher", None)
    write = getattr(dispatcher, "_write", None)
    return write if callable(write) else None


def legacy_only(ctx: Context) -> None:
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        raise MCPError(code=types.METHOD_NOT_FOUND, message="Method not found")


def dump(result: types.CallToolResult) -> dict[str, Any]:
    return result.model_dump(by_alias=True, exclude_none=True, mode="json")
