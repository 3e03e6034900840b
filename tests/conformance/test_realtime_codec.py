"""The Realtime wire codecs and rate counter, without a server.

Binary layouts are realtime-js 2.119's (src/lib/serializer.ts) and the server's
(lib/realtime_web/socket/v2_serializer.ex); any bytes or text a client sends either decode or
raise ProtocolError (which closes only that socket), never anything else.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from realtime_support import kind3, parse_kind4

from hitl_devstack.realtime.changes import ParamsError, parse_params
from hitl_devstack.realtime.limits import RateCounter, RealtimeLimits
from hitl_devstack.realtime.serializer import (
    V1,
    V2,
    ProtocolError,
    UserBroadcast,
    UserBroadcastPush,
    negotiate,
)


def test_a_kind_3_push_decodes_to_a_user_broadcast_push_with_its_metadata() -> None:
    meta = b'{"persist":true}'
    frame = (
        bytes([3, 1, 1, 14, 6, len(meta), 1])
        + b"6"
        + b"7"
        + b"realtime:room1"
        + b"typing"
        + meta
        + b'{"a":1}'
    )
    msg = V2.decode(frame)
    assert (msg.join_ref, msg.ref, msg.topic, msg.event) == (
        "6",
        "7",
        "realtime:room1",
        "broadcast",
    )
    assert msg.payload == UserBroadcastPush("typing", True, b'{"a":1}', {"persist": True})


def test_a_kind_4_frame_is_what_realtime_js_decodes() -> None:
    ub = UserBroadcast("realtime:case:1", "message", b'{"x":1}', True, {"id": "abc"})
    assert parse_kind4(V2.user_broadcast(ub)) == {
        "topic": "realtime:case:1",
        "event": "message",
        "meta": {"id": "abc"},
        "encoding": 1,
        "payload": {"x": 1},
    }
    with pytest.raises(ValueError, match="at most 255 bytes"):
        V2.user_broadcast(UserBroadcast("realtime:" + "t" * 300, "e", b"{}", True))


def test_v1_cannot_carry_a_binary_user_payload_and_writes_json_ones_as_a_broadcast() -> None:
    assert V1.user_broadcast(UserBroadcast("realtime:t", "e", b"\x00\x01", False)) is None
    text = V1.user_broadcast(UserBroadcast("realtime:t", "e", b'{"k":"v"}', True, {"id": "1"}))
    assert json.loads(str(text)) == {
        "event": "broadcast",
        "payload": {"event": "e", "meta": {"id": "1"}, "payload": {"k": "v"}, "type": "broadcast"},
        "ref": None,
        "topic": "realtime:t",
    }


def test_numeric_refs_are_read_as_strings_and_other_types_are_refused() -> None:
    msg = V2.decode('[1, 2, "realtime:t", "phx_join", {}]')
    assert (msg.join_ref, msg.ref) == ("1", "2")
    with pytest.raises(ProtocolError, match="refs must be strings"):
        V2.decode('[{"a":1}, "2", "realtime:t", "phx_join", {}]')


@pytest.mark.parametrize(
    ("vsn", "codec"),
    [(None, V1), ("1.0.0", V1), ("2.0.0", V2), ("2.0.3", V2), ("2.1.0", None), ("3", None)],
)
def test_the_serializer_is_negotiated_like_phoenix(vsn: str | None, codec: object) -> None:
    assert negotiate(vsn) is codec


@given(st.binary(max_size=64))
def test_any_binary_frame_decodes_or_is_a_protocol_error(data: bytes) -> None:
    try:
        msg = V2.decode(data)
    except ProtocolError:
        return
    assert isinstance(msg.payload, UserBroadcastPush)


@given(st.text(max_size=64))
def test_any_text_frame_decodes_or_is_a_protocol_error(data: str) -> None:
    for codec in (V1, V2):
        try:
            msg = codec.decode(data)
        except ProtocolError:
            continue
        assert isinstance(msg.topic, str)
        assert isinstance(msg.event, str)


@given(
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=5)), min_size=5, max_size=6),
    st.one_of(st.none(), st.integers(), st.text(max_size=5), st.dictionaries(st.text(), st.text())),
)
def test_any_json_array_decodes_or_is_a_protocol_error(head: list[object], payload: object) -> None:
    try:
        msg = V2.decode(json.dumps([*head[:4], payload]))
    except ProtocolError:
        return
    assert msg.payload == payload
    assert msg.join_ref is None or isinstance(msg.join_ref, str)


def test_kind3_helper_matches_the_decoder() -> None:
    msg = V2.decode(kind3("1", "2", "realtime:x", "e", b"{}"))
    assert msg.payload == UserBroadcastPush("e", True, b"{}", {})


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_counter_lets_a_first_tick_burst_through_then_refuses_until_it_cools() -> None:
    clock = FakeClock()
    counter = RateCounter(limit=10, tick_s=5, buckets=12, clock=clock)
    counter.add(200)  # a burst inside the first tick: nothing is refused yet
    assert not counter.triggered
    clock.now += 5  # the tick ends: 200 events / 1 bucket / 5 s = 40 per second
    assert counter.triggered
    assert counter.current_avg() == 40
    clock.now += 5 * 3  # three quiet ticks: (200 + 0 + 0 + 0) / 4 / 5 = 10 per second
    assert counter.triggered  # still at the limit
    clock.now += 5
    assert counter.current_avg() == 8
    assert not counter.triggered


def test_limits_come_from_hitl_realtime_environment_variables() -> None:
    limits = RealtimeLimits.from_env(
        {"HITL_REALTIME_MAX_JOINS_PER_SECOND": "100", "HITL_REALTIME_IDLE_TIMEOUT_S": "2.5"}
    )
    assert (limits.max_joins_per_second, limits.idle_timeout_s) == (100, 2.5)
    with pytest.raises(ValueError, match="HITL_REALTIME_MAX_CHANNELS_PER_CLIENT: must be a"):
        RealtimeLimits.from_env({"HITL_REALTIME_MAX_CHANNELS_PER_CLIENT": "lots"})
    with pytest.raises(ValueError, match="greater than 0"):
        RealtimeLimits.from_env({"HITL_REALTIME_RATE_TICK_S": "0"})


def test_hitl_devstack_limits_picks_a_hosted_plan_and_local_stays_the_default() -> None:
    # supabase/supabase apps/docs/content/guides/realtime/limits.mdx, "Limits by plan"
    def plan(env: dict[str, str]) -> tuple[int, ...]:
        lim = RealtimeLimits.from_env(env)
        return (
            lim.max_concurrent_users,
            lim.max_events_per_second,
            lim.max_joins_per_second,
            lim.max_channels_per_client,
            lim.max_presence_events_per_second,
            lim.max_payload_bytes,
        )

    assert plan({"HITL_DEVSTACK_LIMITS": "free"}) == (200, 100, 100, 100, 20, 256_500)
    assert plan({"HITL_DEVSTACK_LIMITS": "pro"}) == (500, 500, 500, 100, 50, 3_000_500)
    assert plan({}) == plan({"HITL_DEVSTACK_LIMITS": "local"})
    assert plan({})[2] == 2500
    # a HITL_REALTIME_* setting still applies on top of the profile
    over = RealtimeLimits.from_env(
        {"HITL_DEVSTACK_LIMITS": "Free", "HITL_REALTIME_MAX_JOINS_PER_SECOND": "7"}
    )
    assert (over.max_joins_per_second, over.max_events_per_second) == (7, 100)
    with pytest.raises(ValueError, match=r"HITL_DEVSTACK_LIMITS: must be one of free, pro, local"):
        RealtimeLimits.from_env({"HITL_DEVSTACK_LIMITS": "team"})


# supabase/realtime lib/extensions/postgres_cdc_rls/subscriptions.ex, the doctests of
# parse_subscription_params/1 (Elixir tuples as Python tuples)
PARSE_EXAMPLES: list[tuple[dict[str, Any], Any]] = [
    (
        {"schema": "public", "table": "messages", "filter": "subject=eq.hey"},
        ("*", "public", "messages", (("subject", "eq", "hey", False),), None),
    ),
    (
        {"schema": "public", "table": "messages", "filter": "subject=in.(hidee,ho)"},
        ("*", "public", "messages", (("subject", "in", "{hidee,ho}", False),), None),
    ),
    (
        {"schema": "public", "table": "messages", "filter": "subject=not.like.hey%"},
        ("*", "public", "messages", (("subject", "like", "hey%", True),), None),
    ),
    (
        {"schema": "public", "table": "messages", "filter": "id=gt.0,id=lt.100"},
        ("*", "public", "messages", (("id", "gt", "0", False), ("id", "lt", "100", False)), None),
    ),
    (
        {"schema": "public", "table": "messages", "filter": "   "},
        ("*", "public", "messages", (), None),
    ),
    ({"schema": "public", "table": "messages"}, ("*", "public", "messages", (), None)),
    ({"schema": "public"}, ("*", "public", "*", (), None)),
    ({"table": "messages"}, ("*", "public", "messages", (), None)),
    ({"event": "update", "table": "messages"}, ("UPDATE", "public", "messages", (), None)),
    (
        {"schema": "public", "table": "messages", "filter": "subject=foo.hey"},
        'Error parsing `filter` params: ["foo", "hey"]',
    ),
    (
        {"schema": "public", "table": "messages", "filter": "undefined"},
        'Error parsing `filter` params: ["undefined"]',
    ),
    (
        {},
        "No subscription params provided. Please provide at least a `schema` or `table` to "
        "subscribe to: %{}",
    ),
]


@pytest.mark.parametrize(("params", "expected"), PARSE_EXAMPLES)
def test_postgres_changes_params_parse_as_realtime_parses_them(
    params: dict[str, Any], expected: Any
) -> None:
    if isinstance(expected, str):
        with pytest.raises(ParamsError) as e:
            parse_params(params)
        assert str(e.value) == expected
    else:
        p = parse_params(params)
        assert (p.action, p.schema, p.table, p.filters, p.select) == expected
