"""The poll interval a replica suggests to task clients: the configured floor while few tasks are
live, growing with the tasks this replica waits for so that their polls stay within the
configured polls per second, and told with every read (the interval may change over a task's
life in both eras)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from anyio import wait_all_tasks_blocked

from hitl_relay.adapters.memory import MemoryPlatform
from hitl_relay.composition import build_relay
from hitl_relay.config import Settings
from hitl_relay.mcp_server import RelayMcpServer
from hitl_relay.mcp_task_wire import task_json, task_json_modern
from hitl_relay.models import parse_ask_request
from hitl_relay.options import MAX_TASK_POLL_INTERVAL_MS, POLL_INTERVAL_STEP_MS, RelayOptions
from hitl_relay.task_store import TaskRecord

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_few_live_tasks_are_told_the_configured_interval() -> None:
    options = RelayOptions(task_poll_interval_ms=1000, task_polls_per_second=50)
    assert [options.task_poll_interval(n) for n in (0, 1, 20, 50)] == [1000] * 4


@pytest.mark.parametrize("budget", [10.0, 50.0, 75.0, 200.0])
def test_the_interval_is_the_shortest_step_that_keeps_the_polls_within_the_budget(
    budget: float,
) -> None:
    options = RelayOptions(task_poll_interval_ms=1000, task_polls_per_second=budget)
    for live in range(1, 5001, 7):
        interval = options.task_poll_interval(live)
        if interval == MAX_TASK_POLL_INTERVAL_MS:
            continue  # beyond the ceiling: checked below
        assert interval >= 1000
        assert interval % POLL_INTERVAL_STEP_MS == 0
        # within the budget ...
        assert live * 1000 / interval <= budget
        # ... and one step shorter (unless at the floor) would exceed it
        if interval > 1000:
            assert live * 1000 / (interval - POLL_INTERVAL_STEP_MS) > budget


def test_the_interval_grows_linearly_with_live_tasks() -> None:
    options = RelayOptions(task_poll_interval_ms=1000, task_polls_per_second=50)
    assert options.task_poll_interval(200) == 4000
    assert options.task_poll_interval(1000) == 20_000
    assert options.task_poll_interval(201) == 4100  # 4,020 ms rounded up to the step


def test_the_interval_stops_at_the_ceiling() -> None:
    options = RelayOptions(task_poll_interval_ms=1000, task_polls_per_second=1)
    assert options.task_poll_interval(60) == 60_000
    assert options.task_poll_interval(10_000) == MAX_TASK_POLL_INTERVAL_MS


def test_a_floor_above_what_the_budget_needs_wins() -> None:
    options = RelayOptions(task_poll_interval_ms=5000, task_polls_per_second=50)
    assert options.task_poll_interval(200) == 5000
    assert options.task_poll_interval(300) == 6000


def test_the_budget_is_a_setting_and_must_be_positive() -> None:
    settings = Settings(backend="memory", task_polls_per_second=20)
    assert settings.relay_options().task_polls_per_second == 20
    with pytest.raises(ValueError, match="task_polls_per_second"):
        Settings(backend="memory", task_polls_per_second=0)


def record(task_id: str) -> TaskRecord:
    return TaskRecord(
        id=task_id,
        case_id=uuid4(),
        tool="ask_human",
        call={},
        era="2025-11-25",
        status="working",
        status_message=None,
        result=None,
        created_at=NOW,
        last_updated_at=NOW,
        deadline_at=NOW + timedelta(seconds=600),
        ttl_ms=3_900_000,
        poll_interval_ms=1000,
        now=NOW,
        reply=None,
    )


class NoStore:
    """The waits below never finish (nobody answers): nothing is written."""


async def test_every_read_tells_the_interval_for_the_tasks_this_replica_waits_for() -> None:
    settings = Settings(
        backend="memory",
        task_poll_interval_ms=1000,
        task_polls_per_second=10,
        no_operator_answers_at_once=False,
    )
    relay = build_relay(MemoryPlatform().backend(), settings)
    service = RelayMcpServer(lambda: relay).tasks
    polled = record("polled")
    async with relay.running(), service.running(NoStore()):  # type: ignore[arg-type]
        assert service.advised(polled).poll_interval_ms == 1000
        for i in range(35):
            request = parse_ask_request(
                {
                    "question": f"question {i}?",
                    "call_id": f"c{i}",
                    "session_id": f"s{i}",
                    "agent_id": "a",
                    "timeout_seconds": 600,
                }
            )
            # The accepting relay's wait, as `tools/call` starts it.
            service._start_wait(record(f"t{i}"), request, uuid4(), None)
        # Every wait has started and is blocked on the operator (nobody answers).
        await wait_all_tasks_blocked()
        assert service.live_tasks() == 35
        told = service.advised(polled)
        # 35 tasks at 10 polls/s: every 3.5 s, in both eras' Task objects.
        assert told.poll_interval_ms == 3500
        assert task_json(told)["pollInterval"] == 3500
        assert task_json_modern(told)["pollIntervalMilliseconds"] == 3500
        # Only the interval is the replica's: the rest is the row's.
        assert replace(told, poll_interval_ms=polled.poll_interval_ms) == polled
    # The waits ended with the service: nothing live, the configured interval again.
    assert service.live_tasks() == 0
    assert service.advised(polled) is polled
