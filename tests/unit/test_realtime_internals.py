"""realtime-py's internals the relay relies on (hitl_relay/adapters/realtime_internals.py), checked
against the installed realtime-py: each name exists and behaves as the shim assumes. No socket is
opened: a client that is never connected, and one told it is (its connection attribute set)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
from collections.abc import Awaitable, Callable

import pytest
from realtime import AsyncRealtimeChannel, AsyncRealtimeClient
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
