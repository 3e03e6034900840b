"""realtime-py's internals the relay relies on (hitl_relay/adapters/realtime_internals.py), checked
against the installed realtime-py: each name exists and behaves as the shim assumes. No socket is
opened: a client that is never connected, and one told it is (its connection attribute set)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from realtime import AsyncRealtimeChannel, AsyncRealtimeClient
from realtime.message import BroadcastMessage, ServerMessageAdapter
from realtime.types import ChannelStates

from hitl_relay.adapters import realtime_internals

URL = "ws://127.0.0.1:9/realtime/v1"  # never dialled


def client_and_channel() -> tuple[AsyncRealtimeClient, AsyncRealtimeChannel]:
    client = AsyncRealtimeClient(URL, token="service-role", auto_reconnect=False)
    return client, client.channel("case:internals")


def test_the_installed_realtime_py_is_the_release_the_shim_was_read_from() -> None:
    # Another release may have moved what the shim reads: re-read realtime/_async/*.py, adjust
    # realtime_internals.py and this file, then update READ_FROM_REALTIME.
    installed = importlib.metadata.version("realtime")
    assert installed == realtime_internals.READ_FROM_REALTIME


async def test_a_new_client_has_no_listener_and_no_websocket_and_is_not_connected() -> None:
    client, _ = client_and_channel()
    assert realtime_internals.listener_task(client) is None
    assert realtime_internals.websocket(client) is None
    assert not client.is_connected


async def test_connected_means_a_websocket_is_held() -> None:
    # The pool pings and aborts the connection `websocket()` returns while `is_connected`.
    client, _ = client_and_channel()
    client._ws_connection = object()  # type: ignore[assignment]
    assert client.is_connected
    assert realtime_internals.websocket(client) is client._ws_connection


def test_connect_starts_the_listener_task_the_pool_watches() -> None:
    source = inspect.getsource(AsyncRealtimeClient)
    assert "self._listen_task = asyncio.create_task(self._listen())" in source


async def test_rejoin_in_sends_the_join_again_after_the_delay_when_connected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, channel = client_and_channel()
    client._ws_connection = object()  # type: ignore[assignment]
    sent = asyncio.Event()

    async def rejoin() -> None:
        sent.set()

    monkeypatch.setattr(channel, "_rejoin", rejoin)
    realtime_internals.rejoin_in(channel, 0.0)
    async with asyncio.timeout(5):
        await sent.wait()


async def test_stop_timers_cancels_a_scheduled_rejoin(monkeypatch: pytest.MonkeyPatch) -> None:
    client, channel = client_and_channel()
    client._ws_connection = object()  # type: ignore[assignment]
    rejoined: list[bool] = []

    async def rejoin() -> None:
        rejoined.append(True)

    monkeypatch.setattr(channel, "_rejoin", rejoin)
    realtime_internals.rejoin_in(channel, 0.05)
    timer = channel.rejoin_timer.timer
    assert timer is not None
    realtime_internals.stop_timers(channel)
    await asyncio.wait({timer}, timeout=5)
    assert timer.done()
    assert rejoined == []  # cancelled before its delay ran out
    assert channel.rejoin_timer.timer is None
    assert channel.join_push.timeout_task is None


async def test_every_join_goes_to_the_scheduler_which_can_send_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, channel = client_and_channel()
    scheduled: list[Callable[[], Awaitable[None]]] = []
    realtime_internals.send_joins_through(channel, scheduled.append)

    await channel._rejoin()  # what subscribe(), the timer and a reconnect call
    assert len(scheduled) == 1
    assert channel.state == ChannelStates.CLOSED  # nothing sent yet

    resent: list[tuple[object, ...]] = []

    async def resend(*args: object) -> None:
        resent.append(args)

    monkeypatch.setattr(channel.join_push, "resend", resend)
    await scheduled[0]()  # realtime-py's own join: the channel is joining, its join re-sent
    assert channel.state == ChannelStates.JOINING
    assert len(resent) == 1


def test_realtime_py_sends_every_join_through_the_method_the_shim_replaces() -> None:
    # These are the three places the installed realtime-py sends a join from; if one stops
    # going through _rejoin, joins would go out unpaced.
    assert inspect.iscoroutinefunction(AsyncRealtimeChannel._rejoin)
    assert "await self._rejoin()" in inspect.getsource(AsyncRealtimeChannel.subscribe)
    assert "await self._rejoin()" in inspect.getsource(AsyncRealtimeChannel._rejoin_if_connected)
    assert "channel._rejoin()" in inspect.getsource(AsyncRealtimeClient._rejoin_errored_channels)


def test_connect_sets_the_connection_before_on_connect_starts_the_reader() -> None:
    # StampedRealtimeClient wraps `_ws_connection` in `_on_connect`: the connection must be set
    # by then, and the reader started there, or frames would be read unstamped.
    connect = inspect.getsource(AsyncRealtimeClient.connect)
    assert connect.index("self._ws_connection = ws") < connect.index("await self._on_connect()")
    on_connect = inspect.getsource(AsyncRealtimeClient._on_connect)
    assert "asyncio.create_task(self._listen())" in on_connect


async def test_on_connect_wraps_the_connection_once_and_reads_frames_through_it() -> None:
    class Frames:
        def __init__(self) -> None:
            self.closed = False

        async def __aiter__(self):  # type: ignore[no-untyped-def]
            for frame in ("a", "b"):
                yield frame

    client = realtime_internals.StampedRealtimeClient(URL, token="t", auto_reconnect=False)
    raw = Frames()
    client._ws_connection = raw  # type: ignore[assignment]

    async def no_reader() -> None:  # the reader and heartbeat tasks are realtime-py's
        return None

    client._listen = no_reader  # type: ignore[method-assign]
    client._heartbeat = no_reader  # type: ignore[method-assign]
    await client._on_connect()
    await client._on_connect()  # a second call does not wrap the wrapper
    assert realtime_internals.stamped_connection(client)
    wrapped = client._ws_connection
    assert wrapped._ws is raw  # type: ignore[union-attr]
    assert wrapped.closed is False  # everything else is the connection's own
    assert [f async for f in wrapped] == ["a", "b"]  # type: ignore[union-attr]


# A `message` broadcast as Supabase Realtime sends it for `realtime.send` (the payload abridged).
ANSWER_FRAME = json.dumps(
    {
        "event": "broadcast",
        "topic": "realtime:case:internals",
        "payload": {
            "event": "message",
            "type": "broadcast",
            "meta": {"id": "5f0c2c4e-5b8a-4a53-9a55-6a8d1f0b9a11"},
            "payload": {"case_id": "c1", "content": "Yes", "is_answer": True, "sig": "ab"},
        },
        "ref": None,
    }
)


def realtime_py_reads(frame: object) -> tuple[str, dict[str, Any]] | None:
    """What realtime-py's reader makes of `frame`: the topic and payload of a broadcast."""
    try:
        message = ServerMessageAdapter.validate_json(frame)  # type: ignore[arg-type]
    except ValidationError:
        return None
    if not isinstance(message, BroadcastMessage):
        return None
    return message.topic, dict(message.payload)


