"""The SQL functions as the relay calls them: named errors that write nothing, and one case for
identical calls racing each other."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest
from waiting import wait_until

OPEN = "select public.hitl_open_case($1::jsonb)"
TABLES = (
    "public.cases",
    "public.messages",
    "public.hil_sessions",
    "public.hil_audit",
    "public.hil_case_secrets",
    "realtime.messages",
)


def request(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "case_id": str(uuid.uuid4()),
        "question": "May the caller pay by invoice?",
        "context": "customer since 2019",
        "mcp_session_id": "mcp-1",
        "retell_call_id": "call-1",
        "retell_agent_id": "agent-1",
        "caller_info": {"name": "Ada"},
        "priority": 3,
        "urgency": "medium",
        "conversation_history": [{"role": "caller", "content": "Hello"}],
        "timeout_seconds": 30,
        "webhook_secret": "whsec-test",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


async def row_counts(db: asyncpg.Connection) -> dict[str, int]:
    return {t: await db.fetchval(f"select count(*) from {t}") for t in TABLES}


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        ({"question": ...}, "question", "is required"),
        ({"priority": 9}, "priority", "must be an integer from 1 to 5"),
        ({"urgency": "whenever"}, "urgency", "must be one of low, medium, high"),
        ({"question": "x" * 1_048_576}, "question", "must be at most 2000 characters"),
        ({"timeout_seconds": 601}, "timeout_seconds", "must be an integer from 5 to 600"),
        ({"retell_call_id": "call\n1"}, "retell_call_id", "must be 1 to 128 printable characters"),
        ({"caller_info": "Ada"}, "caller_info", "must be an object"),
    ],
    ids=[
        "missing question",
        "priority 9",
        "unknown urgency",
        "1 MB question",
        "timeout 601",
        "control character in id",
        "caller_info not an object",
    ],
)
async def test_bad_input_raises_a_named_error_and_writes_nothing(
    db: asyncpg.Connection, overrides: dict[str, Any], field: str, rule: str
) -> None:
    await db.fetchval(OPEN, json.dumps(request(question="An earlier, valid question?")))
    before = await row_counts(db)

    with pytest.raises(asyncpg.RaiseError) as raised:
        await db.fetchval(OPEN, json.dumps(request(**overrides)))

    error = raised.value
    assert error.sqlstate == "P0001"
    assert error.args[0] == f"invalid {field}: {rule}"
    assert error.detail == field
    assert error.hint == rule
    assert await row_counts(db) == before


async def test_bad_input_leaves_the_callers_transaction_usable_after_a_rollback(
    db: asyncpg.Connection,
) -> None:
    """PostgREST runs each RPC in its own transaction: the failure must roll back cleanly."""
    with pytest.raises(asyncpg.RaiseError):
        async with db.transaction():
            await db.fetchval(OPEN, json.dumps(request(priority=0)))

    opened = json.loads(await db.fetchval(OPEN, json.dumps(request())))
    assert opened["existed"] is False


async def test_a_second_identical_call_waits_for_the_first_and_joins_its_case(
    db_url: str,
) -> None:
    first = await asyncpg.connect(db_url)
    second = await asyncpg.connect(db_url)
    watcher = await asyncpg.connect(db_url)
    try:
        tx = first.transaction()
        await tx.start()
        opened_first = json.loads(await first.fetchval(OPEN, json.dumps(request())))
        racing = asyncio.create_task(second.fetchval(OPEN, json.dumps(request())))

        second_pid = second.get_server_pid()

        async def second_is_blocked() -> bool:
            return bool(
                await watcher.fetchval(
                    "select exists (select 1 from pg_locks where pid = $1 and not granted)",
                    second_pid,
                )
            )

        await wait_until(second_is_blocked, "the second call waits on the first's lock")
        assert not racing.done()
        await tx.commit()
        opened_second = json.loads(await racing)

        assert opened_first["existed"] is False
        assert opened_second["existed"] is True
        assert opened_second["case_id"] == opened_first["case_id"]
        assert opened_second["session_id"] == opened_first["session_id"]
        assert await watcher.fetchval("select count(*) from public.cases") == 1
        assert await watcher.fetchval("select count(*) from public.hil_sessions") == 1
    finally:
        for conn in (first, second, watcher):
            await conn.close()


async def test_many_identical_calls_at_once_open_exactly_one_case(db_url: str) -> None:
    conns = [await asyncpg.connect(db_url) for _ in range(8)]
    try:
        results = await asyncio.gather(
            *(c.fetchval(OPEN, json.dumps(request(mcp_session_id=f"mcp-{i}"))) for i, c in
              enumerate(conns))
        )  # fmt: skip
        opened = [json.loads(r) for r in results]

        assert len({o["case_id"] for o in opened}) == 1
        assert sorted(o["existed"] for o in opened) == [False] + [True] * 7
        assert await conns[0].fetchval("select count(*) from public.cases") == 1
        assert (
            await conns[0].fetchval(
                "select count(*) from realtime.messages where event = 'case_opened'"
            )
            == 1
        )
    finally:
        for conn in conns:
            await conn.close()


async def test_rate_limit_retry_after_is_when_the_sliding_window_first_allows_a_request(
    db: asyncpg.Connection,
) -> None:
    """3 per hour, all 3 spent in the current window: refused until the window ends and a third
    of the next has passed (the previous window's weight fades to 2/3)."""
    window = 3600
    limits = json.dumps([{"limit": 3, "window_seconds": window}])
    for _ in range(3):
        allowed = await db.fetchval("select public.hitl_rate_limit('k', $1::jsonb, true)", limits)
        assert json.loads(allowed)["allowed"] is True
    row = await db.fetchrow(
        """select public.hitl_rate_limit('k', $1::jsonb, true) as decision,
                  extract(epoch from clock_timestamp())::float8 as now""",
        limits,
    )
    decision = json.loads(row["decision"])
    elapsed = (row["now"] % window) / window
    expected = window * (1 - elapsed) + window * (1 - 2 / 3)
    assert decision["allowed"] is False
    assert decision["retry_after"] == pytest.approx(expected, abs=0.5)
    hits = await db.fetchval("select sum(hits) from public.hil_rate_limits where key = 'k'")
    assert hits == 3
