"""Faults: clients that vanish, a devstack that restarts, a database connection that drops,
refused channels and payloads, garbage on the wire. The server must clean up, refuse with
Supabase's replies, close only the offending socket, and keep serving everyone else.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from realtime import RealtimeSubscribeStates
from realtime_support import (
    PUBLIC,
    V1,
    V2,
    Raw,
    RtClients,
    collector,
    db_send,
    get,
    kind3,
    next_state,
    private,
    state_log,
    subscribe,
)

from hitl_devstack.server import Devstack

OpenRaw = Callable[..., Awaitable[Raw]]
StackWith = Callable[..., Awaitable[Devstack]]
SUBSCRIBED = RealtimeSubscribeStates.SUBSCRIBED
CHANNEL_ERROR = RealtimeSubscribeStates.CHANNEL_ERROR


async def test_a_client_that_vanishes_without_leave_is_cleaned_up(
    stack: Devstack, rt: RtClients, raw: OpenRaw
) -> None:
    room = f"case:{uuid.uuid4()}"
    watcher = await rt.connect(stack, stack.keys.user_token(operator=True))
    joins: asyncio.Queue[Any] = asyncio.Queue()
    leaves: asyncio.Queue[Any] = asyncio.Queue()
    ch = watcher.channel(room, private(key="watcher", presence=True))
    ch.on_presence_join(lambda key, cur, new: joins.put_nowait(key))
    ch.on_presence_leave(lambda key, cur, left: leaves.put_nowait((key, left)))
    assert (await subscribe(ch))[0] == SUBSCRIBED
    ghost = await raw(stack, vsn=V2)
    token = stack.keys.user_token(operator=True)
    reply = await ghost.join(room, private(key="ghost", presence=True), access_token=token)
    assert reply[4]["status"] == "ok"
    track = {"type": "presence", "event": "track", "payload": {"status": "available"}}
    await ghost.send("1", "2", "realtime:" + room, "presence", track)
    assert await get(joins) == "ghost"
    ghost.vanish()  # no phx_leave, no close frame: the TCP connection just dies
    key, left = await get(leaves)
    assert (key, left[0]["status"]) == ("ghost", "available")
    assert stack.realtime is not None
    subscribers = stack.realtime.topics[(room, True)].subscribers  # type: ignore[attr-defined]
    assert [c.presence_key for c in subscribers] == ["watcher"]  # its channel was freed too


async def test_a_restarted_devstack_is_rejoined_by_the_python_client_by_itself(
    stack_with: StackWith, rt: RtClients
) -> None:
    first = await stack_with()
    case = f"case:{uuid.uuid4()}"
    client = await rt.connect(first, first.keys.user_token(operator=True))
    states: list[Any] = []
    queue, on_state = state_log(states)
    got, on_message = collector()
    await client.channel(case, private()).on_broadcast("message", on_message).subscribe(on_state)
    assert await next_state(queue, SUBSCRIBED) is None
    await first.stop()  # every socket closed with 1001 "going away"
    second = await stack_with(port=first.port)
    # realtime-py reconnects (backoff 1 s) and rejoins the errored channel on its own
    await next_state(queue, CHANNEL_ERROR, within_s=10)
    await next_state(queue, SUBSCRIBED, within_s=15)
    await db_send(second.db_url, case, "message", {"after": "restart"})
    assert (await get(got))["payload"]["after"] == "restart"


async def test_the_101st_channel_on_one_connection_is_refused(
    stack: Devstack, rt: RtClients
) -> None:
    c = await rt.connect(stack)
    prefix = uuid.uuid4().hex[:8]
    for i in range(100):
        state, err = await subscribe(c.channel(f"{prefix}-{i}", PUBLIC))
        assert state == SUBSCRIBED, (i, err)
    state, err = await subscribe(c.channel(f"{prefix}-100", PUBLIC))
    assert state == CHANNEL_ERROR
    assert str(err) == '{"reason": "ChannelRateLimitReached: Too many channels"}'


async def test_an_oversized_broadcast_is_refused_and_never_delivered(
    stack: Devstack, rt: RtClients, raw: OpenRaw
) -> None:
    """Above 3,000 KB + 500 bytes (Supabase's Pro limit) the broadcast is dropped; with ack the
    sender gets `payload_size_exceeded` (see the golden frame)."""
    topic = f"room-{uuid.uuid4()}"
    peer = await rt.connect(stack)
    got, on_message = collector()
    assert (await subscribe(peer.channel(topic, PUBLIC).on_broadcast("*", on_message)))[0] == (
        SUBSCRIBED
    )
    sender = await raw(stack, vsn=V1)
    config = {"config": {"broadcast": {"ack": True}, "private": False}}
    assert (await sender.join(topic, config))["payload"]["status"] == "ok"
    huge = {"event": "big", "payload": {"blob": "x" * 3_000_600}, "type": "broadcast"}
    await sender.send("1", "2", "realtime:" + topic, "broadcast", huge)
    refused = await sender.recv()
    assert refused["payload"] == {"response": "payload_size_exceeded", "status": "error"}
    small = {"event": "small", "payload": {"n": 1}, "type": "broadcast"}
    await sender.send("1", "3", "realtime:" + topic, "broadcast", small)
    assert (await get(got))["event"] == "small"  # the big one never reached the peer


GARBAGE: list[tuple[str, str, str | bytes, int, str]] = [
    ("not JSON", V1, "hello there", 1011, "invalid message: invalid JSON"),
    ("a JSON list on V1", V1, "[1, 2, 3]", 1011, "invalid message: V1 JSON Serializer"),
    (
        "a V1 message without ref",
        V1,
        '{"topic":"x","event":"y","payload":{}}',
        1011,
        "invalid message: missing key 'ref'",
    ),
    ("binary on V1", V1, b"\x03\x00", 1011, "invalid message: V1 JSON Serializer"),
    ("a short V2 array", V2, '["1","1","realtime:x"]', 1011, "invalid message: expected V2"),
    ("a V2 object", V2, '{"topic":"x"}', 1011, "invalid message: expected V2"),
    ("binary kind 9", V2, b"\x09abc", 1011, "invalid message: binary frames of kind 9"),
    ("a truncated kind 3", V2, b"\x03\x05\x05\x05", 1011, "invalid message: binary frame"),
    ("a 6 MB frame", V2, "x" * 6_000_000, 1009, "message too big"),
]


@pytest.mark.parametrize(
    ("vsn", "frame", "code", "reason"),
    [g[1:] for g in GARBAGE],
    ids=[g[0] for g in GARBAGE],
)
async def test_garbage_closes_only_its_own_socket_and_the_server_keeps_serving(
    stack: Devstack,
    rt: RtClients,
    raw: OpenRaw,
    vsn: str,
    frame: str | bytes,
    code: int,
    reason: str,
) -> None:
    topic = f"room-{uuid.uuid4()}"
    bystander = await rt.connect(stack)
    got, on_message = collector()
    ch = bystander.channel(topic, {"config": {"broadcast": {"self": True}, "private": False}})
    assert (await subscribe(ch.on_broadcast("*", on_message)))[0] == SUBSCRIBED
    bad = await raw(stack, vsn=vsn)
    await bad.send_raw(frame)
    closed_code, closed_reason = await bad.closed()
    assert closed_code == code
    assert closed_reason.startswith(reason), closed_reason
    await ch.send_broadcast("still-here", {"ok": True})
    assert (await get(got))["event"] == "still-here"
    fresh = await raw(stack, vsn=V2)  # and new sockets are still accepted
    await fresh.send(None, "1", "phoenix", "heartbeat", {})
    assert (await fresh.recv())[4]["status"] == "ok"


async def test_a_binary_push_kind_3_to_an_unjoined_topic_is_an_unmatched_topic(
    stack: Devstack, raw: OpenRaw
) -> None:
    sock = await raw(stack, vsn=V2)
    await sock.send_raw(kind3("1", "2", "realtime:nowhere", "e", b"{}"))
    reply = await sock.recv()
    assert reply[1:] == [
        "2",
        "realtime:nowhere",
        "phx_reply",
        {"response": {"reason": "unmatched topic"}, "status": "error"},
    ]


async def test_database_broadcasts_resume_after_the_listen_connection_is_killed(
    stack_with: StackWith, rt: RtClients
) -> None:
    own = await stack_with()
    case = f"case:{uuid.uuid4()}"
    client = await rt.connect(own, own.keys.user_token(operator=True))
    got, on_message = collector()
    assert (await subscribe(client.channel(case, private()).on_broadcast("*", on_message)))[0] == (
        SUBSCRIBED
    )
    service: Any = own.realtime
    pid = service.db._listen_conn.get_server_pid()
    conn = await asyncpg.connect(own.db_url)
    try:
        assert await conn.fetchval("select pg_terminate_backend($1)", pid)
        # until the service has re-LISTENed, rows go unnoticed: keep sending until one arrives
        for attempt in range(40):
            await conn.execute(
                "select realtime.send(jsonb_build_object('attempt', $1::int), 'probe', $2, true)",
                attempt,
                case,
            )
            try:
                message = await get(got, within_s=0.25)
            except TimeoutError:
                continue
            break
        else:
            raise AssertionError("no database broadcast after the LISTEN connection died")
    finally:
        await conn.close()
    assert message["event"] == "probe"
    assert service.db._listen_conn.get_server_pid() != pid


async def test_a_silent_socket_is_closed_after_the_idle_timeout(
    stack_with: StackWith, raw: OpenRaw
) -> None:
    own = await stack_with(idle_timeout_s=0.3)
    sock = await raw(own, vsn=V2)
    assert await sock.closed(within_s=5) == (1000, "idle timeout")
