"""Supabase's Realtime limits, with its replies, on stacks configured with small limits.

Joins and events per second are counted per project like Realtime's RateCounter (a moving
average over 12 ticks, re-evaluated each tick): a short burst passes, a sustained one is refused.
These tests use a tick of a few milliseconds and keep going until the refusal shows.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import httpx
from realtime_support import PUBLIC, V2, Raw

from hitl_devstack.server import Devstack

OpenRaw = Callable[..., Awaitable[Raw]]
StackWith = Callable[..., Awaitable[Devstack]]


async def test_sustained_joins_over_the_limit_are_refused_and_the_socket_disconnected(
    stack_with: StackWith, raw: OpenRaw
) -> None:
    # realtime_channel.ex:184-187: reason, then %Broadcast{event: "disconnect"} → close 1001
    own = await stack_with(max_joins_per_second=3, rate_tick_s=0.005, max_channels_per_client=9999)
    sock = await raw(own, vsn=V2)
    ok = 0
    for i in range(1, 2000):
        reply = await sock.join(f"burst-{i}", PUBLIC, ref=str(i))
        if reply[4]["status"] != "ok":
            break
        ok += 1
    else:
        raise AssertionError("joins were never refused")
    assert ok >= 1  # the first tick's burst went through
    assert reply[4]["response"] == {
        "reason": "ClientJoinRateLimitReached: Too many joins per second"
    }
    assert await sock.closed() == (1001, "")


async def test_sustained_messages_over_the_limit_close_the_receiving_channel(
    stack_with: StackWith, raw: OpenRaw
) -> None:
    # realtime_channel.ex:292-303 handle_info(:update_rate_counter) → shutdown_response
    own = await stack_with(max_events_per_second=20, rate_tick_s=0.005)
    sock = await raw(own, vsn=V2)
    config = {"config": {"broadcast": {"self": True}, "private": False}}
    assert (await sock.join("chatty", config))[4]["status"] == "ok"
    for i in range(2000):
        await sock.send(
            "1", str(i + 10), "realtime:chatty", "broadcast", {"event": "e", "payload": {}}
        )
        frame = await sock.recv()
        if frame[3] == "system":
            break
        assert frame[3] == "broadcast"
    else:
        raise AssertionError("the channel was never closed for its message rate")
    assert frame == [
        "1",
        None,
        "realtime:chatty",
        "system",
        {
            "channel": "chatty",
            "extension": "system",
            "message": "Too many messages per second",
            "status": "error",
        },
    ]
    assert await sock.recv() == ["1", "1", "realtime:chatty", "phx_close", {}]


async def test_a_sixth_presence_call_within_30_seconds_closes_the_channel(
    stack: Devstack, raw: OpenRaw
) -> None:
    # presence_handler.ex:215-237 (5 calls per 30 s window, per channel) →
    # realtime_channel.ex:504-506 shutdown_response("Client presence rate limit exceeded")
    topic = f"realtime:room-{uuid.uuid4()}"
    sock = await raw(stack, vsn=V2)
    assert (await sock.join(topic.removeprefix("realtime:"), PUBLIC))[4]["status"] == "ok"
    for n in range(5):
        track = {"type": "presence", "event": "track", "payload": {"n": n}}
        await sock.send("1", str(n + 10), topic, "presence", track)
        reply, _ = await sock.recv_until(lambda f: f[3] == "phx_reply")
        assert reply[4] == {"response": {}, "status": "ok"}
    await sock.send("1", "20", topic, "presence", {"event": "track", "payload": {"n": 5}})
    system, _ = await sock.recv_until(lambda f: f[3] == "system")
    assert system[4]["message"] == "Client presence rate limit exceeded"
    close, _ = await sock.recv_until(lambda f: f[3] != "presence_diff")
    assert close == ["1", "1", topic, "phx_close", {}]


async def test_rest_batch_broadcast_refuses_a_batch_over_the_rate_limit_with_429(
    stack_with: StackWith,
) -> None:
    # batch_broadcast.ex:170-184 check_rate_limit
    own = await stack_with(max_events_per_second=2)
    messages = [{"topic": "t", "event": "e", "payload": {"n": n}} for n in range(5)]
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{own.url}/realtime/v1/api/broadcast",
            json={"messages": messages},
            headers={"apikey": own.keys.anon_key},
        )
    assert r.status_code == 429
    assert r.json() == {"message": "Too many messages to broadcast, please reduce the batch size"}


async def test_rest_broadcast_validation_errors_are_ecto_changeset_errors(stack: Devstack) -> None:
    # batch_broadcast.ex:99-127 changeset; changeset_view.ex {"errors": traverse_errors}
    url = f"{stack.url}/realtime/v1/api/broadcast"
    headers = {"apikey": stack.keys.anon_key}
    async with httpx.AsyncClient() as http:
        r = await http.post(url, json={}, headers=headers)
        assert (r.status_code, r.json()) == (422, {"errors": {"messages": ["can't be blank"]}})
        body = {
            "messages": [
                {"topic": "t", "event": "e", "payload": {}},
                {"topic": "t", "payload": "not a map"},
            ]
        }
        r = await http.post(url, json=body, headers=headers)
        assert r.status_code == 422
        assert r.json() == {
            "errors": {"messages": [{}, {"event": ["can't be blank"], "payload": ["is invalid"]}]}
        }
        single = f"{url}/t/events/e"
        r = await http.post(single, content=b"x", headers={**headers, "content-type": "text/plain"})
        assert r.status_code == 415
        assert r.json() == {
            "error": "Unsupported Media Type. Use application/json or application/octet-stream"
        }


async def test_a_connection_over_the_concurrent_users_limit_is_refused_at_join(
    stack_with: StackWith, raw: OpenRaw
) -> None:
    # realtime_channel.ex limit_max_users/2: sockets that joined a channel count as users; a
    # new one over the limit gets "ConnectionRateLimitReached: Too many connected users"
    own = await stack_with(max_concurrent_users=1)
    first, second = await raw(own, vsn=V2), await raw(own, vsn=V2)
    assert (await first.join("room-a", PUBLIC))[4]["status"] == "ok"
    assert (await first.join("room-b", PUBLIC))[4]["status"] == "ok"  # already counted

    reply = await second.join("room-a", PUBLIC)

    assert reply[4] == {
        "response": {"reason": "ConnectionRateLimitReached: Too many connected users"},
        "status": "error",
    }


async def test_presence_over_the_projects_presence_rate_closes_the_channel(
    stack_with: StackWith, raw: OpenRaw
) -> None:
    # presence_handler.ex limit_presence_event/1 (Tenants.presence_events_per_second_rate) →
    # realtime_channel.ex shutdown_response("Too many presence messages per second")
    own = await stack_with(max_presence_events_per_second=1, rate_tick_s=0.005)
    messages: list[str] = []
    for i in range(200):
        sock = await raw(own, vsn=V2)
        topic = f"realtime:room-{i}"
        assert (await sock.join(topic.removeprefix("realtime:"), PUBLIC))[4]["status"] == "ok"
        for n in range(5):
            track = {"type": "presence", "event": "track", "payload": {"n": n}}
            await sock.send("1", str(n + 10), topic, "presence", track)
            frame, _ = await sock.recv_until(lambda f: f[3] in ("phx_reply", "system"))
            if frame[3] == "system":
                messages.append(frame[4]["message"])
                break
        if messages:
            break
    assert messages == ["Too many presence messages per second"]
