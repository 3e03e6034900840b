"""The unmodified `realtime` / supabase-py clients against the stack's Realtime subset.

Each test waits on the client's own callbacks (futures / queues with timeouts), never on sleeps.
"Nothing arrived" is proven with a marker: a later message on the same socket that does arrive,
since a socket's frames are delivered in order.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from realtime import RealtimeSubscribeStates
from realtime.exceptions import RealtimeHTTPError
from realtime_support import (
    PUBLIC,
    RtClients,
    collector,
    db_send,
    get,
    next_state,
    private,
    state_log,
    subscribe,
)
from supabase import acreate_client

from hitl_devstack.server import Devstack

SUBSCRIBED = RealtimeSubscribeStates.SUBSCRIBED
CHANNEL_ERROR = RealtimeSubscribeStates.CHANNEL_ERROR
CLOSED = RealtimeSubscribeStates.CLOSED


def unauthorized(topic: str) -> str:
    reason = f"Unauthorized: You do not have permissions to read from this Channel topic: {topic}"
    return json.dumps({"reason": reason})  # realtime-py: Exception(json.dumps(response))


async def open_case(db_url: str, case_id: uuid.UUID) -> None:
    conn = await asyncpg.connect(db_url)
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
    finally:
        await conn.close()


# ---- private channels -----------------------------------------------------------------------


async def test_operator_joins_a_private_case_channel(stack: Devstack, rt: RtClients) -> None:
    op = await rt.connect(stack, stack.keys.user_token(operator=True))
    state, err = await subscribe(op.channel(f"case:{uuid.uuid4()}", private()))
    assert state == SUBSCRIBED, err


async def test_anon_is_refused_a_private_case_channel_with_supabases_reason(
    stack: Devstack, rt: RtClients
) -> None:
    anon = await rt.connect(stack)
    case = f"case:{uuid.uuid4()}"
    state, err = await subscribe(anon.channel(case, private()))
    assert state == CHANNEL_ERROR
    assert str(err) == unauthorized(case)


async def test_a_signed_in_user_who_is_not_an_operator_is_refused(
    stack: Devstack, rt: RtClients
) -> None:
    user = await rt.connect(stack, stack.keys.user_token(operator=False))
    state, err = await subscribe(user.channel("operators", private()))
    assert state == CHANNEL_ERROR
    assert str(err) == unauthorized("operators")


async def test_anon_may_join_a_public_channel_of_any_name(stack: Devstack, rt: RtClients) -> None:
    anon = await rt.connect(stack)
    state, err = await subscribe(anon.channel(f"case:{uuid.uuid4()}", PUBLIC))
    assert state == SUBSCRIBED, err


async def test_supabase_async_client_channels_reach_a_database_broadcast(
    stack: Devstack,
) -> None:
    """supabase-py's own AsyncClient (service role: RLS bypassed) on a private topic."""
    client = await acreate_client(stack.url, stack.keys.service_role_key)
    try:
        got, on_message = collector()
        case = f"case:{uuid.uuid4()}"
        ch = client.channel(case, private()).on_broadcast("message", on_message)
        assert (await subscribe(ch))[0] == SUBSCRIBED
        await db_send(stack.db_url, case, "message", {"content": "hi"})
        message = await get(got)
        assert message["payload"]["content"] == "hi"
    finally:
        await client.remove_all_channels()


# ---- broadcast ----------------------------------------------------------------------------


async def test_broadcast_with_ack_and_self_reaches_sender_and_peer(
    stack: Devstack, rt: RtClients
) -> None:
    topic = f"case:{uuid.uuid4()}"
    a = await rt.connect(stack, stack.keys.user_token(operator=True))
    b = await rt.connect(stack, stack.keys.user_token(operator=True))
    got_a, on_a = collector()
    got_b, on_b = collector()
    ch_a = a.channel(topic, private(self_=True, ack=True)).on_broadcast("typing", on_a)
    ch_b = b.channel(topic, private()).on_broadcast("typing", on_b)
    assert (await subscribe(ch_a))[0] == SUBSCRIBED
    assert (await subscribe(ch_b))[0] == SUBSCRIBED
    await ch_a.send_broadcast("typing", {"operator": "a", "n": 1})
    mine, theirs = await get(got_a), await get(got_b)
    assert mine == {"event": "typing", "payload": {"operator": "a", "n": 1}}  # py drops `type`
    assert theirs == mine


