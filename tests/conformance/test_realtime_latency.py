"""Latency report (not an assertion of speed): database insert → Realtime subscriber.

1,000 private `case:<id>` channels are joined by 10 realtime-py clients (100 each, Supabase's
per-connection limit), all as operators. Then, one at a time, a human message is inserted into
`public.messages` for each case (its trigger calls `realtime.send`, the row's NOTIFY reaches the
devstack after commit) and the time until the subscriber's callback runs is recorded. Printed:
p50/p99 of insert → subscriber, NOTIFY reaching the devstack → subscriber (the devstack's own
hop: fan-out, websocket write, client decoding; all in this one event loop) and the service's
synchronous NOTIFY → frame-queued time.
Run: `pytest -m bench tests/conformance/test_realtime_latency.py`.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from typing import Any

import asyncpg
import pytest
from realtime import RealtimeSubscribeStates
from realtime_support import RtClients, private, subscribe

from hitl_devstack.server import Devstack

pytestmark = pytest.mark.bench

CLIENTS = 10
CHANNELS_PER_CLIENT = 100
MESSAGES = 1_000


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def row(name: str, ms: list[float]) -> str:
    return (
        f"  {name:<46} p50 {pct(ms, 50):7.3f}  p99 {pct(ms, 99):7.3f}"
        f"  max {max(ms):7.3f}  mean {statistics.fmean(ms):7.3f} ms"
    )


async def open_cases(db_url: str, n: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(n)]
    conn = await asyncpg.connect(db_url)
    try:
        for i, case_id in enumerate(ids):
            await conn.execute(
                "select public.hitl_open_case($1::jsonb)",
                json.dumps(
                    {
                        "case_id": str(case_id),
                        "question": f"Question {i}?",
                        "mcp_session_id": "bench",
                        "retell_call_id": f"bench-{case_id}",
                        "retell_agent_id": "bench",
                        "timeout_seconds": 600,
                    }
                ),
            )
    finally:
        await conn.close()
    return ids


async def test_database_insert_to_subscriber_latency_with_1000_channels(
    stack: Devstack, rt: RtClients, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = asyncio.get_running_loop()
    cases = await open_cases(stack.db_url, CLIENTS * CHANNELS_PER_CLIENT)
    received: dict[str, float] = {}
    arrived: dict[str, asyncio.Future[None]] = {}

    def on_message(message: Any) -> None:
        content = message["payload"]["content"]
        received[content] = time.perf_counter()
        fut = arrived.get(content)
        if fut is not None and not fut.done():
            fut.set_result(None)

    t_join = time.perf_counter()
    clients = [
        await rt.connect(stack, stack.keys.user_token(operator=True)) for _ in range(CLIENTS)
    ]

    async def join_all(client_index: int) -> None:
        client = clients[client_index]
        start = client_index * CHANNELS_PER_CLIENT
        for case_id in cases[start : start + CHANNELS_PER_CLIENT]:
            ch = client.channel(f"case:{case_id}", private()).on_broadcast("message", on_message)
            state, err = await subscribe(ch, within_s=30)
            assert state == RealtimeSubscribeStates.SUBSCRIBED, err

    await asyncio.gather(*(join_all(i) for i in range(CLIENTS)))
    join_s = time.perf_counter() - t_join

    # Timestamps taken around the service's own NOTIFY callback: when the notification reached
    # the devstack, and how long its synchronous path (parse, fan-out, encode, queue) took.
    service: Any = stack.realtime
    handler = service.db._on_notify
    notified: dict[str, float] = {}
    fanout_ms: list[float] = []

    def timed(conn: Any, pid: int, channel: str, raw: object) -> None:
        t0 = time.perf_counter()
        handler(conn, pid, channel, raw)
        fanout_ms.append((time.perf_counter() - t0) * 1000)
        content = (json.loads(str(raw)).get("payload") or {}).get("content")
        if content is not None:
            notified[content] = t0

    await service.db._listen_conn.remove_listener("hitl_realtime", handler)
    await service.db._listen_conn.add_listener("hitl_realtime", timed)
    writer = await asyncpg.connect(stack.db_url)
    insert_to_client: list[float] = []
    notify_to_client: list[float] = []
    try:
        operator = uuid.uuid4()
        for i in range(MESSAGES):
            content = f"m{i}"
            arrived[content] = loop.create_future()
            t0 = time.perf_counter()
            await writer.execute(
                "insert into messages (case_id, sender_type, sender_id, content)"
                " values ($1, 'human', $2, $3)",
                cases[i % len(cases)],
                operator,
                content,
            )
            await asyncio.wait_for(arrived[content], 10)
            insert_to_client.append((received[content] - t0) * 1000)
            notify_to_client.append((received[content] - notified[content]) * 1000)
    finally:
        await writer.close()
        await service.db._listen_conn.remove_listener("hitl_realtime", timed)
        await service.db._listen_conn.add_listener("hitl_realtime", handler)

    assert len(insert_to_client) == MESSAGES
    subscribed = sum(len(t.subscribers) for t in service.topics.values())
    with capsys.disabled():
        print()
        print(
            f"devstack Realtime latency: {MESSAGES} messages, {subscribed} subscribed channels"
            f" ({CLIENTS} realtime-py sockets x {CHANNELS_PER_CLIENT}), joined in {join_s:.2f} s"
        )
        print(row("insert into messages -> subscriber callback", insert_to_client))
        print(row("NOTIFY at the devstack -> subscriber callback", notify_to_client))
        print(row("devstack: NOTIFY -> frame queued (sync path)", fanout_ms))
