"""The plan's success figures: the memory twin computes them as the SQL does, the relay publishes
them on /metrics from a background read (never on a scrape), and a failed read keeps the last
values with one warning."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from loguru import logger
from relay_support import make_settings

from hitl_relay import metrics
from hitl_relay.adapters.memory import MemCase, MemoryPlatform, MemSession
from hitl_relay.adapters.supabase_shapes import ShapeError, parse_success_metrics
from hitl_relay.clock import FakeClock
from hitl_relay.http_app import create_app, running
from hitl_relay.ports import Backend, MessageKind, SessionStatus, SuccessMetrics
from hitl_relay.success import SuccessRefresher

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
A, B, C = "operator-a", "operator-b", "operator-c"


def at(hh: int, mm: int, ss: int = 0, day: int = 1) -> datetime:
    return datetime(2026, 1, day, hh, mm, ss, tzinfo=UTC)


def add_case(
    platform: MemoryPlatform,
    created: datetime,
    status: SessionStatus,
    answer: tuple[str, datetime] | None = None,
    kind: MessageKind = "answer",
) -> UUID:
    """A relay case with one session; `answer`: (operator, when) their answer was written."""
    case = MemCase(
        id=uuid4(),
        question="q",
        priority=3,
        urgency="medium",
        status="open",
        metadata={},
        created_at=created,
        expires_at=created + timedelta(hours=1),
    )
    platform.cases[case.id] = case
    session = MemSession(
        id=uuid4(),
        case_id=case.id,
        idempotency_key=f"k-{case.id}",
        mcp_session_id="s",
        retell_call_id=f"c-{case.id}",
        status=status,
        expires_at=created + timedelta(minutes=1),
        created_at=created,
    )
    platform.sessions[session.id] = session
    if answer is not None:
        operator, when = answer
        assert isinstance(platform.clock, FakeClock)
        platform.clock.advance((when - platform.clock.now()).total_seconds())
        platform.post_message(case.id, "a", kind=kind, sender_id=operator)
    return case.id


def pgtap_fixture() -> MemoryPlatform:
    """The fixture of supabase/tests/50_success_metrics.sql, on the memory twin."""
    platform = MemoryPlatform(clock=FakeClock(start=T0))
    platform.availability += [
        (A, at(10, 0), at(11, 0)),  # two overlapping tabs: one 5,400 s interval
        (A, at(10, 30), at(11, 30)),
        (B, at(10, 0), at(10, 10)),  # 600 s
        (C, at(10, 0, day=2), at(11, 0, day=2)),  # outside the window
    ]
    add_case(platform, at(10, 5), "answered", (A, at(10, 5, 20)))
    add_case(platform, at(10, 6), "timed_out")
    add_case(platform, at(10, 7), "answered", (B, at(10, 7, 40)))
    add_case(platform, at(10, 8), "waiting")
    return platform


async def test_the_memory_twin_computes_the_figures_of_the_sql_fixture() -> None:
    platform = pgtap_fixture()
    figures = await platform.store.success_metrics(at(9, 0), at(12, 0))
    assert figures == SuccessMetrics(
        cases=4,
        finished=3,
        answered=2,
        cannot_answer=0,
        timed_out=1,
        other=0,
        avg_response_s=30.0,
        success_rate=0.6667,
        cannot_answer_rate=0.0,
        timeout_rate=0.3333,
        operator_utilisation=0.01,
        handled_s=60.0,
        available_s=6000.0,
    )


async def test_the_memory_twin_counts_cannot_answer_apart_from_success() -> None:
    """The fixture of supabase/tests/52_success_cannot_answer.sql."""
    platform = MemoryPlatform(clock=FakeClock(start=T0))
    platform.availability.append((A, at(10, 0), at(10, 20)))
    add_case(platform, at(10, 5), "answered", (A, at(10, 5, 20)))
    add_case(platform, at(10, 6), "answered", (A, at(10, 6, 10)), kind="cannot_answer")
    add_case(platform, at(10, 7), "timed_out")
    add_case(platform, at(10, 8), "failed")
    add_case(platform, at(10, 9), "waiting")
    figures = await platform.store.success_metrics(at(9, 0), at(12, 0))
    assert figures == SuccessMetrics(
        cases=5,
        finished=4,
        answered=1,
        cannot_answer=1,
        timed_out=1,
        other=1,
        avg_response_s=20.0,
        success_rate=0.25,
        cannot_answer_rate=0.25,
        timeout_rate=0.25,
        operator_utilisation=0.025,
        handled_s=30.0,
        available_s=1200.0,
    )


async def test_the_memory_twin_clips_handling_and_availability_to_the_window() -> None:
    platform = pgtap_fixture()
    narrow = await platform.store.success_metrics(at(10, 5, 10), at(10, 10))
    assert narrow.handled_s == 40.0 + 10.0
    # A: 10:05:10-10:10 and B: 10:05:10-10:10, 290 s each.
    assert narrow.available_s == 580.0
    empty = await platform.store.success_metrics(at(0, 0, day=3), at(0, 0, day=4))
    assert (empty.cases, empty.success_rate, empty.operator_utilisation) == (0, None, None)


async def test_the_memory_twin_counts_an_operators_busy_time_once() -> None:
    """The fixture of supabase/tests/55_utilisation_busy_time.sql."""
    platform = MemoryPlatform(clock=FakeClock(start=T0))
    platform.availability += [(A, at(10, 0), at(10, 1)), (B, at(10, 0), at(10, 1))]
    # Let the clock reach each answer in order: B's (10:00:20) first, then A's three.
    add_case(platform, at(10, 0), "answered", (B, at(10, 0, 20)))
    for second in (0, 10, 20):
        add_case(platform, at(10, 0, second), "answered", (A, at(10, 0, second + 30)))
    figures = await platform.store.success_metrics(at(9, 0), at(12, 0))
    assert (figures.handled_s, figures.available_s) == (50.0 + 20.0, 120.0)
    assert figures.operator_utilisation == 0.5833
    busy = await platform.store.success_metrics(at(10, 0), at(10, 0, 50))
    assert busy.handled_s == 70.0
    assert busy.operator_utilisation is not None
    assert busy.operator_utilisation <= 1


def gauge(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    assert value is not None, f"{name}{labels} is not in the registry"
    return value


def refresher_on(platform: MemoryPlatform, clock: FakeClock) -> SuccessRefresher:
    return SuccessRefresher(platform.store, clock, window_s=3 * 3600, interval_s=30, timeout_s=5)


async def test_a_refresh_publishes_the_figures_and_their_targets() -> None:
    platform = pgtap_fixture()
    clock = FakeClock(start=at(12, 0))
    figures = await refresher_on(platform, clock).refresh()
    assert figures is not None
    assert figures.cases == 4
    assert gauge("hitl_response_seconds_avg") == 30.0
    assert gauge("hitl_success_rate") == 0.6667
    assert gauge("hitl_timeout_rate") == 0.3333
    assert gauge("hitl_operator_utilisation") == 0.01
    assert gauge("hitl_success_window_cases", state="finished") == 3
    assert gauge("hitl_target", figure="response_seconds_avg") == 30
    assert gauge("hitl_target", figure="success_rate") == 0.95
    assert gauge("hitl_target", figure="timeout_rate") == 0.05
    assert gauge("hitl_target", figure="operator_utilisation") == 0.70


async def test_a_figure_without_data_is_nan_not_zero() -> None:
    platform = MemoryPlatform(clock=FakeClock(start=T0))
    await refresher_on(platform, FakeClock(start=at(12, 0))).refresh()
    assert math.isnan(gauge("hitl_operator_utilisation"))
    assert math.isnan(gauge("hitl_success_rate"))
    assert gauge("hitl_success_window_cases", state="all") == 0


@pytest.fixture
def warnings_logged() -> Iterator[list[str]]:
    seen: list[str] = []
    sink = logger.add(lambda m: seen.append(m.record["message"]), level="WARNING")
    try:
        yield seen
    finally:
        logger.remove(sink)


async def test_a_failed_read_keeps_the_last_values_and_warns_once(
    warnings_logged: list[str],
) -> None:
    platform = pgtap_fixture()
    refresher = refresher_on(platform, FakeClock(start=at(12, 0)))
    assert await refresher.refresh() is not None
    platform.faults.rpc_down = True
    assert await refresher.refresh() is None
    assert await refresher.refresh() is None
    assert gauge("hitl_success_rate") == 0.6667
    assert len(warnings_logged) == 1
    assert "success figures not refreshed, keeping the last values" in warnings_logged[0]
    platform.faults.rpc_down = False
    assert await refresher.refresh() is not None
    platform.faults.rpc_down = True
    assert await refresher.refresh() is None
    assert len(warnings_logged) == 2, "a new failure after a success warns again"


def reads(platform: MemoryPlatform) -> int:
    return platform.rpc_calls.count("success_metrics")


@asynccontextmanager
async def relay_on(platform: MemoryPlatform, clock: FakeClock) -> AsyncIterator[str]:
    @asynccontextmanager
    async def backend(_settings: Any) -> AsyncIterator[Backend]:
        yield platform.backend()

    # Only the success refresher sleeps on the fake clock here (no escalation timer).
    settings = make_settings(
        api_keys="key-one-0123456789",
        success_window_seconds=3 * 3600,
        success_refresh_seconds=30,
        escalation_interval_seconds=0,
    )
    async with running(create_app(settings, backend=backend, clock=clock)) as url:
        yield url


async def test_the_relay_reads_the_figures_in_the_background_never_on_a_scrape() -> None:
    platform = pgtap_fixture()
    clock = FakeClock(start=at(12, 0))
    async with relay_on(platform, clock) as url, httpx.AsyncClient(base_url=url) as http:
        # The first read happens at start; then the refresher parks on the clock for 30 s.
        await clock.wait_for_sleepers(1)
        assert reads(platform) == 1
        for _ in range(5):
            scraped = await http.get("/metrics")
            assert scraped.status_code == 200
        assert reads(platform) == 1, "a scrape must not query the database"
        assert "hitl_success_rate 0.6667" in scraped.text
        assert 'hitl_target{figure="operator_utilisation"} 0.7' in scraped.text
        assert clock.next_wake() == 30
        clock.advance(30)
        # It reads again, then parks for the next 30 s.
        await clock.wait_for_sleepers(1)
        assert reads(platform) == 2


def test_a_reply_of_another_shape_is_refused_naming_the_field() -> None:
    good: dict[str, Any] = {
        "cases": 1,
        "finished": 1,
        "answered": 1,
        "cannot_answer": 0,
        "timed_out": 0,
        "other": 0,
        "avg_response_s": {"value": 2.5},
        "success_rate": {"value": 1.0},
        "cannot_answer_rate": {"value": 0},
        "timeout_rate": {"value": 0},
        "operator_utilisation": {"value": None, "handled_s": 0, "available_s": 0},
    }
    assert parse_success_metrics(good).avg_response_s == 2.5
    with pytest.raises(ShapeError, match="success_rate: Input should be a valid dictionary"):
        parse_success_metrics({**good, "success_rate": 0.9})
    with pytest.raises(ShapeError, match="cases: Input should be a valid integer"):
        parse_success_metrics({**good, "cases": "1"})
    with pytest.raises(ShapeError, match=r"avg_response_s\.value: Input should be a valid number"):
        parse_success_metrics({**good, "avg_response_s": {"value": "slow"}})