async def test_broadcast_without_self_does_not_come_back_to_the_sender(
    stack: Devstack, rt: RtClients
) -> None:
    topic = f"room-{uuid.uuid4()}"
    a, b = await rt.connect(stack), await rt.connect(stack)
    got_a, on_a = collector()
    got_b, on_b = collector()
    ch_a = a.channel(topic, PUBLIC).on_broadcast("*", on_a)
    ch_b = b.channel(topic, PUBLIC).on_broadcast("*", on_b)
    assert (await subscribe(ch_a))[0] == SUBSCRIBED
    assert (await subscribe(ch_b))[0] == SUBSCRIBED
    await ch_a.send_broadcast("first", {"from": "a"})
    assert (await get(got_b))["event"] == "first"
    await ch_b.send_broadcast("marker", {"from": "b"})
    assert (await get(got_a))["event"] == "marker"  # "first" never reached its sender


async def test_anon_receives_nothing_from_a_public_channel_of_the_same_name(
    stack: Devstack, rt: RtClients
) -> None:
    """Private and public topics are distinct: database broadcasts here are private."""
    case = f"case:{uuid.uuid4()}"
    anon = await rt.connect(stack)
    op = await rt.connect(stack, stack.keys.user_token(operator=True))
    leaked, on_leak = collector()
    got, on_got = collector()
    assert (await subscribe(anon.channel(case, PUBLIC).on_broadcast("*", on_leak)))[0] == SUBSCRIBED
    ch = op.channel(case, private()).on_broadcast("message", on_got)
    assert (await subscribe(ch))[0] == SUBSCRIBED
    await db_send(stack.db_url, case, "message", {"x": 1}, private_=True)
    assert (await get(got))["payload"]["x"] == 1
    await db_send(stack.db_url, case, "marker", {"x": 2}, private_=False)
    marker = await get(leaked)
    assert marker["event"] == "marker"  # the first thing the public subscriber saw


async def test_http_send_reaches_a_private_subscriber_and_anon_is_refused_with_403(
    stack: Devstack, rt: RtClients
) -> None:
    case = f"case:{uuid.uuid4()}"
    token = stack.keys.user_token(operator=True)
    op = await rt.connect(stack, token)
    got, on_got = collector()
    ch = op.channel(case, private()).on_broadcast("note", on_got)
    assert (await subscribe(ch))[0] == SUBSCRIBED
    await ch.http_send("note", {"text": "over REST"})
    message = await get(got)
    assert message["event"] == "note"
    assert message["payload"] == {"text": "over REST"}
    anon = await rt.connect(stack)
    anon_channel = anon.channel(case, private())
    with pytest.raises(RealtimeHTTPError) as refused:
        await anon_channel.http_send("note", {"text": "sneaky"})
    assert refused.value.status == 403
    assert str(refused.value) == "Unauthorized"


async def test_rest_batch_broadcast_skips_private_messages_the_token_may_not_write(
    stack: Devstack, rt: RtClients
) -> None:
    case = f"case:{uuid.uuid4()}"
    op = await rt.connect(stack, stack.keys.user_token(operator=True))
    got, on_got = collector()
    ch = op.channel(case, private()).on_broadcast("*", on_got)
    assert (await subscribe(ch))[0] == SUBSCRIBED
    url = f"{stack.url}/realtime/v1/api/broadcast"
    anon_key = stack.keys.anon_key
    body = {"messages": [{"topic": case, "event": "from-anon", "payload": {}, "private": True}]}
    async with httpx.AsyncClient() as http:
        r = await http.post(url, json=body, headers={"apikey": anon_key})
        assert (r.status_code, r.content) == (202, b"")
        op_body = {
            "messages": [{"topic": case, "event": "from-op", "payload": {"n": 1}, "private": True}]
        }
        r = await http.post(
            url,
            json=op_body,
            headers={
                "apikey": anon_key,
                "Authorization": f"Bearer {stack.keys.user_token(operator=True)}",
            },
        )
        assert r.status_code == 202
        # with a key, the bad bearer reaches Realtime (auth_tenant.ex); without one the gateway
        # refuses first (kong.yml key-auth on realtime-v1-rest)
        r = await http.post(
            url, json=body, headers={"apikey": anon_key, "Authorization": "Bearer not-a-jwt"}
        )
        assert (r.status_code, r.json()) == (401, {"message": "Unauthorized"})
        r = await http.post(url, json=body, headers={"Authorization": "Bearer not-a-jwt"})
        assert (r.status_code, r.json()["message"]) == (401, "No API key found in request")
    first = await get(got)
    assert (first["event"], first["payload"]) == ("from-op", {"n": 1})  # anon's was skipped


