"""MCP tasks without a database: the status a poll reports in each era, the wire shapes of both
eras, the opt-in test, cursors, and a relay without a task store serving exactly the tools it
served before (no task support advertised)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.composition import build_relay
from hitl_relay.config import Settings
from hitl_relay.mcp_server import RelayMcpServer
from hitl_relay.mcp_task_wire import (
    ORPHAN_GRACE,
    RELATED_TASK,
    TASKS_EXTENSION,
    accepted_reply,
    clarification_key,
    decode_cursor,
    effective_status,
    encode_cursor,
    input_request_id,
    input_requests,
    opted_in,
    owner_of,
    owner_of_authorization,
    parse_input_request_id,
    task_json,
    task_json_modern,
)
from hitl_relay.ports import Answer, Clarification
from hitl_relay.task_store import TaskRecord

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def record(**overrides: object) -> TaskRecord:
    fields: dict[str, object] = {
        "id": "t" * 43,
        "case_id": uuid4(),
        "tool": "ask_human",
        "call": {},
        "era": "2025-11-25",
        "status": "working",
        "status_message": None,
        "result": None,
        "created_at": NOW,
        "last_updated_at": NOW,
        "deadline_at": NOW + timedelta(seconds=60),
        "ttl_ms": 3_900_000,
        "poll_interval_ms": 1000,
        "now": NOW + timedelta(seconds=5),
        "reply": None,
    }
    fields.update(overrides)
    return TaskRecord(**fields)  # type: ignore[arg-type]


def answer() -> Answer:
    return Answer(
        message_id=uuid4(),
        case_id=uuid4(),
        content="Yes.",
        kind="answer",
        sender_id="op",
        created_at=NOW,
    )


def clarification() -> Clarification:
    return Clarification(
        message_id=uuid4(), case_id=uuid4(), content="Which order?", sender_id="op", created_at=NOW
    )


def test_a_waiting_task_is_working_in_both_eras() -> None:
    assert effective_status(record()) == "working"
    assert effective_status(record(era="2026-07-28")) == "working"


def test_a_committed_answer_completes_the_task_before_the_relay_records_it() -> None:
    assert effective_status(record(reply=answer())) == "completed"
    assert effective_status(record(reply=answer(), era="2026-07-28")) == "completed"


def test_the_operators_question_is_input_required_in_both_eras() -> None:
    # 2025-11-25: elicited on tasks/result; 2026-07-28: inputRequests on tasks/get.
    assert effective_status(record(reply=clarification())) == "input_required"
    assert effective_status(record(reply=clarification(), era="2026-07-28")) == "input_required"
    # ... until a result is recorded (the elicitation declined: needs_info is the result).
    answered = record(reply=clarification(), status="completed", result={"content": []})
    assert effective_status(answered) == "completed"


def test_input_request_ids_name_the_task_and_the_question_and_nothing_else_parses() -> None:
    task_id = "a-B_c" * 9
    assert parse_input_request_id(input_request_id(task_id, "clarification-1")) == (
        task_id,
        "clarification-1",
    )
    for other in (7, None, "1", "hitl-task-input:", f"hitl-task-input:{task_id}", "x:y:z"):
        assert parse_input_request_id(other) is None


def test_only_an_accepted_non_empty_reply_continues_the_case() -> None:
    assert accepted_reply({"action": "accept", "content": {"reply": " Order 42 "}}) == "Order 42"
    for declined in (
        {"action": "decline"},
        {"action": "cancel"},
        {"action": "accept", "content": {"reply": "  "}},
        {"action": "accept", "content": {"other": "x"}},
        None,
    ):
        assert accepted_reply(declined) is None


def test_a_task_whose_relay_is_gone_reports_the_timeout_after_the_deadline() -> None:
    late = record(now=NOW + timedelta(seconds=60) + ORPHAN_GRACE + timedelta(seconds=1))
    assert effective_status(late) == "completed"
    assert effective_status(record(now=NOW + timedelta(seconds=61))) == "working"


def test_a_cancelled_task_stays_cancelled_whatever_the_case_says() -> None:
    assert effective_status(record(status="cancelled", reply=answer())) == "cancelled"


def test_the_2025_task_object_has_every_required_field() -> None:
    shown = task_json(record())
    assert shown == {
        "taskId": "t" * 43,
        "status": "working",
        "statusMessage": "Waiting for a human colleague's answer.",
        "createdAt": "2026-12-06T12:00:00Z",
        "lastUpdatedAt": "2026-12-06T12:00:00Z",
        "ttl": 3_900_000,
        "pollInterval": 1000,
    }


def test_the_2026_task_object_counts_ttl_in_seconds() -> None:
    shown = task_json_modern(record(ttl_ms=3_900_500))
    assert shown["ttlSeconds"] == 3901
    assert shown["pollIntervalMilliseconds"] == 1000
    assert "ttl" not in shown


def test_the_operators_question_becomes_a_form_elicitation() -> None:
    question = clarification()
    (key, request), *rest = input_requests(question).items()
    assert rest == []
    assert key == f"clarification-{question.message_id}"
    assert request["method"] == "elicitation/create"
    assert request["params"]["message"] == "Which order?"
    assert request["params"]["requestedSchema"]["required"] == ["reply"]


def test_opt_in_is_read_from_the_requests_own_capabilities() -> None:
    caps = "io.modelcontextprotocol/clientCapabilities"
    assert opted_in({"_meta": {caps: {"extensions": {TASKS_EXTENSION: {}}}}})
    assert not opted_in({"_meta": {caps: {"extensions": {}}}})
    assert not opted_in({"_meta": {caps: {}}})
    assert not opted_in({})


def test_a_cursor_round_trips_and_a_forged_one_is_invalid_params() -> None:
    assert decode_cursor(encode_cursor(record())) == (NOW, "t" * 43)
    with pytest.raises(MCPError) as raised:
        decode_cursor("not a cursor")
    assert raised.value.error.code == types.INVALID_PARAMS


def test_each_bearer_key_owns_its_own_tasks() -> None:
    class Ctx:
        def __init__(self, authorization: str | None) -> None:
            self.request = type("R", (), {"headers": {"authorization": authorization}})()

    mine, other = owner_of(Ctx("Bearer k1")), owner_of(Ctx("Bearer k2"))  # type: ignore[arg-type]
    assert mine != other
    assert len(mine) == 64
    assert owner_of(Ctx("Bearer k1")) == mine  # type: ignore[arg-type]


def test_without_a_task_store_ask_human_advertises_no_task_support() -> None:
    platform = MemoryPlatform()
    relay = build_relay(platform.backend(), Settings(backend="memory"))
    server = RelayMcpServer(lambda: relay)
    ask = next(t for t in server.tools() if t.name == "ask_human")
    assert ask.execution is None
    assert "As a task" not in (ask.description or "")


class OneTaskStore:
    """A task store holding one task for one owner; records every write."""

    def __init__(self, task: TaskRecord, owner: str) -> None:
        self.task, self.owner = task, owner
        self.writes: list[str] = []

    async def get_task(self, task_id: str, owner: str) -> TaskRecord | None:
        return self.task if (task_id, owner) == (self.task.id, self.owner) else None

    async def finish_task(
        self, task_id: str, status: str, message: str | None, result: Any, case_id: object
    ) -> TaskRecord | None:
        self.writes.append("finish")
        self.task = replace(self.task, status=status, result=result)  # type: ignore[arg-type]
        return self.task

    async def resume_task(self, *args: object) -> TaskRecord | None:
        self.writes.append("resume")
        return None


async def test_an_input_response_counts_only_from_the_tasks_key_for_the_outstanding_question() -> (
    None
):
    question = clarification()
    task = record(reply=question, call={"call_id": "c1", "session_id": "s1", "agent_id": "a1"})
    owner = owner_of_authorization("Bearer mine")
    store = OneTaskStore(task, owner)
    platform = MemoryPlatform()
    relay = build_relay(platform.backend(), Settings(backend="memory"))
    server = RelayMcpServer(lambda: relay)
    service = server.tasks
    accept = {"action": "accept", "content": {"reply": "Order 4411."}}
    ours = input_request_id(task.id, clarification_key(question))
    async with service.running(store):  # type: ignore[arg-type]
        # Not an id of ours: left to the SDK.
        assert not await service.input_response(owner, None, {"id": 3, "result": accept})
        # Another key's response, or one to a question no longer outstanding: ignored.
        other = owner_of_authorization("Bearer other")
        assert await service.input_response(other, None, {"id": ours, "result": accept})
        stale = input_request_id(task.id, "clarification-00000000-0000-0000-0000-000000000000")
        assert await service.input_response(owner, None, {"id": stale, "result": accept})
        assert store.writes == []
        # The task's own key, the outstanding question: the reply continues the case.
        assert await service.input_response(owner, None, {"id": ours, "result": accept})
        assert store.writes == ["resume"]


async def test_a_status_change_is_announced_to_the_connection_that_created_the_task() -> None:
    question = clarification()
    task = record(reply=question, call={"call_id": "c1", "session_id": "s1", "agent_id": "a1"})
    owner = owner_of_authorization(None)  # stdio: no key
    store = OneTaskStore(task, owner)
    platform = MemoryPlatform()
    relay = build_relay(platform.backend(), Settings(backend="memory"))
    service = RelayMcpServer(lambda: relay).tasks
    sent: list[tuple[str, Any]] = []

    class Channel:
        async def notify(self, method: str, params: Any) -> None:
            sent.append((method, params))

    ours = input_request_id(task.id, clarification_key(question))
    async with service.running(store):  # type: ignore[arg-type]
        service.follow(task.id, Channel(), owner)
        # The caller declines: the question becomes the result, the task completes.
        assert await service.input_response(
            owner, None, {"id": ours, "result": {"action": "decline"}}
        )
    assert store.writes == ["finish"]
    ((method, params),) = sent
    assert method == "notifications/tasks/status"
    assert params["taskId"] == task.id
    # What the store recorded (here "failed": the memory platform has no such case to render).
    assert params["status"] == store.task.status
    assert params["status"] in {"completed", "failed"}
    assert RELATED_TASK not in (params.get("_meta") or {})
