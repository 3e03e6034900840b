"""The MCP tasks' wire: task records as the protocol shows them (status, JSON of both eras,
cursors, input requests and their ids), who owns a task, and the shared constants and errors."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import anyio
import anyio.abc
import mcp_types as types
from loguru import logger
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import CLIENT_CAPABILITIES_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from hitl_relay.errors import HitlError, InvalidRequest
from hitl_relay.models import AskResult
from hitl_relay.ports import Answer, Clarification
from hitl_relay.task_store import TERMINAL, TaskRecord, TaskStatus

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


def _task_fields(task: TaskRecord) -> dict[str, Any]:
    """The fields both eras' `Task` objects share, as of now."""
    status = effective_status(task)
    return {
        "taskId": task.id,
        "status": status,
        "statusMessage": status_message(task, status),
        "createdAt": iso(task.created_at),
        "lastUpdatedAt": iso(task.last_updated_at if status == task.status else task.now),
    }


def task_json(task: TaskRecord) -> dict[str, Any]:
    """The `Task` object (2025-11-25 schema): every field the spec requires, `ttl` never absent."""
    return {**_task_fields(task), "ttl": task.ttl_ms, "pollInterval": task.poll_interval_ms}


def task_json_modern(task: TaskRecord) -> dict[str, Any]:
    """The `Task` fields of the tasks extension (SEP-2663): ttl in seconds, poll interval in ms."""
    return {
        **_task_fields(task),
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
