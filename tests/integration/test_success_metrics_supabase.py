"""The success gauges on /metrics equal what `hitl_success_metrics` computes, exactly, on the
devstack: hand-built cases, sessions, answers and overlapping operator availability, read by
the relay's refresher through the Supabase store."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import asyncpg
from integration_support import platform_on

from hitl_devstack.server import Devstack
from hitl_relay import metrics
from hitl_relay.clock import FakeClock
from hitl_relay.success import SuccessRefresher

END = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
WINDOW = timedelta(hours=2)
OPS = [f"{n}{n}{n}{n}{n}{n}{n}{n}-0000-4000-8000-000000000000" for n in "abc"]


def t(minutes: float) -> datetime:
    """`minutes` after the window starts."""
    return END - WINDOW + timedelta(minutes=minutes)


async def build_fixture(conn: asyncpg.Connection) -> None:
    a, b, c = OPS
    await conn.executemany(
        "insert into operator_activity (operator_id, started_at, last_seen_at) values ($1,$2,$3)",
        [
            (a, t(-30), t(40)),  # starts before the window: clipped
            (a, t(20), t(70)),  # overlaps the first: merged
            (b, t(10), t(25)),
            (b, t(25), t(30)),  # touches the previous one
            (c, t(100), t(150)),  # ends after the window: clipped
        ],
    )
    # (minute created, last session status, (operator, seconds to answer) or None)
    cases = [
        (15, "answered", (a, 17.25)),
        (21, "answered", (b, 41.5)),
        (22, "timed_out", None),
        (30, "expired", None),
        (45, "answered", (a, 3.125)),
        (101, "answered", (c, 95.0)),
        (110, "waiting", None),
    ]
    for i, (minute, status, answer) in enumerate(cases):
        created = t(minute)
        case_id = await conn.fetchval(
            "insert into cases (source, status, priority, urgency, description, created_at,"
            " metadata) values ('mcp_voice', 'open', 3, 'medium', $1, $2, '{}') returning id",
            f"q{i}",
            created,
        )
        await conn.execute(
            "insert into hil_sessions (mcp_session_id, retell_call_id, case_id, idempotency_key,"
            " status, created_at, expires_at) values ('s', $1, $2, $3, $4, $5, $6)",
            f"call-{i}",
            case_id,
            f"k{i}",
            status,
            created,
            END + timedelta(hours=1),  # the expiry job leaves the waiting one alone
        )
        if answer is not None:
            operator, seconds = answer
            at = created + timedelta(seconds=seconds)
            await conn.execute(
                "insert into messages (case_id, sender_type, sender_id, content, created_at)"
                " values ($1, 'human', $2, 'yes', $3)",
                case_id,
                operator,
                at,
            )
            # The trigger stamps answered_at with the insert time; fix it to the message's.
            await conn.execute("update cases set answered_at = $2 where id = $1", case_id, at)


def gauge(name: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name)
    assert value is not None, f"{name} is not in the registry"
    return value


async def test_the_gauges_equal_the_sql_figures_exactly(devstack: Devstack) -> None:
    conn = await asyncpg.connect(devstack.db_url)
    try:
        await build_fixture(conn)
        raw = await conn.fetchval("select hitl_success_metrics($1, $2)", END - WINDOW, END)
    finally:
        await conn.close()
    sql = json.loads(raw)
    async with platform_on(
        devstack.url, devstack.keys.service_role_key, presence=False
    ) as platform:
        refresher = SuccessRefresher(
            platform.store,
            FakeClock(start=END),
            window_s=WINDOW.total_seconds(),
            interval_s=30,
            timeout_s=5,
        )
        figures = await refresher.refresh()
    assert figures is not None
    assert (sql["cases"], sql["finished"], sql["answered"], sql["timed_out"]) == (7, 6, 4, 2)
    pairs = {
        "hitl_response_seconds_avg": sql["avg_response_s"]["value"],
        "hitl_success_rate": sql["success_rate"]["value"],
        "hitl_timeout_rate": sql["timeout_rate"]["value"],
        "hitl_operator_utilisation": sql["operator_utilisation"]["value"],
    }
    for name, expected in pairs.items():
        assert gauge(name) == float(expected), name
        assert not math.isnan(gauge(name))
    for state, key in (("all", "cases"), ("finished", "finished"), ("answered", "answered")):
        assert metrics.REGISTRY.get_sample_value(
            "hitl_success_window_cases", {"state": state}
        ) == float(sql[key])
    # The fixture's figures, by hand: availability a 0-70 min (clipped, merged), b 10-30 min,
    # c 100-120 min = 110 min; handling 17.25 + 41.5 + 3.125 + 95 s, all inside availability.
    assert sql["operator_utilisation"]["available_s"] == 110 * 60
    assert sql["operator_utilisation"]["handled_s"] == 17.25 + 41.5 + 3.125 + 95
    assert sql["avg_response_s"]["value"] == round((17.25 + 41.5 + 3.125 + 95) / 4, 3)
    print(
        "success figures on the devstack fixture:",
        {name: gauge(name) for name in pairs},
    )


async def test_hitl_relay_stats_reads_the_four_figures_from_the_devstack(
    devstack: Devstack,
) -> None:
    from rich.console import Console

    from hitl_relay.stats import fetch_metrics, render

    conn = await asyncpg.connect(devstack.db_url)
    try:
        now = await conn.fetchval("select now()")
        await conn.execute(
            "insert into operator_activity (operator_id, started_at, last_seen_at)"
            " values ($1, $2, $3)",
            OPS[0],
            now - timedelta(minutes=10),
            now,
        )
        case_id = await conn.fetchval(
            "insert into cases (source, status, priority, urgency, description, created_at,"
            " metadata) values ('mcp_voice', 'open', 3, 'medium', 'q', $1, '{}') returning id",
            now - timedelta(minutes=5),
        )
        await conn.execute(
            "insert into hil_sessions (mcp_session_id, retell_call_id, case_id, idempotency_key,"
            " status, created_at, expires_at) values ('s', 'c', $1, 'k', 'answered', $2, $3)",
            case_id,
            now - timedelta(minutes=5),
            now + timedelta(minutes=5),
        )
        answered = now - timedelta(minutes=5) + timedelta(seconds=12)
        await conn.execute(
            "insert into messages (case_id, sender_type, sender_id, content, created_at)"
            " values ($1, 'human', $2, 'yes', $3)",
            case_id,
            OPS[0],
            answered,
        )
        await conn.execute("update cases set answered_at = $2 where id = $1", case_id, answered)
    finally:
        await conn.close()
    figures = await fetch_metrics(devstack.url, devstack.keys.service_role_key, timedelta(hours=1))
    assert figures["avg_response_s"]["value"] == 12.0
    assert figures["success_rate"]["value"] == 1.0
    assert figures["timeout_rate"]["value"] == 0.0
    assert figures["operator_utilisation"]["handled_s"] == 12.0
    console = Console(record=True, width=120)
    render(figures, console)
    text = console.export_text()
    for line in ("12.0 s", "< 30 s", "100.0 %", "> 95 %", "0.0 %", "< 5 %", "> 70 %"):
        assert line in text