# ---- presence -----------------------------------------------------------------------------


async def test_presence_join_and_leave_seen_by_a_second_client(
    stack: Devstack, rt: RtClients
) -> None:
    watcher = await rt.connect(stack, stack.keys.user_token(operator=True))
    joiner = await rt.connect(stack, stack.keys.user_token(operator=True))
    joins: asyncio.Queue[Any] = asyncio.Queue()
    leaves: asyncio.Queue[Any] = asyncio.Queue()
    room = f"case:{uuid.uuid4()}"
    ch_w = watcher.channel(room, private(key="watcher", presence=True))
    ch_w.on_presence_join(lambda key, cur, new: joins.put_nowait((key, new)))
    ch_w.on_presence_leave(lambda key, cur, left: leaves.put_nowait((key, left)))
    assert (await subscribe(ch_w))[0] == SUBSCRIBED
    ch_j = joiner.channel(room, private(key="op-2", presence=True))
    assert (await subscribe(ch_j))[0] == SUBSCRIBED
    await ch_j.track({"operator_id": "op-2", "status": "available"})
    key, new = await get(joins)
    assert key == "op-2"
    assert new[0]["status"] == "available"
    assert new[0]["presence_ref"]
    assert ch_w.presence_state()["op-2"][0]["operator_id"] == "op-2"
    await ch_j.untrack()
    key, left = await get(leaves)
    assert (key, left[0]["operator_id"]) == ("op-2", "op-2")
    assert "op-2" not in ch_w.presence_state()


async def test_presence_state_on_join_lists_who_is_already_there(
    stack: Devstack, rt: RtClients
) -> None:
    first = await rt.connect(stack, stack.keys.user_token(operator=True))
    room = f"case:{uuid.uuid4()}"
    ch_1 = first.channel(room, private(key="op-1", presence=True))
    assert (await subscribe(ch_1))[0] == SUBSCRIBED
    await ch_1.track({"status": "available"})
    second = await rt.connect(stack, stack.keys.user_token(operator=True))
    synced: asyncio.Queue[None] = asyncio.Queue()
    ch_2 = second.channel(room, private(key="op-2", presence=True))
    ch_2.on_presence_sync(lambda: synced.put_nowait(None))
    assert (await subscribe(ch_2))[0] == SUBSCRIBED
    await get(synced)
    state = ch_2.presence_state()
    assert list(state) == ["op-1"]
    assert state["op-1"][0]["status"] == "available"


# ---- database broadcasts --------------------------------------------------------------------


async def test_database_insert_into_messages_reaches_case_subscriber_with_contract_payload(
    stack: Devstack, rt: RtClients
) -> None:
    case_id = uuid.uuid4()
    op = await rt.connect(stack, stack.keys.user_token(operator=True))
    got, on_message = collector()
    ch = op.channel(f"case:{case_id}", private()).on_broadcast("message", on_message)
    assert (await subscribe(ch))[0] == SUBSCRIBED
    await open_case(stack.db_url, case_id)
    operator_id = uuid.uuid4()
    conn = await asyncpg.connect(stack.db_url)
    try:
        message_id = await conn.fetchval(
            "insert into messages (case_id, sender_type, sender_id, content)"
            " values ($1, 'human', $2, 'Yes, refund it') returning id",
            case_id,
            operator_id,
        )
    finally:
        await conn.close()
    message = await get(got)
    payload = message["payload"]
    assert message["event"] == "message"
    assert payload["id"] == str(message_id)
    assert payload["case_id"] == str(case_id)
    assert payload["sender_type"] == "human"
    assert payload["sender_id"] == str(operator_id)
    assert payload["content"] == "Yes, refund it"
    assert payload["kind"] == "answer"
    assert payload["is_answer"] is True
    assert "created_at" in payload
    assert message["meta"]["id"]  # the realtime.messages row id, as replication sends it


