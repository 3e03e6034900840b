"""Golden frames: what the devstack sends, frame by frame, against the Realtime server sources.

A bare `websockets` client speaks V1 (realtime-py's `vsn=1.0.0`) and V2 (supabase-js's
`vsn=2.0.0`). Each golden cites where the real server builds that frame, in
supabase/realtime @833cf36c (v2.129.8; the join/reply strings are identical in v2.102.1, the
CLI's image) and its Phoenix (supabase/phoenix, lib/phoenix/...). V1 frames that hold nothing
server-generated are compared byte for byte: Jason writes Elixir maps with sorted keys, and
Phoenix.Socket.V1.JSONSerializer (v1_json_serializer.ex:42-46, encode_v1_fields_only) writes
only topic/event/payload/ref.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from realtime_support import (
    ANY_INT,
    ANY_STR,
    PUBLIC,
    UUID,
    V1,
    V2,
    Raw,
    db_send,
    event_of,
    kind3,
    parse_kind4,
    private,
)
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from hitl_devstack.server import Devstack

OpenRaw = Callable[..., Awaitable[Raw]]


def joined(reply: Any) -> None:
    status = reply["payload"]["status"] if isinstance(reply, dict) else reply[4]["status"]
    assert status == "ok", reply


# ---- join replies ---------------------------------------------------------------------------


async def test_join_reply_ok_echoes_postgres_changes_bindings_with_integer_ids(
    stack: Devstack, raw: OpenRaw
) -> None:
    # realtime_channel.ex:122 `state = %{postgres_changes: add_id_to_postgres_changes(...)}`,
    # realtime_channel.ex:943-948 (each binding map plus :id = :erlang.phash2(params));
    # phoenix socket.ex:739-750 %Reply{join_ref, ref, topic, status: :ok, payload: reply};
    # v1_json_serializer.ex:14-23 / v2_serializer.ex:98-108 {status, response}.
    binding = {"event": "INSERT", "schema": "public", "table": "todos"}
    payload = {"config": {"private": False, "postgres_changes": [binding]}}
    expected_response = {"postgres_changes": [{**binding, "id": ANY_INT}]}
    v1 = await raw(stack, vsn=V1)
    await v1.send("1", "1", "realtime:room1", "phx_join", payload)
    text = await v1.recv_raw()
    assert json.loads(text) == {
        "event": "phx_reply",
        "payload": {"response": expected_response, "status": "ok"},
        "ref": "1",
        "topic": "realtime:room1",
    }
    assert "join_ref" not in json.loads(text)
    v2 = await raw(stack, vsn=V2)
    await v2.send("6", "6", "realtime:room1", "phx_join", payload)
    assert await v2.recv() == [
        "6",
        "6",
        "realtime:room1",
        "phx_reply",
        {"response": expected_response, "status": "ok"},
    ]
    # without bindings the list is empty, never absent
    await v1.send("2", "2", "realtime:room2", "phx_join", {"config": {"private": False}})
    assert await v1.recv_raw() == (
        '{"event":"phx_reply","payload":{"response":{"postgres_changes":[]},"status":"ok"},'
        '"ref":"2","topic":"realtime:room2"}'
    )


@pytest.mark.parametrize("vsn", [V1, V2])
async def test_join_reply_error_is_the_unauthorized_reason_for_anon_on_a_private_topic(
    stack: Devstack, raw: OpenRaw, vsn: str
) -> None:
    # realtime_channel.ex:978-980 {:error, :unauthorized, "You do not have permissions to read
    # from this Channel topic: #{topic}"} → :174-175 log_error(socket, "Unauthorized", msg),
    # logging.ex:21-25 builds "Code: msg" into {:error, %{reason: msg}}; sent after the
    # channel error backoff (realtime_channel.ex:1121-1124 join_error/1).
    topic = f"case:{uuid.uuid4()}"
    reason = f"Unauthorized: You do not have permissions to read from this Channel topic: {topic}"
    sock = await raw(stack, vsn=vsn)
    await sock.send("3", "3", "realtime:" + topic, "phx_join", private())
    reply = await sock.recv()
    if vsn == V1:
        assert reply == {
            "event": "phx_reply",
            "payload": {"response": {"reason": reason}, "status": "error"},
            "ref": "3",
            "topic": "realtime:" + topic,
        }
    else:
        assert reply == [
            "3",
            "3",
            "realtime:" + topic,
            "phx_reply",
            {"response": {"reason": reason}, "status": "error"},
        ]


async def test_join_refusals_use_supabases_codes(stack: Devstack, raw: OpenRaw) -> None:
    # realtime_channel.ex:41-45 TopicNameRequired; :226-227 / :820-821 MalformedJWT;
    # :167-168 InvalidJWTToken (expired, from channels_authorization.ex:29-32).
    sock = await raw(stack, vsn=V2)
    await sock.send("1", "1", "realtime:", "phx_join", PUBLIC)
    assert (await sock.recv())[4]["response"] == {
        "reason": "TopicNameRequired: You must provide a topic name"
    }
    bad = {**PUBLIC, "access_token": "not-a-jwt"}
    await sock.send("2", "2", "realtime:room", "phx_join", bad)
    assert (await sock.recv())[4]["response"] == {
        "reason": "MalformedJWT: The token provided is not a valid JWT"
    }
    expired = {**PUBLIC, "access_token": stack.keys.user_token(ttl_s=-30)}
    await sock.send("3", "3", "realtime:room", "phx_join", expired)
    reason = (await sock.recv())[4]["response"]["reason"]
    assert re.fullmatch(r"InvalidJWTToken: Token has expired 3\d seconds ago", reason), reason


# ---- heartbeat, leave, unmatched topics -----------------------------------------------------


async def test_heartbeat_replies_carry_the_ref_the_client_sent_even_null(
    stack: Devstack, raw: OpenRaw
) -> None:
    # phoenix socket.ex:705-714 %Reply{ref: ref, topic: "phoenix", status: :ok, payload: %{}}
    v1 = await raw(stack, vsn=V1)
    await v1.send(None, None, "phoenix", "heartbeat", {})  # realtime-py sends ref null
    assert await v1.recv_raw() == (
        '{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":null,"topic":"phoenix"}'
    )
    v2 = await raw(stack, vsn=V2)
    await v2.send(None, "9", "phoenix", "heartbeat", {})
    assert await v2.recv_raw() == ('[null,"9","phoenix","phx_reply",{"response":{},"status":"ok"}]')


@pytest.mark.parametrize("vsn", [V1, V2])
async def test_leave_is_an_ok_reply_then_phx_close_with_the_join_ref(
    stack: Devstack, raw: OpenRaw, vsn: str
) -> None:
    # channel/server.ex:323 handle_info(phx_leave) → {:stop, {:shutdown, :left}, :ok, ...}:
    # the reply to the leave's ref, then socket.ex:880-890 encode_close:
    # %Message{join_ref: join_ref, ref: join_ref, topic, event: "phx_close", payload: %{}}
    sock = await raw(stack, vsn=vsn)
    joined(await sock.join("room", PUBLIC, ref="4"))
    await sock.send("4", "5", "realtime:room", "phx_leave", {})
    reply, close = await sock.recv_raw(), await sock.recv_raw()
    if vsn == V1:
        assert reply == (
            '{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"5",'
            '"topic":"realtime:room"}'
        )
        assert close == '{"event":"phx_close","payload":{},"ref":"4","topic":"realtime:room"}'
    else:
        assert reply == '["4","5","realtime:room","phx_reply",{"response":{},"status":"ok"}]'
        assert close == '["4","4","realtime:room","phx_close",{}]'


@pytest.mark.parametrize("vsn", [V1, V2])
async def test_a_push_to_a_topic_never_joined_is_an_unmatched_topic_error(
    stack: Devstack, raw: OpenRaw, vsn: str
) -> None:
    # phoenix socket.ex:837-841 handle_in(nil, message) → :870-873 encode_ignore:
    # %Reply{ref, topic, status: :error, payload: %{reason: "unmatched topic"}} (no join_ref)
    sock = await raw(stack, vsn=vsn)
    await sock.send("7", "8", "realtime:nowhere", "broadcast", {"event": "x", "payload": {}})
    text = await sock.recv_raw()
    if vsn == V1:
        assert text == (
            '{"event":"phx_reply","payload":{"response":{"reason":"unmatched topic"},'
            '"status":"error"},"ref":"8","topic":"realtime:nowhere"}'
        )
    else:
        assert text == (
            '[null,"8","realtime:nowhere","phx_reply",'
            '{"response":{"reason":"unmatched topic"},"status":"error"}]'
        )
    # a leave of a topic never joined is still acknowledged (socket.ex:820-835)
    await sock.send("9", "10", "realtime:nowhere", "phx_leave", {})
    reply = await sock.recv()
    status = reply["payload"]["status"] if vsn == V1 else reply[4]["status"]
    assert status == "ok"


async def test_a_duplicate_join_closes_the_old_channel_before_joining_again(
    stack: Devstack, raw: OpenRaw
) -> None:
    # phoenix socket.ex:771-788: shutdown_duplicate_channel, push phx_close for the old
    # join_ref, then handle the new join.
    sock = await raw(stack, vsn=V2)
    joined(await sock.join("dup", PUBLIC, ref="1"))
    await sock.send("2", "2", "realtime:dup", "phx_join", PUBLIC)
    assert await sock.recv() == ["1", "1", "realtime:dup", "phx_close", {}]
    assert (await sock.recv())[:2] == ["2", "2"]


# ---- broadcast ------------------------------------------------------------------------------


async def test_json_broadcast_is_forwarded_verbatim_to_v1_and_v2_with_an_ack_reply(
    stack: Devstack, raw: OpenRaw
) -> None:
    # broadcast_handler.ex:90-118 (public) + :157-159 build_broadcast →
    # %Phoenix.Socket.Broadcast{event: "broadcast", payload: <the pushed payload>};
    # message_dispatcher.ex:87-116 → v1_json_serializer.ex:8-11 / v2_serializer.ex:63-66
    # [nil, nil, topic, event, payload]; ack: broadcast_handler.ex:112-113 {:reply, :ok, ...}.
    topic = "realtime:bcast"
    sender = await raw(stack, vsn=V2)
    v1 = await raw(stack, vsn=V1)
    v2 = await raw(stack, vsn=V2)
    config = {"config": {"broadcast": {"ack": True, "self": False}, "private": False}}
    joined(await sender.join("bcast", config, ref="1"))
    joined(await v1.join("bcast", PUBLIC, ref="1"))
    joined(await v2.join("bcast", PUBLIC, ref="1"))
    body = {"type": "broadcast", "event": "typing", "payload": {"who": "ada", "n": 1}, "x": 1}
    await sender.send("1", "2", topic, "broadcast", body)
    assert await sender.recv() == ["1", "2", topic, "phx_reply", {"response": {}, "status": "ok"}]
    assert await v1.recv() == {"event": "broadcast", "payload": body, "ref": None, "topic": topic}
    assert await v2.recv() == [None, None, topic, "broadcast", body]


async def test_binary_user_broadcast_reaches_v2_as_kind_4_and_v1_as_json(
    stack: Devstack, raw: OpenRaw
) -> None:
    # v2_serializer.ex:190-223 decodes kind 3 into {user_event, encoding, payload, metadata};
    # broadcast_handler.ex:148-155 builds a UserBroadcast without metadata;
    # v2_serializer.ex:19-45 fastlane! kind 4 | len(topic) | len(event) | len(meta) | enc;
    # message_dispatcher.ex:163-168 + user_broadcast.ex:21-36 convert V1 to
    # {"event", "payload", "type": "broadcast"} (no "meta" without metadata).
    topic = "realtime:bin"
    sender = await raw(stack, vsn=V2)
    v1 = await raw(stack, vsn=V1)
    v2 = await raw(stack, vsn=V2)
    config = {"config": {"broadcast": {"self": True}, "private": False}}
    joined(await sender.join("bin", config, ref="6"))
    joined(await v1.join("bin", PUBLIC, ref="1"))
    joined(await v2.join("bin", PUBLIC, ref="1"))
    await sender.send_raw(kind3("6", "7", topic, "typing", b'{"who":"ada"}'))
    own = await sender.recv()  # self: true
    assert own == bytes([4, len(topic), 6, 0, 1]) + topic.encode() + b'typing{"who":"ada"}'
    assert parse_kind4(await v2.recv()) == {
        "topic": topic,
        "event": "typing",
        "meta": None,
        "encoding": 1,
        "payload": {"who": "ada"},
    }
    assert await v1.recv_raw() == (
        '{"event":"broadcast","payload":{"event":"typing","payload":{"who":"ada"},'
        '"type":"broadcast"},"ref":null,"topic":"realtime:bin"}'
    )


async def test_an_oversized_broadcast_with_ack_gets_payload_size_exceeded(
    stack_with: Callable[..., Awaitable[Devstack]], raw: OpenRaw
) -> None:
    # broadcast_handler.ex:102-110 Tenants.validate_payload_size → {:reply, {:error,
    # :payload_size_exceeded}, socket}; phoenix channel/server.ex:527-536 handle_reply passes
    # the atom through as the response, which Jason writes as a string.
    stack = await stack_with(max_payload_bytes=1_000)
    sock = await raw(stack, vsn=V2)
    config = {"config": {"broadcast": {"ack": True, "self": True}, "private": False}}
    joined(await sock.join("big", config, ref="1"))
    await sock.send(
        "1", "2", "realtime:big", "broadcast", {"event": "e", "payload": {"a": "x" * 2000}}
    )
    assert await sock.recv_raw() == (
        '["1","2","realtime:big","phx_reply",{"response":"payload_size_exceeded","status":"error"}]'
    )


# ---- presence -------------------------------------------------------------------------------


async def test_presence_state_after_join_is_grouped_metas_and_empty_object_when_nobody(
    stack: Devstack, raw: OpenRaw
) -> None:
    # realtime_channel.ex:158 send(self(), :sync_presence) → :433-441 → presence_handler.ex:
    # 31-40 push(socket, "presence_state", Phoenix.Presence.group(...)): a channel push, so
    # V2 carries the join_ref and a null ref.
    presence = {"config": {"presence": {"key": "op-1", "enabled": True}, "private": False}}
    first = await raw(stack, vsn=V2)
    joined(await first.join("lobby", presence, ref="1"))
    assert await first.recv() == ["1", None, "realtime:lobby", "presence_state", {}]
    await first.send(
        "1",
        "2",
        "realtime:lobby",
        "presence",
        {"type": "presence", "event": "track", "payload": {"online_at": "now"}},
    )
    assert (await first.recv())[3:] == ["phx_reply", {"response": {}, "status": "ok"}]
    second = await raw(stack, vsn=V1)
    joined(
        await second.join(
            "lobby",
            {
                **presence,
                "config": {**presence["config"], "presence": {"key": "op-2", "enabled": True}},
            },
        )
    )
    assert await second.recv() == {
        "event": "presence_state",
        "payload": {"op-1": {"metas": [{"online_at": "now", "phx_ref": ANY_STR}]}},
        "ref": None,
        "topic": "realtime:lobby",
    }


async def test_presence_diff_goes_to_every_subscriber_including_the_tracker(
    stack: Devstack, raw: OpenRaw
) -> None:
    # Phoenix.Tracker broadcasts %Broadcast{event: "presence_diff"} from the tracker, so
    # message_dispatcher.ex:46-85 fastlanes it to all members (the tracking channel too) as
    # [nil, nil, topic, "presence_diff", %{joins, leaves}]; an update is a join with
    # phx_ref_prev plus a leave of the old meta; untrack is a leave.
    presence = {"config": {"presence": {"key": "op-1", "enabled": True}, "private": False}}
    tracker = await raw(stack, vsn=V2)
    watcher = await raw(stack, vsn=V1)
    joined(await tracker.join("floor", presence, ref="1"))
    await tracker.recv()  # presence_state
    joined(await watcher.join("floor", PUBLIC))
    track = {"type": "presence", "event": "track", "payload": {"status": "available"}}
    await tracker.send("1", "2", "realtime:floor", "presence", track)
    reply, _ = await tracker.recv_until(lambda f: f[3] == "phx_reply")
    assert reply[4] == {"response": {}, "status": "ok"}
    diff, _ = await tracker.recv_until(lambda f: f[3] == "presence_diff")
    meta = {"status": "available", "phx_ref": ANY_STR}
    assert diff == [
        None,
        None,
        "realtime:floor",
        "presence_diff",
        {"joins": {"op-1": {"metas": [meta]}}, "leaves": {}},
    ]
    assert await watcher.recv() == {
        "event": "presence_diff",
        "payload": {"joins": {"op-1": {"metas": [meta]}}, "leaves": {}},
        "ref": None,
        "topic": "realtime:floor",
    }
    first_ref = diff[4]["joins"]["op-1"]["metas"][0]["phx_ref"]
    update = {"type": "presence", "event": "track", "payload": {"status": "busy"}}
    await tracker.send("1", "3", "realtime:floor", "presence", update)
    updated = (await watcher.recv())["payload"]
    assert updated == {
        "joins": {
            "op-1": {"metas": [{"status": "busy", "phx_ref": ANY_STR, "phx_ref_prev": first_ref}]}
        },
        "leaves": {"op-1": {"metas": [{"status": "available", "phx_ref": first_ref}]}},
    }
    await tracker.send("1", "4", "realtime:floor", "presence", {"event": "untrack"})
    left = (await watcher.recv())["payload"]
    assert left["joins"] == {}
    assert left["leaves"]["op-1"]["metas"][0]["status"] == "busy"


# ---- database broadcast ---------------------------------------------------------------------


async def test_database_broadcast_is_a_user_broadcast_with_the_row_id_as_metadata(
    stack: Devstack, raw: OpenRaw
) -> None:
    # replication_connection.ex:406-440 handle_message(Insert): %UserBroadcast{user_event:
    # event, user_payload: <payload JSON>, user_payload_encoding: :json, metadata: %{"id" =>
    # id}}; V2: v2_serializer.ex:19-45 (kind 4, metadata {"id": ...}); V1:
    # user_broadcast.ex:21-36 {"event", "meta", "payload", "type": "broadcast"}.
    topic = f"room-{uuid.uuid4()}"
    v1 = await raw(stack, vsn=V1)
    v2 = await raw(stack, vsn=V2)
    joined(await v1.join(topic, PUBLIC))
    joined(await v2.join(topic, PUBLIC))
    await db_send(stack.db_url, topic, "message", {"content": "hello"}, private_=False)
    v1_frame = await v1.recv()
    assert v1_frame == {
        "event": "broadcast",
        "payload": {
            "event": "message",
            "meta": {"id": UUID},
            "payload": {"content": "hello", "id": UUID},  # realtime.send adds "id"
            "type": "broadcast",
        },
        "ref": None,
        "topic": "realtime:" + topic,
    }
    binary = await v2.recv()
    assert isinstance(binary, bytes)
    assert parse_kind4(binary) == {
        "topic": "realtime:" + topic,
        "event": "message",
        "meta": {"id": v1_frame["payload"]["meta"]["id"]},
        "encoding": 1,
        "payload": v1_frame["payload"]["payload"],
    }


# ---- system messages ------------------------------------------------------------------------


async def test_an_expired_access_token_gives_a_system_error_then_phx_close(
    stack: Devstack, raw: OpenRaw
) -> None:
    # realtime_channel.ex:538-579 handle_in("access_token") → confirm_token fails →
    # :834-839 shutdown_response → :855-863 push "system" %{extension: "system", status:
    # "error", message, channel: <sub-topic>}, then the channel stops → phx_close.
    topic = f"case:{uuid.uuid4()}"
    sock = await raw(stack, vsn=V2)
    token = stack.keys.user_token(operator=True)
    joined(await sock.join(topic, private(), ref="1", access_token=token))
    expired = stack.keys.user_token(operator=True, ttl_s=-5)
    await sock.send("1", "2", "realtime:" + topic, "access_token", {"access_token": expired})
    system = await sock.recv()
    assert system == [
        "1",
        None,
        "realtime:" + topic,
        "system",
        {
            "channel": topic,
            "extension": "system",
            "message": ANY_STR,
            "status": "error",
        },
    ]
    assert re.fullmatch(r"Token has expired [5-9] seconds ago", system[4]["message"])
    assert await sock.recv() == ["1", "1", "realtime:" + topic, "phx_close", {}]


# ---- handshake ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("apikey", "message"),
    [
        ("", "API key is missing"),
        ("not.a.jwt", "The token provided is not a valid JWT"),
        ("wrong-secret", "Failed to validate JWT signature"),
        ("expired", "Token has expired"),
    ],
)
async def test_a_refused_handshake_is_http_401_with_supabases_error_json(
    stack: Devstack, apikey: str, message: str
) -> None:
    # user_socket.ex:141-171 handle_error/error_response: {status, %{error: message}}
    if apikey == "wrong-secret":
        from hitl_devstack.keys import make_keys

        apikey = make_keys("another-secret-entirely-0123456789").anon_key
    elif apikey == "expired":
        apikey = stack.keys.user_token(ttl_s=-1)
    url = stack.url.replace("http://", "ws://") + f"/realtime/v1/websocket?apikey={apikey}"
    headers = {}
    if not apikey:
        # the gateway refuses a request with no key at all (test_rest_gateway.py); with the key
        # only in an `apikey` header it passes key-auth, and Realtime, which reads x-api-key or
        # the apikey parameter (user_socket.ex access_token/2), finds none
        url = url.replace("?apikey=", "?")
        headers = {"apikey": stack.keys.anon_key}
    with pytest.raises(InvalidStatus) as refused:
        await connect(url + "&vsn=1.0.0", open_timeout=5, additional_headers=headers)
    response = refused.value.response
    assert response.status_code == 401
    assert json.loads(response.body) == {"error": message}


async def test_an_unsupported_vsn_is_refused_with_403(stack: Devstack) -> None:
    # phoenix socket.ex __connect__ → negotiate_serializer :error; transports/websocket.ex:85-86
    url = stack.url.replace("http://", "ws://")
    url += f"/realtime/v1/websocket?apikey={stack.keys.anon_key}&vsn=3.0.0"
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, open_timeout=5)
    assert refused.value.response.status_code == 403


async def test_the_x_api_key_header_authenticates_the_socket(stack: Devstack) -> None:
    # user_socket.ex:173-178 access_token/2: x-api-key header before the apikey param. The
    # gateway needs an apikey parameter (kong.yml key-auth); one Realtime would refuse alone
    # ("not a valid JWT") shows the header is the one used.
    url = (
        stack.url.replace("http://", "ws://") + "/realtime/v1/websocket?apikey=not.a.jwt&vsn=2.0.0"
    )
    async with connect(url, additional_headers={"x-api-key": stack.keys.anon_key}) as ws:
        await ws.send(json.dumps([None, "1", "phoenix", "heartbeat", {}]))
        assert event_of(json.loads(await ws.recv())) == "phx_reply"