def frame_with(**changes: object) -> str:
    message = json.loads(ANSWER_FRAME)
    payload_changes = changes.pop("payload_changes", {})
    message.update(changes)
    assert isinstance(payload_changes, dict)
    for key, value in payload_changes.items():
        if value is DROP:
            del message["payload"][key]
        else:
            message["payload"][key] = value
    for key in [k for k, v in message.items() if v is DROP]:
        del message[key]
    return json.dumps(message)


DROP = object()


@pytest.mark.parametrize(
    "frame",
    [
        ANSWER_FRAME,
        frame_with(payload_changes={"meta": DROP}),
        frame_with(payload_changes={"meta": {"id": "x", "replayed": True}}),
        frame_with(payload_changes={"event": "session", "extra": 1}),
        frame_with(payload_changes={"event": "MESSAGE"}),
    ],
)
def test_a_broadcast_frame_is_read_as_realtime_py_reads_it(frame: str) -> None:
    read = realtime_internals.broadcast_payload(frame)
    assert read is not None
    assert read == realtime_py_reads(frame)


@pytest.mark.parametrize(
    "frame",
    [
        frame_with(ref=DROP),  # realtime-py requires `ref`, null
        frame_with(ref="7"),
        frame_with(topic=5),
        frame_with(event="presence_diff"),
        frame_with(payload=[1]),
        frame_with(payload_changes={"payload": "text"}),
        frame_with(payload_changes={"event": 3}),
        frame_with(payload_changes={"meta": {"id": 5}}),  # lax pydantic may coerce: its call
        frame_with(payload_changes={"meta": {"replayed": "true"}}),
        frame_with(payload_changes={"meta": []}),
        ANSWER_FRAME.encode(),  # a binary frame
        '{"event": "broadcast", ',  # not JSON
        '["broadcast"]',
        '{"event":"phx_reply","topic":"t","payload":{"status":"ok","response":{}},"ref":"1"}',
    ],
)
def test_a_frame_that_is_not_plainly_a_broadcast_is_left_to_realtime_py(frame: object) -> None:
    assert realtime_internals.broadcast_payload(frame) is None


