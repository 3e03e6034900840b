"""The 2026-07-28 tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) end to end: the
Python SDK's `Client` on the newest protocol, with the extension client of
`tasks_extension_client` (the SDK has none), against a relay on the devstack.

Checked against modelcontextprotocol/modelcontextprotocol `seps/2663-tasks-extension.md`: the
extension in the server's capabilities, per-request opt-in, `CreateTaskResult` with
`resultType: "task"`, `tasks/get` with the result inline when completed and `inputRequests`
when the operator asked back, `tasks/update` continuing the case, `tasks/cancel` an empty
acknowledgement; a client that does not opt in gets the blocking result.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg
import httpx2
import mcp_types as types
from conftest import API_KEY, Stack
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from tasks_extension_client import (
    IDENTIFIER,
    CancelTaskRequest,
    TaskIdParams,
    TasksExtension,
)
from waiting import wait_until

from hitl_devstack.operator_sim import SimulatedOperator

MODERN = "2026-07-28"


@asynccontextmanager
async def client_with(
    url: str, tasks: TasksExtension | None, replies: list[tuple[str, str]] | None = None
) -> AsyncIterator[Client]:
    """`replies`, when given, collects (JSON-RPC method, response content type) per POST."""
    headers = {"Authorization": f"Bearer {API_KEY}"}

    async def record(response: httpx2.Response) -> None:
        if replies is not None and response.request.method == "POST":
            sent = json.loads(response.request.content or b"{}")
            kind = response.headers.get("content-type", "").split(";")[0]
            replies.append((str(sent.get("method")), kind))

    hooks = {"response": [record]}
    async with (
        httpx2.AsyncClient(
            headers=headers, timeout=httpx2.Timeout(30.0, read=120.0), event_hooks=hooks
        ) as http,
        Client(
            streamable_http_client(url, http_client=http),
            extensions=[tasks] if tasks is not None else None,
        ) as client,
    ):
        yield client


def ask_args(question: str, timeout_s: int = 60) -> dict[str, Any]:
    call = f"call_t26_{uuid.uuid4().hex[:10]}"
    return {
        "question": question,
        "call_id": call,
        "session_id": f"mcp-{call}",
        "agent_id": "agent_tasks",
        "timeout_seconds": timeout_s,
    }


async def started_operator(stack: Stack) -> SimulatedOperator:
    operator = stack.operator(auto_answer=False)
    await operator.start()
    return operator


async def test_python_sdk_gets_a_task_handle_and_the_answer_by_polling(stack: Stack) -> None:
    operator = await started_operator(stack)
    tasks = TasksExtension()
    result: dict[str, types.CallToolResult] = {}
    try:
        async with client_with(stack.mcp_url, tasks) as client:
            assert client.protocol_version == MODERN
            assert IDENTIFIER in (client.server_capabilities.extensions or {})

            async def call() -> None:
                result["r"] = await client.call_tool("ask_human", ask_args("Refund allowed?"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                case = await operator.next_case()
                await operator.answer(str(case["case_id"]), "Yes, refund it.")
    finally:
        await operator.stop()
    created = tasks.created[0]
    assert created.result_type == "task"
    assert created.status == "working"
    assert created.ttl_seconds is not None
    assert created.poll_interval_milliseconds is not None
    assert len(created.task_id) >= 43
    final = tasks.polls[-1]
    assert final["resultType"] == "complete"
    assert final["status"] == "completed"
    assert final["result"]["structuredContent"]["status"] == "answered"
    assert {p["status"] for p in tasks.polls} <= {"working", "completed"}
    assert result["r"].structured_content is not None
    assert result["r"].structured_content["answer"] == "Yes, refund it."


async def test_the_operators_question_is_input_required_and_tasks_update_continues_the_case(
    stack: Stack,
) -> None:
    operator = await started_operator(stack)
    seen_requests: list[tuple[str, dict[str, Any]]] = []

    async def on_input(key: str, request: dict[str, Any]) -> dict[str, Any]:
        seen_requests.append((key, request))
        return {"action": "accept", "content": {"reply": "Order 4411."}}

    tasks = TasksExtension(on_input=on_input)
    result: dict[str, types.CallToolResult] = {}
    db = await asyncpg.connect(stack.db_url)
    try:
        async with client_with(stack.mcp_url, tasks) as client:

            async def call() -> None:
                result["r"] = await client.call_tool("ask_human", ask_args("Can we ship today?"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                case_id = str((await operator.next_case())["case_id"])
                await operator.answer(case_id, "Which order number?", kind="clarification")

                async def follow_up_arrived() -> bool:
                    return bool(
                        await db.fetchval(
                            "select count(*) from public.messages where case_id = $1::uuid"
                            " and sender_type = 'ai' and content = 'Order 4411.'",
                            case_id,
                        )
                    )

                await wait_until(follow_up_arrived, "the caller's reply in the case", 30)
                await operator.answer(case_id, "Order 4411 ships today.")
    finally:
        await db.close()
        await operator.stop()
    statuses = [p["status"] for p in tasks.polls]
    assert "input_required" in statuses
    asked = next(p for p in tasks.polls if p["status"] == "input_required")
    (key, request), *_ = asked["inputRequests"].items()
    assert key.startswith("clarification-")
    assert request["method"] == "elicitation/create"
    assert request["params"]["mode"] == "form"
    assert request["params"]["message"] == "Which order number?"
    assert request["params"]["requestedSchema"]["required"] == ["reply"]
    assert seen_requests[0][0] == key
    assert statuses[-1] == "completed"
    assert result["r"].structured_content is not None
    assert result["r"].structured_content["answer"] == "Order 4411 ships today."


async def test_a_client_that_does_not_opt_in_gets_the_blocking_result(stack: Stack) -> None:
    operator = await started_operator(stack)
    result: dict[str, types.CallToolResult] = {}
    try:
        async with client_with(stack.mcp_url, None) as client:

            async def call() -> None:
                result["r"] = await client.call_tool("ask_human", ask_args("Blocking?"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                case = await operator.next_case()
                await operator.answer(str(case["case_id"]), "Answered in the call.")
    finally:
        await operator.stop()
    assert result["r"].structured_content is not None
    assert result["r"].structured_content["answer"] == "Answered in the call."
    db = await asyncpg.connect(stack.db_url)
    try:
        tasks = await db.fetchval(
            "select count(*) from public.hil_tasks where case_id = $1::uuid",
            result["r"].structured_content["case_id"],
        )
    finally:
        await db.close()
    assert tasks == 0


async def test_tasks_cancel_is_an_acknowledgement_and_cancels_the_task(stack: Stack) -> None:
    operator = await started_operator(stack)
    tasks = TasksExtension()
    try:
        async with client_with(stack.mcp_url, tasks) as client, anyio.create_task_group() as tg:

            async def call() -> None:
                try:
                    await client.call_tool("ask_human", ask_args("Cancel me?"))
                except Exception as e:  # the resolver reports the cancelled task
                    tasks.polls.append({"error": str(e)})

            tg.start_soon(call)
            await operator.next_case()

            async def created() -> bool:
                return bool(tasks.created)

            await wait_until(created, "the task handle")
            task_id = tasks.created[0].task_id
            ack = await client.session.send_request(
                CancelTaskRequest(params=TaskIdParams(task_id=task_id)),
                types.EmptyResult,
            )
            unknown = await client.session.send_request(
                CancelTaskRequest(params=TaskIdParams(task_id="no-such-task-" + "x" * 40)),
                types.EmptyResult,
            )
            db = await asyncpg.connect(stack.db_url)
            try:
                stored = await db.fetchval(
                    "select status from public.hil_tasks where id = $1", task_id
                )
            finally:
                await db.close()
    finally:
        await operator.stop()
    assert ack.result_type == "complete"
    assert unknown.result_type == "complete"  # an empty ack even for an unknown task
    assert stored == "cancelled"
    # The polling client saw it end: the resolver raised for the cancelled task.
    assert "cancelled" in str(tasks.polls[-1].get("error") or tasks.polls[-1].get("status"))


async def test_a_reply_that_breaks_the_question_rules_is_refused_naming_the_field(
    stack: Stack,
) -> None:
    operator = await started_operator(stack)

    async def on_input(key: str, request: dict[str, Any]) -> dict[str, Any]:
        return {"action": "accept", "content": {"reply": "x" * 2001}}

    tasks = TasksExtension(on_input=on_input)
    refused: list[MCPError] = []
    try:
        async with client_with(stack.mcp_url, tasks) as client, anyio.create_task_group() as tg:

            async def call() -> None:
                try:
                    await client.call_tool("ask_human", ask_args("Long reply?"))
                except MCPError as e:
                    refused.append(e)

            tg.start_soon(call)
            case_id = str((await operator.next_case())["case_id"])
            await operator.answer(case_id, "Tell me everything.", kind="clarification")
    finally:
        await operator.stop()
    assert refused[0].error.code == -32602
    assert "content.reply" in refused[0].error.message
    assert "2000" in refused[0].error.message


async def test_task_polls_are_answered_as_plain_json(stack: Stack) -> None:
    """At 2026-07-28 the SDK's own entry answers a poll with one JSON body (the relay sends no
    notification on a tasks/get stream); `mcp_http` routes only the handshake-era polls."""
    operator = await started_operator(stack)
    tasks = TasksExtension()
    replies: list[tuple[str, str]] = []
    try:
        async with client_with(stack.mcp_url, tasks, replies) as client:

            async def call() -> None:
                await client.call_tool("ask_human", ask_args("Refund allowed?"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                case = await operator.next_case()
                await operator.answer(str(case["case_id"]), "Yes, refund it.")
    finally:
        await operator.stop()
    polls = {kind for method, kind in replies if method == "tasks/get"}
    assert polls == {"application/json"}, replies
    assert tasks.polls[-1]["status"] == "completed"
