"""The unmodified `realtime` / supabase-py clients against the devstack's Realtime subset.

Each test waits on the client's own callbacks (futures / queues with timeouts), never on sleeps.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from realtime import AsyncRealtimeChannel, AsyncRealtimeClient, RealtimeSubscribeStates

from hitl_relay.devstack.server import Devstack


async def _client(devstack: Devstack, token: str | None = None) -> AsyncRealtimeClient:
    client = AsyncRealtimeClient(
        f"{devstack.url}/realtime/v1", token=devstack.keys.anon_key, auto_reconnect=True
    )
    await client.connect()
    if token is not None:
        await client.set_auth(token)
    return client


@pytest.fixture
async def clients(devstack: Devstack) -> AsyncIterator[list[AsyncRealtimeClient]]:
    made: list[AsyncRealtimeClient] = []
    yield made
    for c in made:
        await c.close()


async def subscribe(
    channel: AsyncRealtimeChannel, within_s: float = 5.0
) -> tuple[RealtimeSubscribeStates, Exception | None]:
    outcome: asyncio.Future[tuple[RealtimeSubscribeStates, Exception | None]] = (
        asyncio.get_running_loop().create_future()
    )

    def cb(state: RealtimeSubscribeStates, err: Exception | None) -> None:
        if not outcome.done():
            outcome.set_result((state, err))

    await channel.subscribe(cb)
    return await asyncio.wait_for(outcome, within_s)


def private(key: str = "", presence: bool = False, self_: bool = False, ack: bool = False) -> Any:
    return {
        "config": {
            "broadcast": {"self": self_, "ack": ack},
            "presence": {"key": key, "enabled": presence},
            "private": True,
        }
    }


def collector(loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Queue[Any], Callable[[Any], None]]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    return queue, lambda message: loop.call_soon_threadsafe(queue.put_nowait, message)


async def test_operator_joins_a_private_case_channel(
    devstack: Devstack, clients: list[AsyncRealtimeClient]
) -> None:
    op = await _client(devstack, devstack.keys.user_token(operator=True))
    clients.append(op)
    state, err = await subscribe(op.channel(f"case:{uuid.uuid4()}", private()))
    assert state == RealtimeSubscribeStates.SUBSCRIBED, err


async def test_anon_is_refused_a_private_case_channel_with_supabases_reason(
    devstack: Devstack, clients: list[AsyncRealtimeClient]
) -> None:
    anon = await _client(devstack)
    clients.append(anon)
    case = f"case:{uuid.uuid4()}"
    state, err = await subscribe(anon.channel(case, private()))
    assert state == RealtimeSubscribeStates.CHANNEL_ERROR
    assert (
        "Unauthorized: You do not have permissions to read from this Channel topic: " + case
        in str(err)
    )


async def test_non_operator_user_is_refused(
    devstack: Devstack, clients: list[AsyncRealtimeClient]
) -> None:
    user = await _client(devstack, devstack.keys.user_token(operator=False))
    clients.append(user)
    state, _ = await subscribe(user.channel("operators", private()))
    assert state == RealtimeSubscribeStates.CHANNEL_ERROR


async def test_broadcast_with_ack_and_self_reaches_sender_and_peer(
    devstack: Devstack, clients: list[AsyncRealtimeClient]
) -> None:
    loop = asyncio.get_running_loop()
    topic = f"case:{uuid.uuid4()}"
    a = await _client(devstack, devstack.keys.user_token(operator=True))
    b = await _client(devstack, devstack.keys.user_token(operator=True))
    clients += [a, b]
    got_a, on_a = collector(loop)
    got_b, on_b = collector(loop)
    ch_a = a.channel(topic, private(self_=True, ack=True)).on_broadcast("typing", on_a)
    ch_b = b.channel(topic, private()).on_broadcast("typing", on_b)
    assert (await subscribe(ch_a))[0] == RealtimeSubscribeStates.SUBSCRIBED
    assert (await subscribe(ch_b))[0] == RealtimeSubscribeStates.SUBSCRIBED
    await ch_a.send_broadcast("typing", {"operator": "a", "n": 1})
    mine = await asyncio.wait_for(got_a.get(), 5)
    theirs = await asyncio.wait_for(got_b.get(), 5)
    assert mine["event"] == "typing"
    assert mine["payload"] == {"operator": "a", "n": 1}
    assert theirs["payload"] == {"operator": "a", "n": 1}


async def test_presence_join_and_leave_seen_by_a_second_client(
    devstack: Devstack, clients: list[AsyncRealtimeClient]
) -> None:
    loop = asyncio.get_running_loop()
    watcher = await _client(devstack, devstack.keys.user_token(operator=True))
    joiner = await _client(devstack, devstack.keys.user_token(operator=True))
    clients += [watcher, joiner]
    joins: asyncio.Queue[Any] = asyncio.Queue()
    leaves: asyncio.Queue[Any] = asyncio.Queue()
    ch_w = watcher.channel("operators", private(key="watcher", presence=True))
    ch_w.on_presence_join(lambda key, cur, new: loop.call_soon(joins.put_nowait, (key, new)))
    ch_w.on_presence_leave(lambda key, cur, left: loop.call_soon(leaves.put_nowait, (key, left)))
    assert (await subscribe(ch_w))[0] == RealtimeSubscribeStates.SUBSCRIBED
    ch_j = joiner.channel("operators", private(key="op-2", presence=True))
    assert (await subscribe(ch_j))[0] == RealtimeSubscribeStates.SUBSCRIBED
    await ch_j.track({"operator_id": "op-2", "status": "available"})
    key, new = await asyncio.wait_for(joins.get(), 5)
    assert key == "op-2"
    assert new[0]["status"] == "available"
    assert "op-2" in ch_w.presence.state
    await joiner.close()  # vanishes without untrack: the server cleans up
    clients.remove(joiner)
    key, left = await asyncio.wait_for(leaves.get(), 5)
    assert key == "op-2"
    assert left[0]["operator_id"] == "op-2"


async def test_database_insert_into_messages_reaches_case_subscriber_with_contract_payload(
    devstack: Devstack, clients: list[AsyncRealtimeClient]
) -> None:
    loop = asyncio.get_running_loop()
    case_id = uuid.uuid4()
    op = await _client(devstack, devstack.keys.user_token(operator=True))
    clients.append(op)
    got, on_message = collector(loop)
    ch = op.channel(f"case:{case_id}", private()).on_broadcast("message", on_message)
    assert (await subscribe(ch))[0] == RealtimeSubscribeStates.SUBSCRIBED
    conn = await asyncpg.connect(devstack.db_url)
    try:
        await conn.execute(
            "select public.hitl_open_case($1::jsonb)",
            json.dumps(
                {
                    "case_id": str(case_id),
                    "question": "Refund?",
                    "mcp_session_id": "s",
                    "retell_call_id": f"c-{case_id}",
                    "retell_agent_id": "a",
                }
            ),
        )
        operator_id = uuid.uuid4()
        await conn.execute(
            "insert into messages (case_id, sender_type, sender_id, content)"
            " values ($1, 'human', $2, 'Yes, refund it')",
            case_id,
            operator_id,
        )
    finally:
        await conn.close()
    message = await asyncio.wait_for(got.get(), 5)
    payload = message["payload"]
    assert message["event"] == "message"
    assert payload["case_id"] == str(case_id)
    assert payload["sender_type"] == "human"
    assert payload["sender_id"] == str(operator_id)
    assert payload["content"] == "Yes, refund it"
    assert payload["kind"] == "answer"
    assert payload["is_answer"] is True
    assert {"id", "created_at"} <= payload.keys()
    assert message["meta"]["id"]  # realtime.messages id, as Supabase's replication sends it


async def test_anon_receives_nothing_from_a_public_channel_of_the_same_name(
    devstack: Devstack, clients: list[AsyncRealtimeClient]
) -> None:
    """Private and public topics are distinct: database broadcasts are private only."""
    loop = asyncio.get_running_loop()
    case_id = uuid.uuid4()
    anon = await _client(devstack)
    op = await _client(devstack, devstack.keys.user_token(operator=True))
    clients += [anon, op]
    leaked, on_leak = collector(loop)
    got, on_got = collector(loop)
    public_ch = anon.channel(f"case:{case_id}", {"config": {"private": False}})
    public_ch.on_broadcast("message", on_leak)
    assert (await subscribe(public_ch))[0] == RealtimeSubscribeStates.SUBSCRIBED
    ch = op.channel(f"case:{case_id}", private()).on_broadcast("message", on_got)
    assert (await subscribe(ch))[0] == RealtimeSubscribeStates.SUBSCRIBED
    conn = await asyncpg.connect(devstack.db_url)
    try:
        await conn.execute(
            "select realtime.send('{\"x\": 1}'::jsonb, 'message', $1, true)", f"case:{case_id}"
        )
    finally:
        await conn.close()
    assert (await asyncio.wait_for(got.get(), 5))["payload"]["x"] == 1
    assert leaked.empty()


async def test_the_101st_channel_on_one_connection_is_refused(
    devstack: Devstack, clients: list[AsyncRealtimeClient]
) -> None:
    c = await _client(devstack)
    clients.append(c)
    for i in range(100):
        state, _ = await subscribe(c.channel(f"room-{i}", {"config": {"private": False}}))
        assert state == RealtimeSubscribeStates.SUBSCRIBED
    state, err = await subscribe(c.channel("room-100", {"config": {"private": False}}))
    assert state == RealtimeSubscribeStates.CHANNEL_ERROR
    assert "ChannelRateLimitReached: Too many channels" in str(err)


async def test_joins_beyond_the_per_second_limit_are_refused_and_the_socket_dropped(
    devstack: Devstack, clients: list[AsyncRealtimeClient]
) -> None:
    assert devstack.realtime is not None
    devstack.realtime.limits.max_joins_per_second = 3  # type: ignore[attr-defined]
    c = await _client(devstack)
    clients.append(c)
    states = [
        (await subscribe(c.channel(f"burst-{i}", {"config": {"private": False}}))) for i in range(4)
    ]
    assert [s for s, _ in states[:3]] == [RealtimeSubscribeStates.SUBSCRIBED] * 3
    assert "ClientJoinRateLimitReached: Too many joins per second" in str(states[3][1])