_json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
_json = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


_FIELDS = ("ref", "topic", "event", "inner", "meta", "meta.id", "meta.replayed")


@settings(max_examples=400, deadline=None)
@given(
    valid=st.fixed_dictionaries(
        {
            "ref": st.none(),
            "topic": st.sampled_from(["realtime:case:internals", "realtime:other"]),
            "event": st.sampled_from(["message", "session", "*"]),
            "inner": st.dictionaries(st.text(max_size=6), _json, max_size=3),
            "meta": st.booleans(),
            "meta.id": st.text(max_size=8),
            "meta.replayed": st.booleans(),
        }
    ),
    # Each field the frame gets wrong: absent, or any JSON value.
    wrong=st.dictionaries(st.sampled_from(_FIELDS), st.just(DROP) | _json, max_size=2),
    extra=st.dictionaries(st.sampled_from(["type", "x"]), _json, max_size=2),
)
def test_whatever_the_fast_read_takes_realtime_py_reads_the_same(
    valid: dict[str, Any], wrong: dict[str, Any], extra: dict[str, Any]
) -> None:
    v = {**valid, **wrong}
    meta = {"id": v["meta.id"], "replayed": v["meta.replayed"]} if v["meta"] is True else v["meta"]
    payload = {"event": v["event"], "payload": v["inner"], "meta": meta, **extra}
    if isinstance(meta, dict) or v["meta"] is False:
        payload["meta"] = {k: x for k, x in meta.items() if x is not DROP} if meta else DROP
    message = {"event": "broadcast", "topic": v["topic"], "payload": payload, "ref": v["ref"]}
    for where in (message, payload):
        for key in [k for k, x in where.items() if x is DROP]:
            del where[key]
    frame = json.dumps(message)
    read = realtime_internals.broadcast_payload(frame)
    if read is not None:
        assert read == realtime_py_reads(frame)
    elif not wrong:
        pytest.fail(f"a plain broadcast was left to realtime-py: {frame}")


def test_dispatch_calls_the_channels_broadcast_callbacks_as_realtime_py_does() -> None:
    def calls_of(deliver: Callable[[AsyncRealtimeClient], None]) -> list[tuple[str, Any]]:
        client, channel = client_and_channel()
        seen: list[tuple[str, Any]] = []
        channel.on_broadcast("message", lambda p: seen.append(("message", p)))
        channel.on_broadcast("session", lambda p: seen.append(("session", p)))
        channel.on_broadcast("*", lambda p: seen.append(("*", p)))
        deliver(client)
        return seen

    def by_realtime_py(client: AsyncRealtimeClient) -> None:
        client.channels["realtime:case:internals"]._handle_message(
            ServerMessageAdapter.validate_json(ANSWER_FRAME)
        )

    def by_dispatch(client: AsyncRealtimeClient) -> None:
        assert realtime_internals.dispatch_broadcast(client, ANSWER_FRAME)

    expected = calls_of(by_realtime_py)
    assert [name for name, _ in expected] == ["message", "*"]
    assert calls_of(by_dispatch) == expected
    # A broadcast on a topic this client has not joined is read and dropped, as realtime-py does.
    client, _ = client_and_channel()
    assert realtime_internals.dispatch_broadcast(client, frame_with(topic="realtime:case:other"))
    assert not realtime_internals.dispatch_broadcast(client, frame_with(ref="1"))


async def test_the_reader_dispatches_broadcasts_and_yields_every_other_frame() -> None:
    class Frames:
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            for frame in ("a", ANSWER_FRAME, "b"):
                yield frame

    client = realtime_internals.StampedRealtimeClient(URL, token="t", auto_reconnect=False)
    seen: list[str] = []
    channel = client.channel("case:internals")
    channel.on_broadcast("message", lambda p: seen.append(p["payload"]["content"]))
    client._ws_connection = Frames()  # type: ignore[assignment]

    async def no_reader() -> None:
        return None

    client._listen = no_reader  # type: ignore[method-assign]
    client._heartbeat = no_reader  # type: ignore[method-assign]
    await client._on_connect()
    yielded = [f async for f in client._ws_connection]  # type: ignore[union-attr]
    assert yielded == ["a", "b"]
    assert seen == ["Yes"]
