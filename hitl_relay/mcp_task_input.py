"""The `input_required` flow: the operator's question sent to the caller (an elicitation on a
2025-11-25 `tasks/result` stream, `tasks/update` at 2026-07-28), the caller's reply continuing
the case, and the status notifications on a request's stream."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import mcp_types as types
from loguru import logger
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from hitl_relay.errors import HitlError, InvalidRequest
from hitl_relay.mcp_task_waits import TaskWaits
from hitl_relay.mcp_task_wire import (
    CLIENT_GONE,
    RELATED_TASK,
    Context,
    UpdateTaskParams,
    accepted_reply,
    clarification_key,
    dump,
    effective_status,
    input_request_id,
    input_requests,
    owner_of,
    parse_input_request_id,
    raw_writer,
    task_json,
    unavailable,
)
from hitl_relay.models import parse_ask_request
from hitl_relay.ports import Clarification
from hitl_relay.security.middleware import key_of
from hitl_relay.task_store import TaskRecord


class TaskInput(TaskWaits):
    """The operator's question to the caller and the caller's reply."""

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