async def test_database_broadcasts_arrive_in_commit_order_including_large_rows(
    stack: Devstack, rt: RtClients
) -> None:
    """A row too large for NOTIFY is read back by id; later rows wait behind it."""
    case = f"case:{uuid.uuid4()}"
    op = await rt.connect(stack, stack.keys.user_token(operator=True))
    got, on_message = collector()
    assert (await subscribe(op.channel(case, private()).on_broadcast("*", on_message)))[0] == (
        SUBSCRIBED
    )
    conn = await asyncpg.connect(stack.db_url)
    try:
        for n in range(6):
            body = {"n": n, "blob": "x" * (20_000 if n in (1, 4) else 10)}
            await conn.execute(
                "select realtime.send($1::jsonb, 'seq', $2, true)", json.dumps(body), case
            )
    finally:
        await conn.close()
    received = [await get(got) for _ in range(6)]
    assert [m["payload"]["n"] for m in received] == [0, 1, 2, 3, 4, 5]
    assert len(received[1]["payload"]["blob"]) == 20_000


async def test_replay_on_join_delivers_earlier_private_messages_once(
    stack: Devstack, rt: RtClients
) -> None:
    case = f"case:{uuid.uuid4()}"
    since_ms = int(time.time() * 1000) - 60_000
    for n in range(3):
        await db_send(stack.db_url, case, "old", {"n": n})
    op = await rt.connect(stack, stack.keys.user_token(operator=True))
    got, on_message = collector()
    options: Any = private()
    options["config"]["broadcast"]["replay"] = {"since": since_ms, "limit": 2}
    assert (await subscribe(op.channel(case, options).on_broadcast("*", on_message)))[0] == (
        SUBSCRIBED
    )
    replayed = [await get(got), await get(got)]
    assert [m["payload"]["n"] for m in replayed] == [1, 2]  # the 2 latest, oldest first
    assert all(m["meta"]["replayed"] is True for m in replayed)
    await db_send(stack.db_url, case, "new", {"n": 3})
    assert (await get(got))["event"] == "new"


# ---- tokens and leaving -------------------------------------------------------------------


async def test_access_token_refresh_keeps_the_channel_and_an_expired_token_closes_it(
    stack: Devstack, rt: RtClients
) -> None:
    case = f"case:{uuid.uuid4()}"
    op = await rt.connect(stack, stack.keys.user_token(operator=True))
    got, on_message = collector()
    states: list[Any] = []
    queue, on_state = state_log(states)
    ch = op.channel(case, private(self_=True, ack=True)).on_broadcast("*", on_message)
    await ch.subscribe(on_state)
    assert await next_state(queue, SUBSCRIBED) is None
    await op.set_auth(stack.keys.user_token(operator=True))  # a fresh token: no reply
    await ch.send_broadcast("after-refresh", {"ok": 1})
    assert (await get(got))["event"] == "after-refresh"
    expired = stack.keys.user_token(operator=True, ttl_s=-10)
    await op.set_auth(expired)
    err = await next_state(queue, CHANNEL_ERROR)  # realtime-py: system error → CHANNEL_ERROR
    system = json.loads(str(err))
    assert system["message"].startswith("Token has expired ")
    assert (system["status"], system["extension"], system["channel"]) == (
        "error",
        "system",
        case,
    )
    await next_state(queue, CLOSED)  # then phx_close


async def test_a_token_that_expires_while_joined_closes_the_channel(
    stack: Devstack, rt: RtClients
) -> None:
    op = await rt.connect(stack, stack.keys.user_token(operator=True, ttl_s=1))
    states: list[Any] = []
    queue, on_state = state_log(states)
    await op.channel(f"case:{uuid.uuid4()}", private()).subscribe(on_state)
    assert await next_state(queue, SUBSCRIBED) is None
    err = await next_state(queue, CHANNEL_ERROR, within_s=5)
    assert json.loads(str(err))["message"] == "Token has expired 0 seconds ago"
    await next_state(queue, CLOSED)


async def test_unsubscribe_is_acknowledged_and_closes_the_channel(
    stack: Devstack, rt: RtClients
) -> None:
    c = await rt.connect(stack)
    states: list[Any] = []
    queue, on_state = state_log(states)
    ch = c.channel(f"room-{uuid.uuid4()}", PUBLIC)
    await ch.subscribe(on_state)
    await next_state(queue, SUBSCRIBED)
    await ch.unsubscribe()
    await next_state(queue, CLOSED)
    assert ch.topic not in c.channels
