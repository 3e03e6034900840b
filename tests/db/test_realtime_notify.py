"""The devstack's delivery hook: each broadcast row in realtime.messages reaches a `LISTEN
hitl_realtime` connection after its transaction commits, in commit order; a row too large for
NOTIFY is announced by id only."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest


class Listener:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def _on(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.queue.put_nowait(json.loads(payload))

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(5):
            return await self.queue.get()

    async def assert_nothing_pending(self) -> None:
        # A round trip on the listening connection delivers any notification already sent.
        await self.conn.fetchval("select 1")
        assert self.queue.empty(), self.queue.get_nowait()


@pytest.fixture
async def listener(db_url: str) -> AsyncIterator[Listener]:
    conn = await asyncpg.connect(db_url)
    listening = Listener(conn)
    await conn.add_listener("hitl_realtime", listening._on)
    try:
        yield listening
    finally:
        await conn.close()


async def test_a_broadcast_is_notified_after_commit_with_the_row(
    db: asyncpg.Connection, listener: Listener
) -> None:
    async with db.transaction():
        await db.execute("select realtime.send('{\"n\": 1}', 'ping', 'case:abc', true)")
        await listener.assert_nothing_pending()

    note = await listener.next()
    row = await db.fetchrow("select id, payload from realtime.messages")
    inserted_at = note.pop("at")  # when the row was inserted: the devstack times its hop by it
    assert abs(inserted_at - time.time()) < 60, inserted_at
    assert note == {
        "id": str(row["id"]),
        "topic": "case:abc",
        "event": "ping",
        "private": True,
        "payload": json.loads(row["payload"]),
    }
    assert note["payload"] == {"n": 1, "id": str(row["id"])}


async def test_a_rolled_back_broadcast_is_never_notified(
    db: asyncpg.Connection, listener: Listener
) -> None:
    tx = db.transaction()
    await tx.start()
    await db.execute("select realtime.send('{}', 'ping', 'operators')")
    await tx.rollback()

    await listener.assert_nothing_pending()


async def test_broadcasts_arrive_in_commit_order(db_url: str, listener: Listener) -> None:
    early = await asyncpg.connect(db_url)
    late = await asyncpg.connect(db_url)
    try:
        early_tx, late_tx = early.transaction(), late.transaction()
        await early_tx.start()
        await late_tx.start()
        await early.execute("select realtime.send('{\"who\": \"started first\"}', 'e', 't')")
        await late.execute("select realtime.send('{\"who\": \"committed first\"}', 'e', 't')")
        await late_tx.commit()
        await early_tx.commit()

        order = [(await listener.next())["payload"]["who"] for _ in range(2)]
        assert order == ["committed first", "started first"]
    finally:
        await early.close()
        await late.close()


async def test_a_row_too_large_for_notify_is_announced_by_id(
    db: asyncpg.Connection, listener: Listener
) -> None:
    big = json.dumps({"text": "x" * 10_000})
    await db.execute("select realtime.send($1::jsonb, 'big', 'case:big', true)", big)

    note = await listener.next()
    stored = await db.fetchval("select id::text from realtime.messages where topic = 'case:big'")
    assert isinstance(note.pop("at"), float)  # the insert's time, as for a notification in full
    assert note == {
        "id": stored,
        "topic": "case:big",
        "event": "big",
        "private": True,
        "too_large": True,
    }


async def test_relay_triggers_reach_the_listener(
    db: asyncpg.Connection, listener: Listener
) -> None:
    opened = json.loads(
        await db.fetchval(
            "select public.hitl_open_case($1::jsonb)",
            json.dumps(
                {
                    "question": "Open on Sunday?",
                    "mcp_session_id": "m",
                    "retell_call_id": "c",
                    "retell_agent_id": "a",
                }
            ),
        )
    )
    await db.execute(
        "insert into public.messages (case_id, sender_type, sender_id, content)"
        " values ($1, 'human', gen_random_uuid(), 'Yes')",
        opened["case_id"],
    )

    announced, message = await listener.next(), await listener.next()
    assert (announced["topic"], announced["event"]) == ("operators", "case_opened")
    assert announced["payload"]["case_id"] == opened["case_id"]
    assert (message["topic"], message["event"]) == (f"case:{opened['case_id']}", "message")
    assert message["payload"]["is_answer"] is True
